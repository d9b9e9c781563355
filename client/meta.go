package client

import (
	"context"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// The typed calls of the Meta service. Reads go to the leader and see every
// write that completed before they were sent; writes are numbered with the
// client's session and applied exactly once however often they are retried.
// Requests act for the identity of their context (cred.go): a read request
// whose Cred is unset gets it, a write's Header always does.
// A file-system error is the errno field of the response (see Errno); the
// error return is for the cluster being unreachable (ErrNoLeader) and other
// transport failures.

// Lookup sends a LookupRequest to the leader. Identical lookups in flight
// at once share RPCs (see merge.go).
func (c *Client) Lookup(ctx context.Context, r *jfspb.LookupRequest) (*jfspb.LookupResponse, error) {
	if r.Cred == nil {
		r.Cred = c.cred(ctx)
	}
	return merge(ctx, c, "lookup", r, func(ctx context.Context) (*jfspb.LookupResponse, error) {
		return read(ctx, c, jfspb.MetaClient.Lookup, r)
	})
}

// GetAttr sends a GetAttrRequest to the leader. Identical getattrs in
// flight at once share RPCs (see merge.go).
func (c *Client) GetAttr(ctx context.Context, r *jfspb.GetAttrRequest) (*jfspb.GetAttrResponse, error) {
	return merge(ctx, c, "getattr", r, func(ctx context.Context) (*jfspb.GetAttrResponse, error) {
		return read(ctx, c, jfspb.MetaClient.GetAttr, r)
	})
}

// ReadLink sends a ReadLinkRequest to the leader.
func (c *Client) ReadLink(ctx context.Context, r *jfspb.ReadLinkRequest) (*jfspb.ReadLinkResponse, error) {
	return read(ctx, c, jfspb.MetaClient.ReadLink, r)
}

// ReadDir sends a ReadDirRequest to the leader.
func (c *Client) ReadDir(ctx context.Context, r *jfspb.ReadDirRequest) (*jfspb.ReadDirResponse, error) {
	if r.Cred == nil {
		r.Cred = c.cred(ctx)
	}
	return read(ctx, c, jfspb.MetaClient.ReadDir, r)
}

// Read sends a ReadRequest to the leader.
func (c *Client) Read(ctx context.Context, r *jfspb.ReadRequest) (*jfspb.ReadResponse, error) {
	if r.Cred == nil {
		r.Cred = c.cred(ctx)
	}
	return read(ctx, c, jfspb.MetaClient.Read, r)
}

// StatFS sends a StatFSRequest to the leader.
func (c *Client) StatFS(ctx context.Context, r *jfspb.StatFSRequest) (*jfspb.StatFSResponse, error) {
	return read(ctx, c, jfspb.MetaClient.StatFS, r)
}

// GetXattr sends a GetXattrRequest to the leader.
func (c *Client) GetXattr(ctx context.Context, r *jfspb.GetXattrRequest) (*jfspb.GetXattrResponse, error) {
	if r.Cred == nil {
		r.Cred = c.cred(ctx)
	}
	return read(ctx, c, jfspb.MetaClient.GetXattr, r)
}

// ListXattr sends a ListXattrRequest to the leader.
func (c *Client) ListXattr(ctx context.Context, r *jfspb.ListXattrRequest) (*jfspb.ListXattrResponse, error) {
	if r.Cred == nil {
		r.Cred = c.cred(ctx)
	}
	return read(ctx, c, jfspb.MetaClient.ListXattr, r)
}

// GetLk sends a GetLkRequest to the leader.
func (c *Client) GetLk(ctx context.Context, r *jfspb.GetLkRequest) (*jfspb.GetLkResponse, error) {
	return read(ctx, c, jfspb.MetaClient.GetLk, r)
}

// Heartbeat sends a HeartbeatRequest to the leader.
func (c *Client) Heartbeat(ctx context.Context, r *jfspb.HeartbeatRequest) (*jfspb.HeartbeatResponse, error) {
	return read(ctx, c, jfspb.MetaClient.Heartbeat, r)
}

// ReportOpens sends a ReportOpensRequest to the leader.
func (c *Client) ReportOpens(ctx context.Context, r *jfspb.ReportOpensRequest) (*jfspb.ReportOpensResponse, error) {
	return read(ctx, c, jfspb.MetaClient.ReportOpens, r)
}

// CloseSession applies a CloseSessionRequest exactly once.
func (c *Client) CloseSession(ctx context.Context, r *jfspb.CloseSessionRequest) (*jfspb.CloseSessionResponse, error) {
	return write(ctx, c, jfspb.MetaClient.CloseSession, r, func(r *jfspb.CloseSessionRequest, h *jfspb.Header) { r.Header = h })
}

// SetAttr applies a SetAttrRequest exactly once.
func (c *Client) SetAttr(ctx context.Context, r *jfspb.SetAttrRequest) (*jfspb.SetAttrResponse, error) {
	return write(ctx, c, jfspb.MetaClient.SetAttr, r, func(r *jfspb.SetAttrRequest, h *jfspb.Header) { r.Header = h })
}

// TouchAtime applies a TouchAtimeRequest exactly once.
func (c *Client) TouchAtime(ctx context.Context, r *jfspb.TouchAtimeRequest) (*jfspb.TouchAtimeResponse, error) {
	return write(ctx, c, jfspb.MetaClient.TouchAtime, r, func(r *jfspb.TouchAtimeRequest, h *jfspb.Header) { r.Header = h })
}

// Mknod applies a MknodRequest exactly once.
func (c *Client) Mknod(ctx context.Context, r *jfspb.MknodRequest) (*jfspb.MknodResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Mknod, r, func(r *jfspb.MknodRequest, h *jfspb.Header) { r.Header = h })
}

