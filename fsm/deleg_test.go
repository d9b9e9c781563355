package fsm

import (
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

const cDelegReturn = jfspb.CommandType_COMMAND_TYPE_DELEG_RETURN

// TestDelegation covers the apply rules of lock delegation: a granted
// request marked delegate delegates the inode only when nobody held or
// waited for a lock on it; the granted lock leaves the table; every lock
// request on a delegated inode is busy (EAGAIN, not stored); a return puts
// the mount's locks back; an ended session's delegation is void.
func TestDelegation(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	g := h.mustCreate(RootIno, "g", true)
	seq := uint64(1000)
	setlk := func(sess uint64, ino, owner uint64, typ jfspb.LockType, start, n int64, deleg bool) *jfspb.SetLkResponse {
		seq++
		return h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: ino, Owner: owner, Type: typ, Start: start, Len: n, Pid: uint32(owner), Delegate: deleg}, sess, seq, 0)).(*jfspb.SetLkResponse)
	}
	flock := func(sess uint64, ino, fh uint64, typ jfspb.LockType, deleg bool) *jfspb.FlockResponse {
		seq++
		return h.mustApplyEntry(h.entry(cFlock, &jfspb.FlockRequest{Ino: ino, Fh: fh, Type: typ, Pid: 1, Delegate: deleg}, sess, seq, 0)).(*jfspb.FlockResponse)
	}
	ret := func(sess, ino uint64, locks ...*jfspb.DelegLock) *jfspb.DelegReturnResponse {
		seq++
		return h.mustApplyEntry(h.entry(cDelegReturn, &jfspb.DelegReturnRequest{Ino: ino, Locks: locks}, sess, seq, 0)).(*jfspb.DelegReturnResponse)
	}

	// Alone on f: delegated, and the lock is not in the cluster's table.
	r := setlk(h.sess, f.Ino, 1, lkWr, 0, 10, true)
	mustOK(t, r)
	if !r.Delegated {
		t.Fatalf("alone: not delegated: %v", r)
	}
	if got := h.f.Delegation(f.Ino); got != h.sess {
		t.Fatalf("delegation %d, want %d", got, h.sess)
	}
	if ls := h.f.Locks(&jfspb.ListLocksRequest{Ino: f.Ino}).Locks; len(ls) != 0 {
		t.Fatalf("delegated lock still in the table: %v", ls)
	}
	// Every lock request on f is busy, from anyone, and not stored: the
	// same seq applied again after the return is answered anew.
	seq++
	busySeq := seq
	busy := h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 5, Type: lkRd, Start: 0, Len: 1}, other, busySeq, 0)).(*jfspb.SetLkResponse)
	mustErrno(t, busy, syscall.EAGAIN)
	if !busy.DelegBusy {
		t.Fatalf("other session's lock on a delegated inode: %v", busy)
	}
	if r := setlk(h.sess, f.Ino, 2, lkRd, 50, 1, false); !r.DelegBusy {
		t.Fatalf("holder's own request reaching the cluster: %v", r)
	}
	if r := flock(other, f.Ino, 9, lkRd, false); !r.DelegBusy {
		t.Fatalf("flock on a delegated inode: %v", r)
	}
	if r := h.f.GetLk(&jfspb.GetLkRequest{Session: other, Ino: f.Ino, Owner: 5, Type: lkRd, Start: 0, Len: 1}); !r.DelegBusy {
		t.Fatalf("getlk on a delegated inode: %v", r)
	}
	seq++
	if r := h.mustApplyEntry(h.entry(cReleaseOwn, &jfspb.ReleaseLockOwnerRequest{Ino: f.Ino, Owner: 1}, h.sess, seq, 0)).(*jfspb.ReleaseLockOwnerResponse); !r.DelegBusy {
		t.Fatalf("holder's release of an owner on a delegated inode: %v", r)
	}

	// A return by another session, or with conflicting locks, changes nothing.
	if r := ret(other, f.Ino); r.Returned {
		t.Fatalf("another session returned the delegation: %v", r)
	}
	mustErrno(t, ret(h.sess, f.Ino,
		&jfspb.DelegLock{Owner: 1, Type: lkWr, Start: 0, Len: 10},
		&jfspb.DelegLock{Owner: 2, Type: lkWr, Start: 5, Len: 1}), syscall.EINVAL)
	if h.f.Delegation(f.Ino) != h.sess {
		t.Fatal("a refused return ended the delegation")
	}
	// The holder's return puts its locks (as its mount has them) back.
	r2 := ret(h.sess, f.Ino,
		&jfspb.DelegLock{Owner: 1, Type: lkWr, Start: 0, Len: 10, Pid: 1},
		&jfspb.DelegLock{Owner: 3, Type: lkRd, Start: 20, Len: 0, Pid: 3, MaybeOfd: true},
		&jfspb.DelegLock{Flock: true, Owner: 7, Type: lkRd, Pid: 7})
	mustOK(t, r2)
	if !r2.Returned || h.f.Delegation(f.Ino) != 0 {
		t.Fatalf("return: %v, delegation %d", r2, h.f.Delegation(f.Ino))
	}
	// The same seq as before is applied anew, and conflicts with the
	// returned lock, which F_GETLK shows.
	again := h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 5, Type: lkRd, Start: 0, Len: 1}, other, busySeq, 0)).(*jfspb.SetLkResponse)
	mustErrno(t, again, syscall.EAGAIN)
	if again.DelegBusy || len(again.Conflicts) != 1 || again.Conflicts[0].Owner != 1 {
		t.Fatalf("after the return: %v", again)
	}
	if gl := h.f.GetLk(&jfspb.GetLkRequest{Session: other, Ino: f.Ino, Owner: 5, Type: lkWr, Start: 25, Len: 1}); gl.Type != lkRd || gl.Holder.GetOwner() != 3 || gl.Pid != 3 {
		t.Fatalf("getlk after the return: %v", gl)
	}
	if r := flock(other, f.Ino, 9, lkWr, false); r.Errno != int32(syscall.EAGAIN) || r.DelegBusy {
		t.Fatalf("flock against a returned flock: %v", r)
	}
	// Not delegated while others hold locks: f has locks now.
	if r := setlk(h.sess, f.Ino, 4, lkWr, 10, 5, true); r.Delegated || r.Errno != 0 {
		t.Fatalf("delegated with locks held: %v", r)
	}

	// flock delegation on g, and a waiter keeps it from being delegated.
	fr := flock(h.sess, g.Ino, 3, lkWr, true)
	mustOK(t, fr)
	if !fr.Delegated {
		t.Fatalf("flock alone: not delegated: %v", fr)
	}
	mustOK(t, ret(h.sess, g.Ino, &jfspb.DelegLock{Flock: true, Owner: 3, Type: lkWr, Pid: 1}))
	seq++
	q := h.mustApplyEntry(h.entry(cFlock, &jfspb.FlockRequest{Ino: g.Ino, Fh: 8, Type: lkWr, Queue: true}, other, seq, 0)).(*jfspb.FlockResponse)
	if !q.Queued {
		t.Fatalf("waiter not queued: %v", q)
	}
	mustOK(t, flock(h.sess, g.Ino, 3, lkUn, false)) // grants the waiter
	if r := flock(h.sess, g.Ino, 4, lkRd, true); r.Delegated {
		t.Fatalf("delegated while another session holds a flock: %v", r)
	}

	// An ended session's delegation is void, and a replica agrees.
	h2 := h.mustCreate(RootIno, "h", true)
	if r := setlk(other, h2.Ino, 1, lkWr, 0, 0, true); !r.Delegated {
		t.Fatalf("other alone on h: %v", r)
	}
	if ds := h.f.Delegations(0); len(ds) != 1 || ds[0] != (Deleg{Ino: h2.Ino, Session: other}) {
		t.Fatalf("delegations %v", ds)
	}
	rep := h.mustReplica(Options{})
	if rep.Delegation(h2.Ino) != other {
		t.Fatal("the snapshot lost the delegation")
	}
	mustOK(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: other}, 0, 0, 0)))
	if h.f.Delegation(h2.Ino) != 0 || len(h.f.Delegations(other)) != 0 {
		t.Fatal("an expired session's delegation lives on")
	}
	if r := setlk(h.sess, h2.Ino, 1, lkWr, 0, 0, false); r.Errno != 0 || r.DelegBusy {
		t.Fatalf("lock after the holder expired: %v", r)
	}
}

