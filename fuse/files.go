package fuse

import (
	"errors"
	"math"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Open files and directories.
//
// Coherence: writes are buffered in the mount until close, fsync, a lock
// call, or a read or attribute request of the file on this mount
// (writeback.go); the kernel has no writeback cache of its own. Files are
// opened without FOPEN_KEEP_CACHE, so the kernel drops its page cache of a
// file at each open (close-to-open consistency), and taking a lock drops it
// too (see locks.go).

// Create creates and opens a file as one request.
func (fs *FS) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) (st fuse.Status) {
	defer fs.observe("Create", time.Now(), &st)
	fh := fs.nextFh.Add(1)
	req := &jfspb.CreateRequest{Parent: in.NodeId, Name: []byte(name), Mode: in.Mode,
		Uid: in.Uid, Gid: in.Gid, Umask: in.Umask, Flags: in.Flags, Fh: fh}
	fs.creating.Add(1)
	defer fs.creating.Add(-1) // after the handle is listed
	cctx, cred := fs.openAs(&in.Caller)
	r, err := fs.c.Create(cctx, req)
	if st = fs.status("create", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.opened(fh, req.GetHeader().GetSession(), r.Attr.GetIno())
	fs.openedAs(fh, cred)
	fs.fillEntry(r.Attr, &out.EntryOut)
	out.OpenOut = fuse.OpenOut{Fh: fh, OpenFlags: openFlags(in.Flags)}
	return fuse.OK
}

// Tmpfile creates and opens an unnamed file (open(2) with O_TMPFILE). It
// lives while open; linkat(2) through /proc/self/fd can give it a name
// unless it was opened with O_EXCL (the kernel checks that too).
func (fs *FS) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) (st fuse.Status) {
	defer fs.observe("Tmpfile", time.Now(), &st)
	fh := fs.nextFh.Add(1)
	req := &jfspb.CreateRequest{Parent: in.NodeId, Mode: in.Mode,
		Uid: in.Uid, Gid: in.Gid, Umask: in.Umask, Flags: in.Flags, Fh: fh, Tmpfile: true}
	fs.creating.Add(1)
	defer fs.creating.Add(-1) // after the handle is listed
	cctx, cred := fs.openAs(&in.Caller)
	r, err := fs.c.Create(cctx, req)
	if st = fs.status("tmpfile", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.opened(fh, req.GetHeader().GetSession(), r.Attr.GetIno())
	fs.openedAs(fh, cred)
	fs.fillEntry(r.Attr, &out.EntryOut)
	out.OpenOut = fuse.OpenOut{Fh: fh, OpenFlags: openFlags(in.Flags)}
	return fuse.OK
}

// Open opens a file; O_TRUNC truncates it in the same request.
//
// Close-to-open: the kernel drops its page cache at the open (no
// FOPEN_KEEP_CACHE) unless, in coherent mode, the file's data version is
// the one of its last open on this mount (pages.go); it keeps its cached
// attributes, though, and it reads no further than the size it holds. Another mount may have changed the size since,
// so the open also drops the kernel's attributes of the inode (attributes
// only: that locks no page), and the next stat or read asks the cluster.
func (fs *FS) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer fs.observe("Open", time.Now(), &st)
	fh := fs.nextFh.Add(1)
	// Listed for a new leader's report before the cluster may have it
	// (OpenFiles): a report is never missing an open the leader answered.
	if s := fs.opts.Session; s != nil {
		fs.opened(fh, s.ID(), in.NodeId)
	}
	req := &jfspb.OpenRequest{Ino: in.NodeId, Flags: in.Flags, Fh: fh}
	cctx, cred := fs.openAs(&in.Caller)
	r, err := fs.c.Open(cctx, req)
	if st = fs.byIno("open", err, r.GetErrno()); !st.Ok() {
		fs.handles.Delete(fh)
		return st
	}
	fs.invalidateAttr(in.NodeId)
	fs.opened(fh, req.GetHeader().GetSession(), in.NodeId)
	fs.openedAs(fh, cred)
	*out = fuse.OpenOut{Fh: fh, OpenFlags: openFlags(in.Flags)}
	if fs.coh != nil && out.OpenFlags&fuse.FOPEN_DIRECT_IO == 0 && fs.pages.unchanged(in.NodeId, r.GetAttr()) {
		out.OpenFlags |= fuse.FOPEN_KEEP_CACHE
		fs.opts.Metrics.keptPages.Inc()
	}
	return fuse.OK
}