// Mkdir applies a MkdirRequest exactly once.
func (c *Client) Mkdir(ctx context.Context, r *jfspb.MkdirRequest) (*jfspb.MkdirResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Mkdir, r, func(r *jfspb.MkdirRequest, h *jfspb.Header) { r.Header = h })
}

// Create applies a CreateRequest exactly once.
func (c *Client) Create(ctx context.Context, r *jfspb.CreateRequest) (*jfspb.CreateResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Create, r, func(r *jfspb.CreateRequest, h *jfspb.Header) { r.Header = h })
}

// Unlink applies a UnlinkRequest exactly once.
func (c *Client) Unlink(ctx context.Context, r *jfspb.UnlinkRequest) (*jfspb.UnlinkResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Unlink, r, func(r *jfspb.UnlinkRequest, h *jfspb.Header) { r.Header = h })
}

// Rmdir applies a RmdirRequest exactly once.
func (c *Client) Rmdir(ctx context.Context, r *jfspb.RmdirRequest) (*jfspb.RmdirResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Rmdir, r, func(r *jfspb.RmdirRequest, h *jfspb.Header) { r.Header = h })
}

// Rename applies a RenameRequest exactly once.
func (c *Client) Rename(ctx context.Context, r *jfspb.RenameRequest) (*jfspb.RenameResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Rename, r, func(r *jfspb.RenameRequest, h *jfspb.Header) { r.Header = h })
}

// Link applies a LinkRequest exactly once.
func (c *Client) Link(ctx context.Context, r *jfspb.LinkRequest) (*jfspb.LinkResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Link, r, func(r *jfspb.LinkRequest, h *jfspb.Header) { r.Header = h })
}

// Symlink applies a SymlinkRequest exactly once.
func (c *Client) Symlink(ctx context.Context, r *jfspb.SymlinkRequest) (*jfspb.SymlinkResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Symlink, r, func(r *jfspb.SymlinkRequest, h *jfspb.Header) { r.Header = h })
}

// Open applies a OpenRequest exactly once.
func (c *Client) Open(ctx context.Context, r *jfspb.OpenRequest) (*jfspb.OpenResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Open, r, func(r *jfspb.OpenRequest, h *jfspb.Header) { r.Header = h })
}

// Release applies a ReleaseRequest exactly once.
func (c *Client) Release(ctx context.Context, r *jfspb.ReleaseRequest) (*jfspb.ReleaseResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Release, r, func(r *jfspb.ReleaseRequest, h *jfspb.Header) { r.Header = h })
}

// ReleaseAs applies a ReleaseRequest exactly once under session, the
// session the file was opened under (0: the current one). A release of a
// file of an ended session answers ESTALE and ends nothing.
func (c *Client) ReleaseAs(ctx context.Context, session uint64, r *jfspb.ReleaseRequest) (*jfspb.ReleaseResponse, error) {
	return writeAs(ctx, c, session, c.cfg.AttemptTimeout, jfspb.MetaClient.Release, r, func(r *jfspb.ReleaseRequest, h *jfspb.Header) { r.Header = h })
}

