package fsm

import (
	"encoding/binary"
	"math"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// maxFileSize is the largest file size, as on Linux.
const maxFileSize = math.MaxInt64

// File data is stored in blocks of opts.BlockSize bytes keyed by (ino, block
// number). A stored block may be shorter than a block: the bytes past its
// end, up to the file size, read as zeros, as do missing blocks (holes).
// No block holds data at or past the file size: truncating down trims the
// tail block and deletes the blocks past it.

// block returns a copy of block blk of ino, or nil.
func (t *txn) block(ino, blk uint64) []byte { return t.get(bucketBlock, key2(ino, blk)) }

// putBlock stores block blk of ino (replacing old) and accounts the space.
func (t *txn) putBlock(ino uint64, n *inode, blk uint64, old, data []byte) {
	t.put(bucketBlock, key2(ino, blk), data)
	t.account(n, int64(len(data))-int64(len(old)))
}

func (t *txn) account(n *inode, delta int64) {
	n.Space = uint64(int64(n.Space) + delta)
	t.metaAdd(metaUsedBytes, delta)
}

// truncate sets the size of regular file ino (record n, stored by the
// caller) to size, dropping the data past it, and stamps mtime and ctime.
func (t *txn) truncate(ino uint64, n *inode, size uint64) {
	if size < n.Size {
		t.truncateBlocks(ino, n, size)
	}
	n.Size = size
	n.Mtime, n.Ctime = t.now, t.now
}

// truncateBlocks deletes the blocks of ino past size and trims the block
// that holds size to it.
func (t *txn) truncateBlocks(ino uint64, n *inode, size uint64) {
	bs := uint64(t.f.opts.BlockSize)
	first := (size + bs - 1) / bs // first block wholly past size
	var keys [][]byte
	var freed int64
	t.scanFrom(bucketBlock, u64(ino), key2(ino, first), func(k, v []byte) bool {
		keys = append(keys, k)
		freed += int64(len(v))
		return true
	})
	for _, k := range keys {
		t.del(bucketBlock, k)
	}
	t.account(n, -freed)
	if off := size % bs; off != 0 {
		blk := size / bs
		if old := t.block(ino, blk); uint64(len(old)) > off {
			t.putBlock(ino, n, blk, old, old[:off:off])
		}
	}
}

// applyWrite writes data at offset: ENOENT; EISDIR for a directory, EINVAL
// for another non-regular file or a negative offset; EFBIG for more than
// MaxWrite bytes or past the largest file size; ENOSPC past the capacity.
func (t *txn) applyWrite(req *jfspb.WriteRequest) *jfspb.WriteResponse {
	fail := func(e syscall.Errno) *jfspb.WriteResponse { return &jfspb.WriteResponse{Errno: eno(e)} }
	ino, off, data := req.GetIno(), req.GetOffset(), req.GetData()
	n := t.inode(ino)
	switch {
	case n == nil:
		return fail(syscall.ENOENT)
	case n.isDir():
		return fail(syscall.EISDIR)
	case !n.isReg(), off < 0:
		return fail(syscall.EINVAL)
	case len(data) > MaxWrite, uint64(off)+uint64(len(data)) > maxFileSize:
		return fail(syscall.EFBIG)
	}
	if len(data) == 0 {
		return &jfspb.WriteResponse{Attr: n.attr(ino)}
	}
	bs := uint64(t.f.opts.BlockSize)
	// A write stores at most its own length plus the zeros that fill a
	// block up to it.
	if t.metaGet(metaUsedBytes)+uint64(len(data))+bs > t.f.opts.Capacity {
		return fail(syscall.ENOSPC)
	}
	for pos := uint64(0); pos < uint64(len(data)); {
		at := uint64(off) + pos
		blk, bo := at/bs, at%bs
		cnt := min(bs-bo, uint64(len(data))-pos)
		old := t.block(ino, blk)
		buf := make([]byte, max(uint64(len(old)), bo+cnt))
		copy(buf, old)
		copy(buf[bo:], data[pos:pos+cnt])
		t.putBlock(ino, n, blk, old, buf)
		pos += cnt
	}
	n.Size = max(n.Size, uint64(off)+uint64(len(data)))
	n.Mtime, n.Ctime = t.now, t.now
	t.putInode(ino, n)
	return &jfspb.WriteResponse{Written: uint32(len(data)), Attr: n.attr(ino)}
}

// Read answers up to req.Size bytes (at most MaxRead) at req.Offset,
// stopping at the file size: ENOENT; EISDIR for a directory, EINVAL for
// another non-regular file or a negative offset.
func (f *FSM) Read(req *jfspb.ReadRequest) *jfspb.ReadResponse {
	return read(f, func(t *txn) *jfspb.ReadResponse {
		ino, off := req.GetIno(), req.GetOffset()
		n := t.inode(ino)
		switch {
		case n == nil:
			return &jfspb.ReadResponse{Errno: eno(syscall.ENOENT)}
		case n.isDir():
			return &jfspb.ReadResponse{Errno: eno(syscall.EISDIR)}
		case !n.isReg(), off < 0:
			return &jfspb.ReadResponse{Errno: eno(syscall.EINVAL)}
		}
		start := uint64(off)
		if start >= n.Size || req.GetSize() == 0 {
			return &jfspb.ReadResponse{Data: []byte{}}
		}
		end := min(n.Size, start+uint64(min(req.GetSize(), MaxRead)))
		buf := make([]byte, end-start)
		bs := uint64(t.f.opts.BlockSize)
		c := t.b(bucketBlock).Cursor()
		for k, v := c.Seek(key2(ino, start/bs)); len(k) == 16 && binary.BigEndian.Uint64(k) == ino; k, v = c.Next() {
			base := binary.BigEndian.Uint64(k[8:]) * bs
			if base >= end {
				break
			}
			// Copy the part of [base, base+len(v)) inside [start, end).
			lo, hi := max(base, start), min(base+uint64(len(v)), end)
			if lo < hi {
				copy(buf[lo-start:], v[lo-base:hi-base])
			}
		}
		return &jfspb.ReadResponse{Data: buf}
	})
}

// isOpen reports whether any session has ino open.
func (t *txn) isOpen(ino uint64) bool { return t.hasPrefix(bucketOpen, u64(ino)) }

func (t *txn) openCount(ino, session uint64) uint64 {
	v := t.b(bucketOpen).Get(key2(ino, session))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// openFile counts one more open of ino by the command's session; O_TRUNC
// truncates a regular file.
func (t *txn) openFile(ino uint64, n *inode, flags uint32) {
	if flags&syscall.O_TRUNC != 0 && n.isReg() && n.Size > 0 {
		t.truncate(ino, n, 0)
		t.putInode(ino, n)
	}
	c := t.openCount(ino, t.session)
	t.put(bucketOpen, key2(ino, t.session), u64(c+1))
	if c == 0 {
		t.put(bucketSessOpen, key2(t.session, ino), nil)
	}
}

// closeFile counts one open of ino by session less, and frees a sustained
// inode whose last open this was. It reports false if session had no open.
func (t *txn) closeFile(ino, session uint64) bool {
	c := t.openCount(ino, session)
	switch c {
	case 0:
		return false
	case 1:
		t.del(bucketOpen, key2(ino, session))
		t.del(bucketSessOpen, key2(session, ino))
	default:
		t.put(bucketOpen, key2(ino, session), u64(c-1))
		return true
	}
	if n := t.inode(ino); n != nil && n.Nlink == 0 && !t.isOpen(ino) {
		t.freeInode(ino, n)
	}
	return true
}

// applyOpen counts an open of ino by the session: ENOENT; EISDIR when a
// directory is opened for writing.
func (t *txn) applyOpen(req *jfspb.OpenRequest) *jfspb.OpenResponse {
	ino, flags := req.GetIno(), req.GetFlags()
	n := t.inode(ino)
	switch {
	case n == nil:
		return &jfspb.OpenResponse{Errno: eno(syscall.ENOENT)}
	case n.isDir() && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0:
		return &jfspb.OpenResponse{Errno: eno(syscall.EISDIR)}
	}
	t.openFile(ino, n, flags)
	return &jfspb.OpenResponse{Attr: n.attr(ino)}
}

// applyRelease ends an open of ino by the session, dropping the flock of
// (session, fh) when asked and the POSIX locks on ino of the listed owners
// (the open file's OFD locks): EBADF if the session does not have ino open,
// after the locks are dropped all the same.
func (t *txn) applyRelease(req *jfspb.ReleaseRequest) *jfspb.ReleaseResponse {
	ino := req.GetIno()
	if req.GetReleaseFlock() {
		t.dropFlock(ino, rangelock.Owner{Session: t.session, ID: req.GetFh()})
	}
	dropped := false
	for _, o := range req.GetLockOwners() {
		dropped = t.f.table.ReleasePosix(ino, rangelock.Owner{Session: t.session, ID: o}) || dropped
	}
	if dropped {
		t.savePlocks(ino)
	}
	if !t.closeFile(ino, t.session) {
		return &jfspb.ReleaseResponse{Errno: eno(syscall.EBADF)}
	}
	return &jfspb.ReleaseResponse{}
}

// MaxReleaseBatch bounds the releases of one ReleaseBatchRequest.
const MaxReleaseBatch = 1024

// applyReleaseBatch applies each release of the batch as applyRelease does,
// answering its errno in order: EINVAL for an empty or too large batch.
func (t *txn) applyReleaseBatch(req *jfspb.ReleaseBatchRequest) *jfspb.ReleaseBatchResponse {
	rs := req.GetReleases()
	if len(rs) == 0 || len(rs) > MaxReleaseBatch {
		return &jfspb.ReleaseBatchResponse{Errno: eno(syscall.EINVAL)}
	}
	out := &jfspb.ReleaseBatchResponse{Errnos: make([]int32, len(rs))}
	for i, r := range rs {
		out.Errnos[i] = t.applyRelease(r).GetErrno()
	}
	return out
}