// Read reads from the cluster, after the writes this mount buffers for the
// file were sent (read-your-writes through any open file). The atime moves
// under the relatime rule (atime.go).
func (fs *FS) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (res fuse.ReadResult, st fuse.Status) {
	defer fs.observe("Read", time.Now(), &st)
	// Synced before the session check: a buffered write refused for an
	// ended session is how the mount may learn of the end.
	fs.wb.sync(in.NodeId)
	if st = fs.live("read", in.Fh); !st.Ok() {
		return nil, st
	}
	data, attr, err := fs.c.ReadAtAttr(fs.asOpener(in.Fh, &in.Caller), in.NodeId, int64(in.Offset), int(in.Size))
	if st = fs.status("read", err, 0); !st.Ok() {
		return nil, st
	}
	fs.touchAtime(in.NodeId, attr)
	return fuse.ReadResultData(data), fuse.OK
}

// Write buffers the data in the mount (writeback.go): it reaches the
// cluster at the latest when the file is closed or synced. An error of an
// earlier buffered write through the same open file is returned instead,
// and this write is not made. A write through a descriptor in O_APPEND
// mode is not buffered but sent as an append (see appendMode), after the
// file's buffered writes: the leader places it at the file's real end, and
// in.Offset, which the kernel took from its cached size, is ignored.
func (fs *FS) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (written uint32, st fuse.Status) {
	defer fs.observe("Write", time.Now(), &st)
	if st = fs.live("write", in.Fh); !st.Ok() {
		return 0, st
	}
	if appendMode(in) {
		if err := fs.wb.flush(in.NodeId, in.Fh); err != nil {
			return 0, fs.status("write", err, 0)
		}
		_, _, err := fs.c.Append(fs.asOpener(in.Fh, &in.Caller), in.NodeId, in.Fh, data)
		// The kernel records a size computed from the offset it chose.
		// Recent kernels mark the size stale after every write anyway;
		// for the others, drop the attributes so that the next stat or
		// read asks the cluster.
		fs.invalidateAttr(in.NodeId)
		if st = fs.status("write", err, 0); !st.Ok() {
			return 0, st
		}
		return uint32(len(data)), fuse.OK
	}
	if in.Offset > math.MaxInt64-uint64(len(data)) {
		return 0, fuse.Status(syscall.EFBIG)
	}
	e := extent{off: int64(in.Offset), data: data, fh: in.Fh, session: fs.sessionOf(in.Fh)}
	if err := fs.wb.write(in.NodeId, e); err != nil {
		return 0, fs.status("write", err, 0)
	}
	return uint32(len(data)), fuse.OK
}

// sendBuffered sends buffered data of ino to the cluster under the
// session its file was opened under, with its opener's credentials, so that a session the cluster ended
// meanwhile refuses it (ESTALE) instead of a new one accepting it. A write
// retried across a leader change keeps its (session, seq) and is applied
// once.
func (fs *FS) sendBuffered(ino uint64, e extent) error {
	n, _, err := fs.c.WriteAtAs(fs.asOpener(e.fh, nil), e.session, ino, e.fh, e.off, e.data)
	if err == nil && n < len(e.data) {
		err = syscall.EIO
	}
	if errors.Is(err, syscall.ESTALE) && e.session != 0 {
		fs.ended.Store(e.session, true) // see live
	}
	if err != nil {
		fs.log.Debug("buffered write failed", "ino", ino, "fh", e.fh, "off", e.off, "len", len(e.data), "error", err)
	}
	return err
}

// openFlags returns the FOPEN flags of the answer to an open with flags: a
// file opened with O_APPEND is opened for direct I/O, so the kernel does not
// copy appended data into its page cache at the offset it guessed from a
// cached size, which may not be where the data lands.
func openFlags(flags uint32) uint32 {
	if flags&syscall.O_APPEND == 0 {
		return 0
	}
	return fuse.FOPEN_DIRECT_IO
}

// appendMode reports whether a write is an append: a write(2) or pwrite(2)
// (as on Linux, pwrite appends too) through a descriptor whose file status
// flags include O_APPEND. struct fuse_write_in carries the descriptor's
// current flags, so an fcntl(F_SETFL) after the open counts, which the flags
// given at open would miss. The kernel's write-back of a shared mapping is
// never an append: it names the pages' place, and it may go through any
// writable open file of the inode, an O_APPEND one included.
func appendMode(in *fuse.WriteIn) bool {
	return in.WriteFlags&fuse.WRITE_CACHE == 0 && in.Flags&syscall.O_APPEND != 0
}