// ReleaseBatchAs applies a ReleaseBatchRequest exactly once under session
// (0: the current one), the session every file in it was opened under.
func (c *Client) ReleaseBatchAs(ctx context.Context, session uint64, r *jfspb.ReleaseBatchRequest) (*jfspb.ReleaseBatchResponse, error) {
	return writeAs(ctx, c, session, c.cfg.AttemptTimeout, jfspb.MetaClient.ReleaseBatch, r, func(r *jfspb.ReleaseBatchRequest, h *jfspb.Header) { r.Header = h })
}

// ReleaseBatch applies a ReleaseBatchRequest exactly once.
func (c *Client) ReleaseBatch(ctx context.Context, r *jfspb.ReleaseBatchRequest) (*jfspb.ReleaseBatchResponse, error) {
	return write(ctx, c, jfspb.MetaClient.ReleaseBatch, r, func(r *jfspb.ReleaseBatchRequest, h *jfspb.Header) { r.Header = h })
}

// Write applies a WriteRequest exactly once.
func (c *Client) Write(ctx context.Context, r *jfspb.WriteRequest) (*jfspb.WriteResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Write, r, func(r *jfspb.WriteRequest, h *jfspb.Header) { r.Header = h })
}

// Fallocate applies a FallocateRequest exactly once.
func (c *Client) Fallocate(ctx context.Context, r *jfspb.FallocateRequest) (*jfspb.FallocateResponse, error) {
	return write(ctx, c, jfspb.MetaClient.Fallocate, r, func(r *jfspb.FallocateRequest, h *jfspb.Header) { r.Header = h })
}

// SetXattr applies a SetXattrRequest exactly once.
func (c *Client) SetXattr(ctx context.Context, r *jfspb.SetXattrRequest) (*jfspb.SetXattrResponse, error) {
	return write(ctx, c, jfspb.MetaClient.SetXattr, r, func(r *jfspb.SetXattrRequest, h *jfspb.Header) { r.Header = h })
}

// RemoveXattr applies a RemoveXattrRequest exactly once.
func (c *Client) RemoveXattr(ctx context.Context, r *jfspb.RemoveXattrRequest) (*jfspb.RemoveXattrResponse, error) {
	return write(ctx, c, jfspb.MetaClient.RemoveXattr, r, func(r *jfspb.RemoveXattrRequest, h *jfspb.Header) { r.Header = h })
}

// SetLk applies a SetLkRequest exactly once. With r.Block it waits on the
// leader until the lock is granted, refused or cancelled (CancelLockWait
// with the header it was sent with, which onHeader reports before the
// request leaves), following the leader across failovers.
func (c *Client) SetLk(ctx context.Context, r *jfspb.SetLkRequest, onHeader ...func(*jfspb.Header)) (*jfspb.SetLkResponse, error) {
	attempt := c.cfg.AttemptTimeout
	if r.Block {
		attempt = 0
	}
	return writeWithin(ctx, c, attempt, jfspb.MetaClient.SetLk, r, func(r *jfspb.SetLkRequest, h *jfspb.Header) {
		r.Header = h
		for _, fn := range onHeader {
			fn(h)
		}
	})
}

// Flock applies a FlockRequest exactly once. With r.Block it waits on the
// leader until the lock is granted, refused or cancelled (CancelLockWait
// with the header it was sent with, which onHeader reports before the
// request leaves), following the leader across failovers.
func (c *Client) Flock(ctx context.Context, r *jfspb.FlockRequest, onHeader ...func(*jfspb.Header)) (*jfspb.FlockResponse, error) {
	attempt := c.cfg.AttemptTimeout
	if r.Block {
		attempt = 0
	}
	return writeWithin(ctx, c, attempt, jfspb.MetaClient.Flock, r, func(r *jfspb.FlockRequest, h *jfspb.Header) {
		r.Header = h
		for _, fn := range onHeader {
			fn(h)
		}
	})
}

// ReleaseLockOwner applies a ReleaseLockOwnerRequest exactly once.
func (c *Client) ReleaseLockOwner(ctx context.Context, r *jfspb.ReleaseLockOwnerRequest) (*jfspb.ReleaseLockOwnerResponse, error) {
	return write(ctx, c, jfspb.MetaClient.ReleaseLockOwner, r, func(r *jfspb.ReleaseLockOwnerRequest, h *jfspb.Header) { r.Header = h })
}

// CancelLockWait interrupts the blocking request sent with (session, seq).
func (c *Client) CancelLockWait(ctx context.Context, session, seq uint64) error {
	resp, err := read(ctx, c, jfspb.MetaClient.CancelLockWait, &jfspb.CancelLockWaitRequest{Session: session, Seq: seq})
	if err != nil {
		return err
	}
	return Errno(resp.Errno)
}
