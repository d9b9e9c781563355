package client

import (
	"context"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// MaxDataRequest bounds the data of one Read or Write request sent by
// ReadAt and WriteAt, so that one raft log entry stays small.
const MaxDataRequest = 1 << 20

// WriteAt writes data at off into ino for the open file fh, in requests of
// at most MaxDataRequest bytes, each applied exactly once. It returns how
// many bytes were written and the attributes after the last request that
// succeeded. A file-system error of a request ends the write and comes back
// as a syscall.Errno (see Errno); n counts the bytes of the requests before
// it. data is not kept after WriteAt returns.
func (c *Client) WriteAt(ctx context.Context, ino, fh uint64, off int64, data []byte) (n int, attr *jfspb.Attr, err error) {
	return c.WriteAtAs(ctx, 0, ino, fh, off, data)
}

// WriteAtAs is WriteAt under session, the session the file was opened
// under (0: the current one). A write buffered by a mount is sent after
// the write(2) returned, perhaps after the cluster ended that session and
// the client registered a new one: sent under the new session it would
// slip past the fencing of the old one, so it names its own, and the
// cluster answers ESTALE.
func (c *Client) WriteAtAs(ctx context.Context, session, ino, fh uint64, off int64, data []byte) (n int, attr *jfspb.Attr, err error) {
	for {
		chunk := data[n:min(len(data), n+MaxDataRequest)]
		req := &jfspb.WriteRequest{Ino: ino, Offset: off + int64(n), Data: chunk, Fh: fh}
		r, err := writeAs(ctx, c, session, c.cfg.AttemptTimeout, jfspb.MetaClient.Write, req,
			func(r *jfspb.WriteRequest, h *jfspb.Header) { r.Header = h })
		if err != nil {
			return n, attr, err
		}
		if err := Errno(r.Errno); err != nil {
			return n, attr, err
		}
		n += int(r.Written)
		attr = r.Attr
		if n >= len(data) || r.Written == 0 {
			return n, attr, nil
		}
	}
}

// Append writes data at the end of ino for the open file fh, as write(2)
// does on an O_APPEND descriptor, in one request applied exactly once: the
// cluster places it at the file's size when it applies it, so it lands
// whole and contiguous whatever other clients write or append meanwhile.
// It returns the offset the data went to and the attributes after it. An
// append is atomic only as one request, so data longer than
// MaxDataRequest is refused with EFBIG rather than split. A file-system
// error comes back as a syscall.Errno (see Errno).
func (c *Client) Append(ctx context.Context, ino, fh uint64, data []byte) (off int64, attr *jfspb.Attr, err error) {
	if len(data) > MaxDataRequest {
		return 0, nil, syscall.EFBIG
	}
	r, err := c.Write(ctx, &jfspb.WriteRequest{Ino: ino, Data: data, Fh: fh, Append: true})
	if err != nil {
		return 0, nil, err
	}
	if err := Errno(r.Errno); err != nil {
		return 0, nil, err
	}
	return r.Offset, r.Attr, nil
}

// ReadAt reads up to size bytes of ino at off, in requests of at most
// MaxDataRequest bytes. The answer is shorter than size only at the end of
// the file; holes read as zeros. A file-system error comes back as a
// syscall.Errno, and the data read before it is dropped.
func (c *Client) ReadAt(ctx context.Context, ino uint64, off int64, size int) ([]byte, error) {
	data, _, err := c.ReadAtAttr(ctx, ino, off, size)
	return data, err
}

// ReadAtAttr is ReadAt that also returns the file's attributes as of the
// first request it sent (nil from a server that does not send them).
func (c *Client) ReadAtAttr(ctx context.Context, ino uint64, off int64, size int) ([]byte, *jfspb.Attr, error) {
	var out []byte
	var attr *jfspb.Attr
	for len(out) < size {
		want := min(size-len(out), MaxDataRequest)
		r, err := c.Read(ctx, &jfspb.ReadRequest{Ino: ino, Offset: off + int64(len(out)), Size: uint32(want)})
		if err != nil {
			return nil, nil, err
		}
		if err := Errno(r.Errno); err != nil {
			return nil, nil, err
		}
		if attr == nil {
			attr = r.Attr
		}
		if out == nil && len(r.Data) >= size {
			return r.Data, attr, nil // the common case: one request
		}
		out = append(out, r.Data...)
		if len(r.Data) < want {
			break // end of file
		}
	}
	if out == nil {
		out = []byte{}
	}
	return out, attr, nil
}