// Fallocate is fallocate(2), applied as one command (see
// jfspb.FallocateRequest for the modes and errnos): 0, KEEP_SIZE,
// PUNCH_HOLE|KEEP_SIZE and ZERO_RANGE with or without KEEP_SIZE; any other
// mode is EOPNOTSUPP.
func (fs *FS) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) (st fuse.Status) {
	defer fs.observe("Fallocate", time.Now(), &st)
	fs.wb.sync(in.NodeId)
	if st = fs.live("fallocate", in.Fh); !st.Ok() {
		return st
	}
	if in.Offset > math.MaxInt64 || in.Length > math.MaxInt64 {
		return fuse.EINVAL
	}
	r, err := fs.c.Fallocate(fs.asOpener(in.Fh, &in.Caller), &jfspb.FallocateRequest{Ino: in.NodeId, Fh: in.Fh,
		Offset: int64(in.Offset), Length: int64(in.Length), Mode: in.Mode})
	if st = fs.byIno("fallocate", err, r.GetErrno()); st.Ok() {
		// The kernel trims its page cache of a punched or zeroed range
		// itself. The size and blocks changed under its cached attributes,
		// which not every kernel drops after a fallocate.
		fs.invalidateAttr(in.NodeId)
	}
	return st
}

// Flush is called at every close(2) of a descriptor. It sends the file's
// buffered writes and waits for them, then releases the POSIX locks of the
// closing process (in.LockOwner) on the file, as close(2) does on a local
// file system: the next holder of a lock sees what was written under it.
// An error of a buffered write through this open file comes back here (the
// locks are released all the same).
func (fs *FS) Flush(cancel <-chan struct{}, in *fuse.FlushIn) (st fuse.Status) {
	defer fs.observe("Flush", time.Now(), &st)
	held := fs.owners.flushed(in.NodeId, in.LockOwner)
	if st = fs.live("flush", in.Fh); !st.Ok() {
		return st
	}
	wst := fuse.OK
	if err := fs.wb.flush(in.NodeId, in.Fh); err != nil {
		wst = fs.status("flush", err, 0)
	}
	if !held {
		return wst
	}
	if e := fs.deleg.enterReturning(in.NodeId); e != nil {
		// Its return is outstanding: dropped from the mount's table, and
		// below from the cluster's.
		e.releaseOwner(in.LockOwner)
		e.mu.Unlock()
	} else if e := fs.deleg.enter(in.NodeId); e != nil {
		e.releaseOwner(in.LockOwner)
		e.mu.Unlock()
		return wst
	}
	r, err := fs.c.ReleaseLockOwner(ctx(), &jfspb.ReleaseLockOwnerRequest{Ino: in.NodeId, Owner: in.LockOwner})
	if st = fs.status("flush", err, r.GetErrno()); st.Ok() {
		return wst
	}
	return st
}

// Fsync (fsync, fdatasync, msync with MS_SYNC) sends the file's buffered
// writes and waits for them: an answered write is committed in the
// cluster's log. An error of a buffered write through this open file comes
// back here. A file of an ended session fails, as its writes may have been
// refused.
func (fs *FS) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) (st fuse.Status) {
	defer fs.observe("Fsync", time.Now(), &st)
	if st = fs.live("fsync", in.Fh); !st.Ok() {
		return st
	}
	if err := fs.wb.flush(in.NodeId, in.Fh); err != nil {
		return fs.status("fsync", err, 0)
	}
	return fuse.OK
}