// TestDelegationEvictionFence: an eviction that names a fence keeps every
// lock request on the evicted session's delegated inodes busy until an
// entry stamped at or after the fence, in the state (a new leader reads
// it), and the fence goes once passed. The harness stamps each entry one
// second after the one before.
func TestDelegationEvictionFence(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	seq := uint64(1000)
	setlk := func(sess uint64, deleg bool) *jfspb.SetLkResponse {
		seq++
		return h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr, Delegate: deleg}, sess, seq, 0)).(*jfspb.SetLkResponse)
	}
	if r := setlk(other, true); !r.Delegated {
		t.Fatalf("not delegated: %v", r)
	}
	until := h.now + 2.5e9 // the eviction's entry is stamped h.now+1e9
	mustOK(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: other, DelegFenceUntilNs: until}, 0, 0, 0)))
	if h.f.Delegation(f.Ino) != 0 || h.f.DelegFence(f.Ino) != until {
		t.Fatalf("after the eviction: delegation %d, fence %d", h.f.Delegation(f.Ino), h.f.DelegFence(f.Ino))
	}
	if r := setlk(h.sess, true); !r.DelegBusy || r.Delegated { // stamped until-0.5s
		t.Fatalf("a lock inside the fence: %v", r)
	}
	if r := setlk(h.sess, false); r.Errno != 0 || r.DelegBusy { // stamped until+0.5s
		t.Fatalf("a lock past the fence: %v", r)
	}
	if h.f.DelegFence(f.Ino) != 0 {
		t.Fatal("a passed fence stays")
	}
}

