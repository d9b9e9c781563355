package fuse

import (
	"math"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Locks. flock(2) arrives as SetLk/SetLkw with FUSE_LK_FLOCK and is owned by
// the open file (its fh); fcntl(2) record locks are owned by the kernel's
// lock owner (in.Owner: one per process and file table for F_SETLK, one per
// open file for F_OFD_SETLK) within this mount's session, so locks taken
// through two mounts always conflict. owners.go tells the two kinds apart at
// close.
//
// After every lock acquisition the kernel's cached data and attributes of
// the inode are dropped, so that reads under the lock see what the previous
// holder wrote before it unlocked, from whichever mount.

// toEOF is the end of a FileLock that runs to the end of the file; Linux
// lock ends are inclusive.
const toEOF = math.MaxInt64

func wireType(typ uint32) (jfspb.LockType, bool) {
	switch typ {
	case syscall.F_RDLCK:
		return jfspb.LockType_LOCK_TYPE_READ, true
	case syscall.F_WRLCK:
		return jfspb.LockType_LOCK_TYPE_WRITE, true
	case syscall.F_UNLCK:
		return jfspb.LockType_LOCK_TYPE_UNLOCK, true
	}
	return 0, false
}

func kernelType(t jfspb.LockType) uint32 {
	switch t {
	case jfspb.LockType_LOCK_TYPE_READ:
		return syscall.F_RDLCK
	case jfspb.LockType_LOCK_TYPE_WRITE:
		return syscall.F_WRLCK
	}
	return syscall.F_UNLCK
}

// fcntlRange turns an inclusive kernel range into fcntl's start and length
// (0: to the end of the file).
func fcntlRange(lk *fuse.FileLock) (start, length int64) {
	if lk.End >= toEOF {
		return int64(lk.Start), 0
	}
	return int64(lk.Start), int64(lk.End-lk.Start) + 1
}

// GetLk is F_GETLK: the first lock that would conflict with in.Lk, or
// F_UNLCK. The holder's pid is reported only when the holder is a process
// on this mount; a pid of another host means nothing here, so it is 0.
func (fs *FS) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) (st fuse.Status) {
	defer fs.observe("GetLk", time.Now(), &st)
	fs.wb.sync(in.NodeId)
	if st = fs.live("getlk", in.Fh); !st.Ok() {
		return st
	}
	typ, ok := wireType(in.Lk.Typ)
	if !ok || typ == jfspb.LockType_LOCK_TYPE_UNLOCK {
		return fuse.EINVAL
	}
	if e := fs.deleg.enter(in.NodeId); e != nil {
		defer e.mu.Unlock()
		return e.getLk(in, typ, out)
	}
	start, length := fcntlRange(&in.Lk)
	session := fs.c.Session()
	r, err := fs.c.GetLk(ctx(), &jfspb.GetLkRequest{Session: session, Ino: in.NodeId, Owner: in.Owner,
		Type: typ, Start: start, Len: length, Pid: in.Lk.Pid})
	if st = fs.status("getlk", err, r.GetErrno()); !st.Ok() {
		return st
	}
	if r.Type == jfspb.LockType_LOCK_TYPE_UNLOCK {
		out.Lk = fuse.FileLock{Typ: syscall.F_UNLCK}
		return fuse.OK
	}
	out.Lk = fuse.FileLock{Typ: kernelType(r.Type), Start: uint64(r.Start), End: toEOF}
	if r.Len > 0 {
		out.Lk.End = uint64(r.Start + r.Len - 1)
	}
	if r.Holder.GetSession() == session {
		out.Lk.Pid = r.Pid
	}
	return fuse.OK
}

// SetLk is F_SETLK, or flock(2) with LOCK_NB: EAGAIN on conflict.
func (fs *FS) SetLk(cancel <-chan struct{}, in *fuse.LkIn) (st fuse.Status) {
	defer fs.observe("SetLk", time.Now(), &st)
	return fs.setLk(in, false, nil)
}

// SetLkw is F_SETLKW, or flock(2) without LOCK_NB. The request waits on the
// leader, which grants it when the lock is freed, or answers EDEADLK when
// the wait would close a cycle of waiting processes. An interrupt (a signal
// to the waiting process) asks the leader to cancel the wait and keeps
// waiting for the request's own answer: EINTR, or, when the grant was
// already on its way, the grant. So a process is never told EINTR while it
// holds the lock.
func (fs *FS) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) (st fuse.Status) {
	defer fs.observe("SetLkw", time.Now(), &st)
	return fs.setLk(in, true, cancel)
}