// Release ends an open file (the last close of its open file description).
// With FUSE_RELEASE_FLOCK_UNLOCK its flock is dropped too, and so are the
// OFD locks taken through it (see owners.go). The kernel does not wait for
// the answer, and neither does Release: a release that frees a lock is sent
// at once, a plain one is queued behind the earlier plain ones (release.go).
//
// The file's buffered writes are sent first (the kernel's write-back of a
// shared mapping may come after the last FLUSH); an error of one made
// through this open file can no longer be reported and is logged.
func (fs *FS) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	var st fuse.Status
	defer fs.observe("Release", time.Now(), &st)
	st = fs.live("release", in.Fh)
	if err := fs.wb.flush(in.NodeId, in.Fh); err != nil {
		fs.log.Error("a buffered write failed after the file's last close", "ino", in.NodeId, "fh", in.Fh, "error", err)
	}
	f, _ := fs.handles.LoadAndDelete(in.Fh)
	fs.closedAs(in.Fh)
	flock := in.ReleaseFlags&fuse.FUSE_RELEASE_FLOCK_UNLOCK != 0
	var flockOwner uint64
	if flock {
		flockOwner = in.LockOwner
	}
	// From here until the release is answered, a lock request of an owner
	// it names waits for it (owners.go).
	owners, finish := fs.owners.released(in.NodeId, in.Fh, flockOwner)
	if !st.Ok() {
		finish()
		return // the ended session's opens and locks are gone with it
	}
	p := pendingRelease{req: &jfspb.ReleaseRequest{Ino: in.NodeId, Fh: in.Fh,
		ReleaseFlock: flock, LockOwners: owners}, finish: finish}
	if of, ok := f.(openFile); ok {
		p.session = of.session
	}
	if (p.req.ReleaseFlock || len(owners) > 0) && fs.releaseDelegated(p) {
		finish()
		p.req.ReleaseFlock, p.req.LockOwners = false, nil
		fs.releases.plain(p)
	} else if p.req.ReleaseFlock || len(owners) > 0 {
		fs.releases.urgent(p)
	} else {
		finish() // names no owner
		fs.releases.plain(p)
	}
}

// pendingRelease is a release on its way, with the session its file was
// opened under (0 if unknown).
type pendingRelease struct {
	req     *jfspb.ReleaseRequest
	session uint64
	finish  func() // called once the release is answered or dropped
}

// stale reports whether p's file was opened under a session the cluster has
// ended since: its open is gone with the session, so the release is
// dropped. This saves a request only: the session may be renewed just after
// this check, and a release is sent under its file's own session
// (ReleaseAs), which the cluster answers ESTALE once that session ended.
func (fs *FS) stale(p pendingRelease) bool {
	s := fs.opts.Session
	return s != nil && p.session != 0 && s.ID() != p.session
}

// sendReleases sends plain releases as one batch (one log entry) per
// session the files were opened under; failures are logged, as no one
// waits for them.
func (fs *FS) sendReleases(ps []pendingRelease) {
	var sessions []uint64
	bySession := map[uint64]*jfspb.ReleaseBatchRequest{}
	for _, p := range ps {
		if fs.stale(p) {
			continue
		}
		req := bySession[p.session]
		if req == nil {
			req = &jfspb.ReleaseBatchRequest{}
			bySession[p.session] = req
			sessions = append(sessions, p.session)
		}
		req.Releases = append(req.Releases, p.req)
	}
	for _, sid := range sessions {
		fs.sendReleaseBatch(sid, bySession[sid])
	}
}

// sendReleaseBatch sends req under session sid (0: the current one).
func (fs *FS) sendReleaseBatch(sid uint64, req *jfspb.ReleaseBatchRequest) {
	start := time.Now()
	r, err := fs.c.ReleaseBatchAs(ctx(), sid, req)
	d := time.Since(start)
	for range req.Releases {
		fs.opts.Metrics.observeMeta("release", d)
	}
	if err == nil && fs.endedSession(sid, r.GetErrno()) {
		return
	}
	if st := fs.status("release", err, r.GetErrno()); !st.Ok() {
		fs.log.Warn("releasing open files failed", "files", len(req.Releases), "status", st)
		return
	}
	for i, e := range r.GetErrnos() {
		if e != 0 && i < len(req.Releases) {
			fs.log.Debug("release failed", "ino", req.Releases[i].Ino, "fh", req.Releases[i].Fh, "errno", e)
		}
	}
}

// sendRelease sends one release that frees locks to the cluster; a failure
// is logged, as no one waits for it.
func (fs *FS) sendRelease(p pendingRelease) {
	if p.finish != nil {
		defer p.finish()
	}
	req := p.req
	if fs.stale(p) {
		return
	}
	start := time.Now()
	r, err := fs.c.ReleaseAs(ctx(), p.session, req)
	fs.opts.Metrics.observeMeta("release", time.Since(start))
	if err == nil && fs.endedSession(p.session, r.GetErrno()) {
		return
	}
	if st := fs.status("release", err, r.GetErrno()); !st.Ok() {
		fs.log.Debug("release failed", "ino", req.Ino, "fh", req.Fh, "status", st)
	}
}