// TestDelegReturnNamesItsDelegation: a return whose answer was lost and
// that the mount sends again after the inode was returned and delegated to
// the same session anew names the first delegation; it must leave the new
// one (whose locks are in the mount's new table) alone. Without the name,
// the late return ended the new delegation with the old locks, and another
// session was granted a lock the mount still answered for locally.
func TestDelegReturnNamesItsDelegation(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	seq := uint64(1000)
	apply := func(sess uint64, typ jfspb.CommandType, req proto.Message) proto.Message {
		seq++
		return h.mustApplyEntry(h.entry(typ, req, sess, seq, 0))
	}
	mustDelegated := func(what string) uint64 {
		t.Helper()
		r := apply(h.sess, cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr, Start: 0, Len: 10, Pid: 1, Delegate: true}).(*jfspb.SetLkResponse)
		mustOK(t, r)
		if !r.Delegated {
			t.Fatalf("%s: not delegated: %v", what, r)
		}
		return seq
	}
	first := mustDelegated("first")
	// Given back holding nothing (the owner unlocked locally).
	if r := apply(h.sess, cDelegReturn, &jfspb.DelegReturnRequest{Ino: f.Ino, DelegSeq: first}).(*jfspb.DelegReturnResponse); !r.Returned {
		t.Fatalf("return: %v", r)
	}
	second := mustDelegated("second")
	// The first return again, under a new seq, now with a lock it held then.
	late := apply(h.sess, cDelegReturn, &jfspb.DelegReturnRequest{Ino: f.Ino, DelegSeq: first,
		Locks: []*jfspb.DelegLock{{Owner: 7, Type: lkRd, Start: 100, Len: 1, Pid: 7}}}).(*jfspb.DelegReturnResponse)
	if late.Returned || h.f.Delegation(f.Ino) != h.sess {
		t.Fatalf("a late return of delegation %d ended delegation %d: %v", first, second, late)
	}
	if r := apply(other, cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 5, Type: lkWr, Start: 0, Len: 1, Pid: 5}).(*jfspb.SetLkResponse); !r.DelegBusy {
		t.Fatalf("another session's lock while the mount holds the new delegation: %v", r)
	}
	if r := apply(h.sess, cDelegReturn, &jfspb.DelegReturnRequest{Ino: f.Ino, DelegSeq: second,
		Locks: []*jfspb.DelegLock{{Owner: 1, Type: lkWr, Start: 0, Len: 10, Pid: 1}}}).(*jfspb.DelegReturnResponse); !r.Returned {
		t.Fatalf("return of the new delegation: %v", r)
	}
	r := apply(other, cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 5, Type: lkWr, Start: 0, Len: 1, Pid: 5}).(*jfspb.SetLkResponse)
	mustErrno(t, r, syscall.EAGAIN)
	if r.DelegBusy {
		t.Fatalf("busy after the return: %v", r)
	}
}