func (fs *FS) setLk(in *fuse.LkIn, block bool, cancel <-chan struct{}) fuse.Status {
	// Lock coherence: what this mount wrote to the file reaches the
	// cluster before the lock changes hands, so the next holder on any
	// mount reads it. Synced before the session check: a buffered write
	// refused for an ended session is how the mount may learn of the end,
	// and the lock request must then not go out under the new session.
	fs.wb.sync(in.NodeId)
	if st := fs.live("setlk", in.Fh); !st.Ok() {
		return st
	}
	typ, ok := wireType(in.Lk.Typ)
	if !ok {
		return fuse.EINVAL
	}
	block = block && typ != jfspb.LockType_LOCK_TYPE_UNLOCK
	isFlock := in.LkFlags&fuse.FUSE_LK_FLOCK != 0
	// A release naming this owner that is still on its way goes first:
	// sent after this request, it would drop what this one takes
	// (owners.go). Looked at after locking noted the request, so a release
	// that begins later does not name the owner.
	afterReleases := func() {
		if ch := fs.owners.releaseOf(in.NodeId, in.Owner); ch != nil {
			<-ch
		}
	}
	if st, ok := fs.localLk(in, typ, block, isFlock, afterReleases); ok {
		return st
	}
	sent := make(chan *jfspb.Header, 1)
	var session, seq atomic.Uint64 // the header the request went with
	onHeader := func(h *jfspb.Header) {
		session.Store(h.Session)
		seq.Store(h.Seq)
		sent <- h
	}
	done := make(chan fuse.Status, 1)
	delegOK := fs.deleg != nil && typ != jfspb.LockType_LOCK_TYPE_UNLOCK
	go func() {
		if isFlock {
			afterReleases()
			r, err := fs.c.Flock(fs.asOpener(in.Fh, &in.Caller), &jfspb.FlockRequest{Ino: in.NodeId, Fh: in.Fh, Type: typ, Pid: in.Lk.Pid, Block: block, DelegOk: delegOK}, onHeader)
			if err == nil && r.Errno == 0 && r.Delegated {
				fs.deleg.install(in.NodeId, session.Load(), seq.Load(), func(e *delegIno) { e.flock(in, typ, false) })
			} else if err != nil && delegOK && seq.Load() != 0 {
				fs.deleg.lost(in.NodeId, session.Load(), seq.Load())
			}
			done <- fs.status("flock", err, r.GetErrno())
			return
		}
		maybeOFD := false
		if typ != jfspb.LockType_LOCK_TYPE_UNLOCK {
			// Noted before asking: if the answer is lost, the close still
			// releases whatever was granted.
			maybeOFD = fs.owners.locking(in.NodeId, in.Fh, in.Owner, in.Lk.Pid)
		}
		afterReleases()
		start, length := fcntlRange(&in.Lk)
		r, err := fs.c.SetLk(fs.asOpener(in.Fh, &in.Caller), &jfspb.SetLkRequest{Ino: in.NodeId, Owner: in.Owner, Type: typ,
			Start: start, Len: length, Pid: in.Lk.Pid, Block: block, MaybeOfd: maybeOFD, DelegOk: delegOK}, onHeader)
		if err == nil && r.Errno == 0 && r.Delegated {
			fs.deleg.install(in.NodeId, session.Load(), seq.Load(), func(e *delegIno) { e.setLk(in, typ, false, maybeOFD) })
		} else if err != nil && delegOK && seq.Load() != 0 {
			fs.deleg.lost(in.NodeId, session.Load(), seq.Load())
		}
		done <- fs.status("setlk", err, r.GetErrno())
	}()
	for {
		select {
		case st := <-done:
			if st.Ok() && typ != jfspb.LockType_LOCK_TYPE_UNLOCK {
				fs.invalidate(in.NodeId)
			}
			return st
		case <-cancel:
			cancel = nil // once
			h := <-sent
			go func() {
				if err := fs.c.CancelLockWait(ctx(), h.Session, h.Seq); err != nil {
					fs.log.Warn("cancelling a lock wait failed", "ino", in.NodeId, "error", err)
				}
			}()
		}
	}
}

// localLk answers a lock request on a delegated inode locally
// (delegated.go); ok is false when the request goes to the leader: the
// inode is not delegated, or a blocking request would have to wait, and the
// delegation was given back first.
func (fs *FS) localLk(in *fuse.LkIn, typ jfspb.LockType, block, isFlock bool, afterReleases func()) (st fuse.Status, ok bool) {
	if fs.deleg == nil {
		return 0, false
	}
	afterReleases()
	e := fs.deleg.enter(in.NodeId)
	if e == nil {
		return 0, false
	}
	defer e.mu.Unlock()
	var handled bool
	if isFlock {
		st, handled = e.flock(in, typ, block)
	} else {
		maybeOFD := false
		if typ != jfspb.LockType_LOCK_TYPE_UNLOCK {
			maybeOFD = fs.owners.locking(in.NodeId, in.Fh, in.Owner, in.Lk.Pid)
		}
		st, handled = e.setLk(in, typ, block, maybeOFD)
	}
	if !handled {
		// It would wait: every wait is on the leader.
		if err := fs.deleg.giveBack(e); err != nil {
			return fs.status("setlk", err, 0), true
		}
		return 0, false
	}
	// No cache to drop: the kernel's cache of the inode was dropped at
	// the grant that brought the delegation, and every holder since is on
	// this mount (a lock on another mount recalls the delegation first,
	// and its next grant here goes through the cluster, with the drop).
	return st, true
}

// invalidate drops the kernel's cached data and attributes of ino.
func (fs *FS) invalidate(ino uint64) {
	s := fs.server.Load()
	if s == nil {
		return
	}
	if st := s.InodeNotify(ino, 0, -1); !st.Ok() && st != fuse.ENOENT {
		fs.log.Warn("dropping the kernel's cache failed", "ino", ino, "status", st)
	}
}