// endedSession reports whether errno is the cluster's ESTALE for a release
// sent under sid, an earlier session than the current one: its opens and
// locks ended with it, so there is nothing to release and nothing to report.
func (fs *FS) endedSession(sid uint64, errno int32) bool {
	return errno == int32(syscall.ESTALE) && sid != 0 && sid != fs.c.Session()
}

// OpenDir needs no handle: ReadDir pages through the directory by cookie.
// The mount remembers the open directory, so that it stays usable if it is
// removed while open (opendirs.go).
func (fs *FS) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) (st fuse.Status) {
	defer fs.observe("OpenDir", time.Now(), &st)
	r, err := fs.c.GetAttr(ctx(), &jfspb.GetAttrRequest{Ino: in.NodeId})
	if st = fs.byIno("opendir", err, r.GetErrno()); !st.Ok() {
		return st
	}
	if r.Attr.GetMode()&fuse.S_IFDIR == 0 {
		return fuse.ENOTDIR
	}
	fs.dirs.open(in.NodeId, r.Attr)
	*out = fuse.OpenOut{}
	return fuse.OK
}

// ReleaseDir forgets an open directory; the cluster holds nothing for it.
func (fs *FS) ReleaseDir(in *fuse.ReleaseIn) { fs.dirs.release(in.NodeId) }

// ReadDir lists a directory from in.Offset on.
func (fs *FS) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	_, st := fs.listDir(in, out, false)
	return st
}

// ReadDirPlus lists a directory with the attributes of its entries.
func (fs *FS) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	_, st := fs.listDir(in, out, true)
	return st
}

// listDir is ReadDir (plus false) or ReadDirPlus, and also returns how
// many entries it added.
func (fs *FS) listDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) (n int, st fuse.Status) {
	method := "ReadDir"
	if plus {
		method = "ReadDirPlus"
	}
	defer fs.observe(method, time.Now(), &st)
	return fs.readDir(in, out, plus)
}

// Directory offsets are the cluster's entry cookies: "." is 1, ".." is 2,
// and the entries have stable cookies from 3 in creation order, so an
// offset stays valid while entries come and go (telldir/seekdir work).
const (
	dotCookie    = 1
	dotdotCookie = 2
)

// readDir fills out with the entries after in.Offset until it is full or
// the directory ends, asking the cluster a page at a time. It returns how
// many entries it added.
func (fs *FS) readDir(in *fuse.ReadIn, out *fuse.DirEntryList, plus bool) (int, fuse.Status) {
	n := 0
	add := func(e fuse.DirEntry, a *jfspb.Attr) bool {
		if !plus {
			if !out.AddDirEntry(e) {
				return false
			}
			n++
			return true
		}
		eo := out.AddDirLookupEntry(e)
		if eo == nil {
			return false
		}
		n++
		if a != nil {
			fs.fillEntry(a, eo)
		}
		return true
	}
	off := in.Offset
	if off < dotCookie && !add(fuse.DirEntry{Name: ".", Mode: fuse.S_IFDIR, Ino: in.NodeId, Off: dotCookie}, nil) {
		return n, fuse.OK
	}
	if off < dotdotCookie && !add(fuse.DirEntry{Name: "..", Mode: fuse.S_IFDIR, Off: dotdotCookie}, nil) {
		return n, fuse.OK
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
		r, err := fs.c.ReadDir(fs.as(&in.Caller), &jfspb.ReadDirRequest{Ino: in.NodeId, Cookie: cookie, Limit: limit})
		if st := fs.status("readdir", err, r.GetErrno()); st == fuse.ENOENT {
			if _, open := fs.dirs.removed(in.NodeId); open {
				return n, fuse.OK // removed while open here: it was empty
			}
			return n, st
		} else if !st.Ok() {
			return n, st
		}
		for _, e := range r.Entries {
			de := fuse.DirEntry{Name: string(e.Name), Mode: e.Attr.GetMode(), Ino: e.Attr.GetIno(), Off: e.Cookie}
			if !add(de, e.Attr) {
				return n, fuse.OK
			}
			cookie = e.Cookie
		}
		if r.Eof || len(r.Entries) == 0 {
			return n, fuse.OK
		}
	}
}
