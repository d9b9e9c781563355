package fuse

import (
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Open files and directories.
//
// Coherence: the mount keeps no data of its own and the kernel has no
// writeback cache, so a write(2) that returned is committed in the
// cluster. Files are opened without FOPEN_KEEP_CACHE, so the kernel drops
// its page cache of a file at each open (close-to-open consistency), and
// taking a lock drops it too (see locks.go).

// Create creates and opens a file as one request.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) (st fuse.Status) {
	defer fs.observe("Create", time.Now(), &st)
	fh := fs.nextFh.Add(1)
	req := &jfspb.CreateRequest{Parent: in.NodeId, Name: []byte(name), Mode: in.Mode,
		Uid: in.Uid, Gid: in.Gid, Umask: in.Umask, Flags: in.Flags, Fh: fh}
	r, err := fs.c.Create(ctx(), req)
	if st = fs.status("create", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.opened(fh, req.GetHeader().GetSession())
	fs.fillEntry(r.Attr, &out.EntryOut)
	out.OpenOut = fuse.OpenOut{Fh: fh}
	return fuse.OK
}

// Open opens a file; O_TRUNC truncates it in the same request.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer fs.observe("Open", time.Now(), &st)
	fh := fs.nextFh.Add(1)
	req := &jfspb.OpenRequest{Ino: in.NodeId, Flags: in.Flags, Fh: fh}
	r, err := fs.c.Open(ctx(), req)
	if st = fs.byIno("open", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.opened(fh, req.GetHeader().GetSession())
	*out = fuse.OpenOut{Fh: fh}
	return fuse.OK
}

// Read reads from the cluster; nothing is cached here.
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (res fuse.ReadResult, st fuse.Status) {
	defer fs.observe("Read", time.Now(), &st)
	if st = fs.live("read", in.Fh); !st.Ok() {
		return nil, st
	}
	data, err := fs.c.ReadAt(ctx(), in.NodeId, int64(in.Offset), int(in.Size))
	if st = fs.status("read", err, 0); !st.Ok() {
		return nil, st
	}
	return fuse.ReadResultData(data), fuse.OK
}

// Write writes through to the cluster: when it returns, the data is
// committed.
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (written uint32, st fuse.Status) {
	defer fs.observe("Write", time.Now(), &st)
	if st = fs.live("write", in.Fh); !st.Ok() {
		return 0, st
	}
	n, _, err := fs.c.WriteAt(ctx(), in.NodeId, in.Fh, int64(in.Offset), data)
	if st = fs.status("write", err, 0); !st.Ok() && n == 0 {
		return 0, st
	}
	return uint32(n), fuse.OK
}

// Flush is called at every close(2) of a descriptor: the POSIX locks of the
// closing process (in.LockOwner) on the file are released, as close(2)
// does on a local file system. Writes need no flushing.
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) (st fuse.Status) {
	defer fs.observe("Flush", time.Now(), &st)
	held := fs.forgetPlockOwner(in.NodeId, in.LockOwner)
	if st = fs.live("flush", in.Fh); !st.Ok() || !held {
		return st
	}
	r, err := fs.c.ReleaseLockOwner(ctx(), &jfspb.ReleaseLockOwnerRequest{Ino: in.NodeId, Owner: in.LockOwner})
	return fs.status("flush", err, r.GetErrno())
}

// Fsync has nothing to do: every write is already durable in the cluster.
// A file of an ended session fails, as its writes may have been refused.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	return fs.live("fsync", in.Fh)
}

// Release ends an open file; with FUSE_RELEASE_FLOCK_UNLOCK its flock is
// dropped too. The kernel does not wait for the answer.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	var st fuse.Status
	defer fs.observe("Release", time.Now(), &st)
	st = fs.live("release", in.Fh)
	fs.handles.Delete(in.Fh)
	if !st.Ok() {
		return // the ended session's opens are gone with it
	}
	r, err := fs.c.Release(ctx(), &jfspb.ReleaseRequest{Ino: in.NodeId, Fh: in.Fh,
		ReleaseFlock: in.ReleaseFlags&fuse.FUSE_RELEASE_FLOCK_UNLOCK != 0})
	st = fs.status("release", err, r.GetErrno())
}

// OpenDir needs no handle: ReadDir pages through the directory by cookie.
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer fs.observe("OpenDir", time.Now(), &st)
	r, err := fs.c.GetAttr(ctx(), &jfspb.GetAttrRequest{Ino: in.NodeId})
	if st = fs.byIno("opendir", err, r.GetErrno()); !st.Ok() {
		return st
	}
	if r.Attr.GetMode()&fuse.S_IFDIR == 0 {
		return fuse.ENOTDIR
	}
	*out = fuse.OpenOut{}
	return fuse.OK
}

// ReleaseDir has nothing to release.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) {}

// ReadDir lists a directory from in.Offset on.
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) (st fuse.Status) {
	defer fs.observe("ReadDir", time.Now(), &st)
	return fs.readDir(in, out, false)
}

// ReadDirPlus lists a directory with the attributes of its entries.
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) (st fuse.Status) {
	defer fs.observe("ReadDirPlus", time.Now(), &st)
	return fs.readDir(in, out, true)
}

// Directory offsets are the cluster's entry cookies: "." is 1, ".." is 2,
// and the entries have stable cookies from 3 in creation order, so an
// offset stays valid while entries come and go (telldir/seekdir work).
const (
	dotCookie    = 1
	dotdotCookie = 2
)

// readDir fills out with the entries after in.Offset until it is full or
// the directory ends, asking the cluster a page at a time.
func (fs *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) fuse.Status {
	add := func(e fuse.DirEntry, a *jfspb.Attr) bool {
		if !plus {
			return out.AddDirEntry(e)
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return false
		}
		if a != nil {
			fs.fillEntry(a, eo)
		}
		return true
	}
	off := in.Offset
	if off < dotCookie && !add(fuse.DirEntry{Name: ".", Mode: fuse.S_IFDIR, Ino: in.NodeId, Off: dotCookie}, nil) {
		return fuse.OK
	}
	if off < dotdotCookie && !add(fuse.DirEntry{Name: "..", Mode: fuse.S_IFDIR, Off: dotdotCookie}, nil) {
		return fuse.OK
	}
	cookie := max(off, dotdotCookie)
	// A page of about what fits: a dirent is 24 bytes and a name, and
	// READDIRPLUS adds an entry of 128 bytes.
	per := 32
	if plus {
		per = 160
	}
	limit := uint32(max(1, int(in.Size)/per))
	for {
		r, err := fs.c.ReadDir(ctx(), &jfspb.ReadDirRequest{Ino: in.NodeId, Cookie: cookie, Limit: limit})
		if st := fs.status("readdir", err, r.GetErrno()); !st.Ok() {
			return st
		}
		for _, e := range r.Entries {
			de := fuse.DirEntry{Name: string(e.Name), Mode: e.Attr.GetMode(), Ino: e.Attr.GetIno(), Off: e.Cookie}
			if !add(de, e.Attr) {
				return fuse.OK
			}
			cookie = e.Cookie
		}
		if r.Eof || len(r.Entries) == 0 {
			return fuse.OK
		}
	}
}
