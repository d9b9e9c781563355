package fuse

import (
	"context"
	"errors"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// Delegated locks (DESIGN.md "Lock delegation"). When the cluster
// delegates an inode's locks to this mount's session (a lock request's
// answer says delegated), the mount keeps them in a rangelock.Table of its
// own, the same code the state machine decides with, and answers F_SETLK,
// F_GETLK, flock with LOCK_NB, unlocks, and the releases at close itself,
// with no request. A blocking request that would have to wait is not
// answered here: the delegation is given back first (DelegReturn, with
// every lock the mount holds on the inode, one log entry) and the request
// goes to the leader as without delegation, so every wait, and every
// wait-for edge the deadlock detector sees, is on the leader.
//
// The mount answers locally only while its session surely lives: its
// lease (client.Session.LeaseUntil) on the session the delegation belongs
// to has not run out. Otherwise it gives the delegation back first (which
// the cluster refuses with ESTALE once the session ended: the locks are
// then gone, as every lock of an ended session) and goes to the leader.
//
// The leader recalls a delegation when another request needs the inode;
// the recall stream (client.DelegRecalls) delivers it, and the mount gives
// the delegation back once the local operations on the inode in progress
// are done (they hold its entry's lock; later ones wait for it, and then
// go to the leader).

// leaser is the part of client.Session that delegation needs.
type leaser interface {
	LeaseUntil() (id uint64, until time.Time)
}

// delegTable is the mount's delegated inodes. Safe for concurrent use.
type delegTable struct {
	fs    *FS
	lease leaser

	mu       sync.Mutex
	inos     map[uint64]*delegIno
	recalled map[uint64]uint64 // ino -> session: recalls that came before their delegation's answer

	stopped chan struct{} // closed when the mount stops listening for recalls
}

// delegIno is one delegated inode. mu is held by a local operation on it
// and by its return, for their whole length.
type delegIno struct {
	ino     uint64
	session uint64
	seq     uint64 // of the request whose grant made it: a return names it

	mu   sync.Mutex
	live bool // false once given back or void
	// returning: a return was sent and its outcome is unknown (no answer
	// within the client's retry window). The cluster may have taken the
	// locks already and granted them to others, so the mount answers no
	// more locally; every later operation sends the return again first
	// (naming this delegation, so a late one is harmless) and goes to the
	// leader. Releases still apply to the table: dropping a lock is right
	// whichever copy the cluster ends up with.
	returning bool
	table     *rangelock.Table
	ofd       map[uint64]bool   // POSIX owners whose requests were marked maybe_ofd
	flockPid  map[uint64]uint32 // fh -> pid of its flock
}

func newDelegTable(fs *FS, l leaser) *delegTable {
	return &delegTable{fs: fs, lease: l, inos: map[uint64]*delegIno{}, recalled: map[uint64]uint64{}, stopped: make(chan struct{})}
}

// live returns ino's delegation, locked, if the mount holds one; nil
// (nothing locked) otherwise.
func (d *delegTable) live(ino uint64) *delegIno {
	if d == nil {
		return nil
	}
	d.mu.Lock()
	e := d.inos[ino]
	d.mu.Unlock()
	if e == nil {
		return nil
	}
	e.mu.Lock()
	if !e.live {
		e.mu.Unlock()
		return nil
	}
	return e
}

// enter returns ino's delegation, locked, when the mount may answer for
// it now; nil (nothing held) when the request must go to the leader. A
// delegation whose session's lease ran out is given back first.
func (d *delegTable) enter(ino uint64) *delegIno {
	e := d.live(ino)
	if e == nil {
		return nil
	}
	if id, until := d.lease.LeaseUntil(); e.returning || id != e.session || !time.Now().Before(until) {
		d.giveBack(e)
		e.mu.Unlock()
		return nil
	}
	return e
}

// enterReturning returns ino's delegation, locked, when a return of it
// is outstanding (returning): the caller drops what a release frees from
// its table and sends the release to the cluster too. Nil otherwise.
func (d *delegTable) enterReturning(ino uint64) *delegIno {
	e := d.live(ino)
	if e == nil {
		return nil
	}
	if !e.returning {
		e.mu.Unlock()
		return nil
	}
	return e
}

// install records that ino's locks were delegated to session by the
// answer to its request seq, whose grant do applies to the new table.
func (d *delegTable) install(ino, session, seq uint64, do func(e *delegIno)) {
	e := &delegIno{ino: ino, session: session, seq: seq, live: true, table: rangelock.NewTable(),
		ofd: map[uint64]bool{}, flockPid: map[uint64]uint32{}}
	do(e)
	d.mu.Lock()
	if old := d.inos[ino]; old != nil {
		d.fs.log.Warn("a delegation replaces one the mount still had", "ino", ino, "session", session, "old session", old.session)
	}
	d.inos[ino] = e
	early := d.recalled[ino] == session
	delete(d.recalled, ino)
	var idle []*delegIno
	if len(d.inos) > maxDelegations {
		for _, o := range d.inos {
			if o != e && len(idle) < len(d.inos)-maxDelegations/2 {
				idle = append(idle, o)
			}
		}
	}
	d.mu.Unlock()
	if early {
		go d.recall(session, ino)
	}
	if len(idle) > 0 {
		go d.giveBackIdle(idle)
	}
}

// maxDelegations bounds the delegations a mount keeps: past it, the ones
// that hold no lock are given back (down to half of it), so that a mount
// that locks many files alone, one after the other, does not keep a table
// for each.
const maxDelegations = 4096

// giveBackIdle gives back those of es that hold no lock and that no
// operation is using now.
func (d *delegTable) giveBackIdle(es []*delegIno) {
	for _, e := range es {
		if !e.mu.TryLock() {
			continue
		}
		if e.live && len(e.table.Locks(e.ino)) == 0 && len(e.table.Flocks(e.ino)) == 0 {
			d.giveBack(e)
		}
		e.mu.Unlock()
	}
}

// giveBack returns e to the cluster with its locks, after the inode's
// buffered writes. Called with e.mu held. The delegation ends here when
// the cluster took it back or no longer knows it (its session ended: the
// locks went with it); if the cluster could not be reached it stays, and
// the leader's recall, sent again on the next stream, tries once more.
func (d *delegTable) giveBack(e *delegIno) error {
	d.fs.wb.sync(e.ino)
	req := &jfspb.DelegReturnRequest{Ino: e.ino, Locks: e.locks(), DelegSeq: e.seq}
	// From here the cluster may take the locks: none is answered locally
	// any more until the return is known to be done.
	e.returning = true
	r, err := d.fs.c.DelegReturnAs(context.Background(), e.session, req)
	var en syscall.Errno
	if err == nil && r.Errno != 0 && syscall.Errno(r.Errno) != syscall.ESTALE {
		err = syscall.Errno(r.Errno)
	}
	if err != nil && !(errors.As(err, &en) && en == syscall.ESTALE) {
		d.fs.log.Warn("returning a lock delegation failed", "ino", e.ino, "session", e.session, "error", err)
		return err
	}
	e.live = false
	d.mu.Lock()
	if d.inos[e.ino] == e {
		delete(d.inos, e.ino)
	}
	d.mu.Unlock()
	return nil
}

// locks lists e's locks as DelegReturn and DelegReport carry them: the
// POSIX locks in the table's list order, then the flocks. Called with
// e.mu held.
func (e *delegIno) locks() []*jfspb.DelegLock {
	var out []*jfspb.DelegLock
	for _, l := range e.table.Locks(e.ino) {
		out = append(out, &jfspb.DelegLock{Owner: l.Owner.ID, Type: wireOf(l.Type),
			Start: l.Start, Len: l.Len(), Pid: l.Pid, MaybeOfd: e.ofd[l.Owner.ID]})
	}
	for _, fl := range e.table.Flocks(e.ino) {
		out = append(out, &jfspb.DelegLock{Flock: true, Owner: fl.Owner.ID, Type: wireOf(fl.Type),
			Pid: e.flockPid[fl.Owner.ID]})
	}
	return out
}

// recall gives ino back, as the leader asked of session sid. A recall of a
// delegation whose answer has not arrived yet is remembered, and acted on
// when it does. A return that fails (the cluster out of reach for the
// client's whole retry window) is tried again, with a growing pause, until
// it is taken or the delegation is void: the leader sends a recall once
// per stream, and another request waits for it.
func (d *delegTable) recall(sid, ino uint64) {
	d.mu.Lock()
	e := d.inos[ino]
	if e == nil || e.session != sid {
		d.recalled[ino] = sid
		d.mu.Unlock()
		return
	}
	d.mu.Unlock()
	for pause := 50 * time.Millisecond; ; pause = min(2*pause, time.Second) {
		e.mu.Lock()
		err := error(nil)
		if e.live {
			err = d.giveBack(e)
		}
		e.mu.Unlock()
		if err == nil {
			return
		}
		select {
		case <-time.After(pause):
		case <-d.stopped:
			return
		}
	}
}

// lost is called when the answer to a lock request that offered to take
// the delegation of ino (session's request seq) never came: the cluster
// may have delegated the inode by it, and the mount, which did not learn
// it, would never answer the recall, so another session's request on ino
// would wait as long as the session lives. The delegation that request
// may have made is given back, holding nothing (the caller was told the
// request failed), naming it, so that no other delegation is touched;
// sent once before the request's failure is reported, then, if the
// cluster did not answer, again in the background until it does.
func (d *delegTable) lost(ino, session, seq uint64) {
	d.mu.Lock()
	if d.recalled[ino] == session {
		delete(d.recalled, ino)
	}
	d.mu.Unlock()
	req := &jfspb.DelegReturnRequest{Ino: ino, DelegSeq: seq}
	try := func() bool {
		_, err := d.fs.c.DelegReturnAs(context.Background(), session, req)
		var en syscall.Errno
		return err == nil || (errors.As(err, &en) && en == syscall.ESTALE)
	}
	if try() {
		return
	}
	go func() {
		for pause := 50 * time.Millisecond; !try(); pause = min(2*pause, time.Second) {
			select {
			case <-time.After(pause):
			case <-d.stopped:
				return
			}
		}
	}()
}

// connected is called when a recall stream opens: the leader sends every
// recall it waits for again, so the remembered early ones may go.
func (d *delegTable) connected(uint64) {
	d.mu.Lock()
	clear(d.recalled)
	d.mu.Unlock()
}

// onRecall handles a message of the recall stream: a recall, or a request
// to report the locks held on an inode (jfsctl locks ls).
func (d *delegTable) onRecall(sid uint64, m *jfspb.DelegRecall) {
	switch {
	case m.Ino == 0: // the stream's first message
	case m.ReportId != 0:
		go d.report(sid, m)
	default:
		go d.recall(sid, m.Ino)
	}
}

// report answers a report request with the locks held on m.Ino.
func (d *delegTable) report(sid uint64, m *jfspb.DelegRecall) {
	rep := &jfspb.DelegReportRequest{Session: sid, ReportId: m.ReportId, Ino: m.Ino}
	d.mu.Lock()
	e := d.inos[m.Ino]
	d.mu.Unlock()
	if e != nil && e.session == sid {
		e.mu.Lock()
		if e.live {
			rep.Held, rep.Locks = true, e.locks()
		}
		e.mu.Unlock()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := d.fs.c.DelegReport(ctx, rep); err != nil {
		d.fs.log.Debug("reporting delegated locks failed", "ino", m.Ino, "error", err)
	}
}

// run listens for recalls until ctx ends.
func (d *delegTable) run(ctx context.Context) {
	d.fs.c.DelegRecalls(ctx, d.connected, d.onRecall)
	close(d.stopped)
}

// ---- local answers; each is called with e.mu held ----

// setLk answers F_SETLK, and F_SETLKW that need not wait, locally; handled
// is false when a blocking request would have to wait (the caller gives
// the delegation back and asks the leader).
func (e *delegIno) setLk(in *fuse.LkIn, typ jfspb.LockType, block, maybeOFD bool) (st fuse.Status, handled bool) {
	t := tableType(typ)
	start, length := fcntlRange(&in.Lk)
	r, err := rangelock.NewRange(start, length)
	switch {
	case errors.Is(err, rangelock.ErrOverflow):
		return fuse.Status(syscall.EOVERFLOW), true
	case err != nil:
		return fuse.EINVAL, true
	}
	o := rangelock.Owner{Session: e.session, ID: in.Owner}
	if block && t != rangelock.Unlock {
		if c, err := e.table.Conflicts(e.ino, o, t, r); err != nil || len(c) > 0 {
			return 0, false
		}
	}
	if maybeOFD {
		e.ofd[in.Owner] = true
	}
	c, err := e.table.Set(e.ino, o, t, r, in.Lk.Pid)
	switch {
	case err != nil:
		return fuse.EINVAL, true
	case len(c) > 0:
		return fuse.EAGAIN, true
	}
	return fuse.OK, true
}

// flock answers flock(2) locally, as setLk does.
func (e *delegIno) flock(in *fuse.LkIn, typ jfspb.LockType, block bool) (st fuse.Status, handled bool) {
	t := tableType(typ)
	o := rangelock.Owner{Session: e.session, ID: in.Fh}
	if block && t != rangelock.Unlock {
		if c, err := e.table.FlockConflicts(e.ino, o, t); err != nil || len(c) > 0 {
			return 0, false
		}
	}
	c, err := e.table.Flock(e.ino, o, t)
	switch {
	case err != nil:
		return fuse.EINVAL, true
	case len(c) > 0:
		return fuse.EAGAIN, true
	}
	if t == rangelock.Unlock {
		delete(e.flockPid, in.Fh)
	} else {
		e.flockPid[in.Fh] = in.Lk.Pid
	}
	return fuse.OK, true
}

// getLk answers F_GETLK locally.
func (e *delegIno) getLk(in *fuse.LkIn, typ jfspb.LockType, out *fuse.LkOut) fuse.Status {
	t := tableType(typ)
	start, length := fcntlRange(&in.Lk)
	r, err := rangelock.NewRange(start, length)
	switch {
	case errors.Is(err, rangelock.ErrOverflow):
		return fuse.Status(syscall.EOVERFLOW)
	case err != nil:
		return fuse.EINVAL
	}
	l, found, err := e.table.Test(e.ino, rangelock.Owner{Session: e.session, ID: in.Owner}, t, r)
	switch {
	case err != nil:
		return fuse.EINVAL
	case !found:
		out.Lk = fuse.FileLock{Typ: syscall.F_UNLCK}
		return fuse.OK
	}
	out.Lk = fuse.FileLock{Typ: kernelType(wireOf(l.Type)), Start: uint64(l.Start), End: toEOF, Pid: l.Pid}
	if l.End < rangelock.MaxOffset {
		out.Lk.End = uint64(l.End)
	}
	return fuse.OK
}

// releaseOwner drops the POSIX locks of owner (FLUSH).
func (e *delegIno) releaseOwner(owner uint64) {
	e.table.ReleasePosix(e.ino, rangelock.Owner{Session: e.session, ID: owner})
	delete(e.ofd, owner)
}

// release drops what the RELEASE of fh frees: its flock when flock is
// set, and the locks of its OFD owners.
func (e *delegIno) release(fh uint64, flock bool, owners []uint64) {
	if flock {
		e.table.Flock(e.ino, rangelock.Owner{Session: e.session, ID: fh}, rangelock.Unlock)
		delete(e.flockPid, fh)
	}
	for _, o := range owners {
		e.releaseOwner(o)
	}
}

// tableType converts a wire lock type known to be valid.
func tableType(t jfspb.LockType) rangelock.Type {
	switch t {
	case jfspb.LockType_LOCK_TYPE_READ:
		return rangelock.Read
	case jfspb.LockType_LOCK_TYPE_WRITE:
		return rangelock.Write
	}
	return rangelock.Unlock
}

// wireOf converts a table's lock type to its wire form.
func wireOf(t rangelock.Type) jfspb.LockType {
	switch t {
	case rangelock.Read:
		return jfspb.LockType_LOCK_TYPE_READ
	case rangelock.Write:
		return jfspb.LockType_LOCK_TYPE_WRITE
	}
	return jfspb.LockType_LOCK_TYPE_UNLOCK
}

// releaseDelegated drops, locally, the locks a release of a file of a
// delegated inode frees; false when the inode is not delegated to the
// file's session (the release then goes to the leader as it is).
func (fs *FS) releaseDelegated(p pendingRelease) bool {
	if e := fs.deleg.enterReturning(p.req.Ino); e != nil {
		// Its return is outstanding: the locks are in the mount's table or
		// the cluster's; dropped from both.
		if p.session == 0 || p.session == e.session {
			e.release(p.req.Fh, p.req.ReleaseFlock, p.req.LockOwners)
		}
		e.mu.Unlock()
		return false
	}
	e := fs.deleg.enter(p.req.Ino)
	if e == nil {
		return false
	}
	defer e.mu.Unlock()
	if p.session != 0 && p.session != e.session {
		return false
	}
	e.release(p.req.Fh, p.req.ReleaseFlock, p.req.LockOwners)
	return true
}
