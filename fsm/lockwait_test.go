package fsm

import (
	"slices"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

const cEndWait = jfspb.CommandType_COMMAND_TYPE_END_LOCK_WAIT

// waitHarness is a harness that records the wait ends the state machine
// reports.
type waitHarness struct {
	*harness
	ends []WaitEnd
}

func mustWaitHarness(t *testing.T) *waitHarness {
	h := &waitHarness{harness: mustHarness(t, Options{})}
	h.f.SetWaitListener(func(e []WaitEnd) { h.ends = append(h.ends, e...) })
	return h
}

// takeEnds returns and forgets the ends reported so far.
func (h *waitHarness) takeEnds() []WaitEnd {
	e := h.ends
	h.ends = nil
	return e
}

func (h *waitHarness) setlkw(sess, seq, ino, owner uint64, typ jfspb.LockType) *jfspb.SetLkResponse {
	h.t.Helper()
	req := &jfspb.SetLkRequest{Ino: ino, Owner: owner, Type: typ, Pid: uint32(owner), Block: true, Queue: true}
	return h.mustApplyEntry(h.entry(cSetLk, req, sess, seq, 0)).(*jfspb.SetLkResponse)
}

func mustQueuedResp(t *testing.T, r *jfspb.SetLkResponse) {
	t.Helper()
	if !r.Queued || r.Errno != int32(syscall.EINPROGRESS) {
		t.Fatalf("got %v, want queued", r)
	}
}

// TestHandOffInOneEntry: waiters queue in order; the unlock's entry grants
// the first, reports it, and stores the grant as its answer, so a retry
// of the request (at a new leader) gets the grant; a retry while queued
// gets "queued" and queues nothing twice.
func TestHandOffInOneEntry(t *testing.T) {
	h := mustWaitHarness(t)
	b, c := h.mustRegister("client-b"), h.mustRegister("client-c")
	f := h.mustCreate(RootIno, "f", true)
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr}))
	mustQueuedResp(t, h.setlkw(b, 1, f.Ino, 2, lkWr))
	mustQueuedResp(t, h.setlkw(c, 1, f.Ino, 3, lkWr))
	mustQueuedResp(t, h.setlkw(b, 1, f.Ino, 2, lkWr)) // a retry
	if ws := h.f.Waits(f.Ino); len(ws) != 2 || ws[0].Session != b || ws[1].Session != c {
		t.Fatalf("queue %+v, want b then c", ws)
	}
	if e := h.takeEnds(); len(e) != 0 {
		t.Fatalf("ends before the unlock: %v", e)
	}
	applied := h.f.AppliedIndex()
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkUn}))
	if got := h.f.AppliedIndex() - applied; got != 1 {
		t.Fatalf("the hand-off took %d entries", got)
	}
	if e := h.takeEnds(); !slices.Equal(e, []WaitEnd{{Session: b, Seq: 1}}) {
		t.Fatalf("ends %v, want b's grant", e)
	}
	// b holds the lock now: c still waits, and a retry of b's request gets
	// the grant.
	if r := h.f.GetLk(&jfspb.GetLkRequest{Session: h.sess, Ino: f.Ino, Owner: 9, Type: lkWr}); r.GetHolder().GetSession() != b {
		t.Fatalf("holder %v, want session %d", r.GetHolder(), b)
	}
	mustOK(t, h.setlkw(b, 1, f.Ino, 2, lkWr))
	if ws := h.f.Waits(f.Ino); len(ws) != 1 || ws[0].Session != c {
		t.Fatalf("queue %+v, want c", ws)
	}
	// Closing b's lock owner hands on to c.
	h.mustApplyEntry(h.entry(cReleaseOwn, &jfspb.ReleaseLockOwnerRequest{Ino: f.Ino, Owner: 2}, b, 2, 0))
	if e := h.takeEnds(); !slices.Equal(e, []WaitEnd{{Session: c, Seq: 1}}) {
		t.Fatalf("ends %v, want c's grant", e)
	}
	if ws := h.f.Waits(0); len(ws) != 0 {
		t.Fatalf("waits left: %+v", ws)
	}
}

// TestEndLockWait: a cancelled wait answers EINTR, for good, and lets the
// waiters behind it in; a wait granted first keeps its grant (ENOENT).
func TestEndLockWait(t *testing.T) {
	h := mustWaitHarness(t)
	b, c := h.mustRegister("client-b"), h.mustRegister("client-c")
	f := h.mustCreate(RootIno, "f", true)
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkRd}))
	mustQueuedResp(t, h.setlkw(b, 1, f.Ino, 2, lkWr)) // behind the reader
	mustQueuedResp(t, h.setlkw(c, 1, f.Ino, 3, lkRd)) // behind the writer
	end := func(sess, seq uint64, e syscall.Errno) *jfspb.EndLockWaitResponse {
		return h.mustApplyEntry(h.entry(cEndWait, &jfspb.EndLockWaitRequest{Session: sess, Seq: seq, Errno: int32(e)}, 0, 0, 0)).(*jfspb.EndLockWaitResponse)
	}
	mustErrno(t, end(b, 1, syscall.EIO), syscall.EINVAL)
	mustOK(t, end(b, 1, syscall.EINTR))
	if e := h.takeEnds(); !slices.Equal(e, []WaitEnd{{Session: b, Seq: 1, Errno: syscall.EINTR}, {Session: c, Seq: 1}}) {
		t.Fatalf("ends %v, want b EINTR then c granted", e)
	}
	mustErrno(t, h.setlkw(b, 1, f.Ino, 2, lkWr), syscall.EINTR) // the retry
	mustErrno(t, end(c, 1, syscall.EINTR), syscall.ENOENT)      // granted first
	mustOK(t, h.setlkw(c, 1, f.Ino, 3, lkRd))
}

// TestSessionEndDropsWaits: an expired session's waits end with ESTALE and
// are never granted; its locks go to the waiters of others.
func TestSessionEndDropsWaits(t *testing.T) {
	h := mustWaitHarness(t)
	b, c := h.mustRegister("client-b"), h.mustRegister("client-c")
	f := h.mustCreate(RootIno, "f", true)
	g := h.mustCreate(RootIno, "g", true)
	h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 2, Type: lkWr}, b, 1, 0))
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: g.Ino, Owner: 1, Type: lkWr}))
	mustQueuedResp(t, h.setlkw(c, 1, f.Ino, 3, lkWr)) // waits for b
	mustQueuedResp(t, h.setlkw(b, 2, g.Ino, 2, lkWr)) // b waits too
	mustOK(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: b}, 0, 0, 0)))
	if e := h.takeEnds(); !slices.Equal(e, []WaitEnd{{Session: b, Seq: 2, Errno: syscall.ESTALE}, {Session: c, Seq: 1}}) {
		t.Fatalf("ends %v, want b's wait ESTALE and c granted", e)
	}
	// g's holder unlocks: nothing is granted to the fenced session.
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: g.Ino, Owner: 1, Type: lkUn}))
	if e := h.takeEnds(); len(e) != 0 {
		t.Fatalf("ends %v after the unlock of g", e)
	}
	if r := h.f.GetLk(&jfspb.GetLkRequest{Session: h.sess, Ino: g.Ino, Owner: 9, Type: lkWr}); r.Type != lkUn {
		t.Fatalf("g is held: %v", r)
	}
}

// TestFlockWaits: a queued flock is granted by the unlock; a shared waiter
// may not overtake a queued exclusive one; removing the file ends its
// waits with ENOENT.
func TestFlockWaits(t *testing.T) {
	h := mustWaitHarness(t)
	b, c := h.mustRegister("client-b"), h.mustRegister("client-c")
	f := h.mustCreate(RootIno, "f", false)
	flockw := func(sess, seq, fh uint64, typ jfspb.LockType) *jfspb.FlockResponse {
		req := &jfspb.FlockRequest{Ino: f.Ino, Fh: fh, Type: typ, Pid: uint32(fh), Block: true, Queue: true}
		return h.mustApplyEntry(h.entry(cFlock, req, sess, seq, 0)).(*jfspb.FlockResponse)
	}
	mustOK(t, h.do(cFlock, &jfspb.FlockRequest{Ino: f.Ino, Fh: 1, Type: lkRd}))
	if r := flockw(b, 1, 2, lkWr); !r.Queued {
		t.Fatalf("exclusive flock over a shared one: %v, want queued", r)
	}
	if r := flockw(c, 1, 3, lkRd); !r.Queued {
		t.Fatalf("shared flock behind a queued exclusive one: %v, want queued", r)
	}
	mustOK(t, h.do(cFlock, &jfspb.FlockRequest{Ino: f.Ino, Fh: 1, Type: lkUn}))
	if e := h.takeEnds(); !slices.Equal(e, []WaitEnd{{Session: b, Seq: 1}}) {
		t.Fatalf("ends %v, want b's grant", e)
	}
	if fl := h.f.Locks(&jfspb.ListLocksRequest{Ino: f.Ino}).Locks; len(fl) != 1 || fl[0].Owner.Session != b || fl[0].Pid != 2 {
		t.Fatalf("locks %v, want b's flock with its pid", fl)
	}
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	if e := h.takeEnds(); !slices.Equal(e, []WaitEnd{{Session: c, Seq: 1, Errno: syscall.ENOENT}}) {
		t.Fatalf("ends %v, want c's wait ENOENT", e)
	}
}

// TestWaitsReplicate: replicas that apply the same entries hold the same
// queues and reach the same digest; the queues survive a reopen.
func TestWaitsReplicate(t *testing.T) {
	h := mustWaitHarness(t)
	r := h.mustReplica(Options{})
	b := h.mustRegister("client-b")
	f := h.mustCreate(RootIno, "f", true)
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr}))
	mustQueuedResp(t, h.setlkw(b, 1, f.Ino, 2, lkWr))
	mustQueuedResp(t, h.setlkw(b, 2, f.Ino, 3, lkRd))
	if a, b := h.f.Waits(0), r.Waits(0); !slices.Equal(a, b) || len(a) != 2 {
		t.Fatalf("leader %+v, replica %+v", a, b)
	}
	ia, da, err := h.f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ib, db, err := r.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if ia != ib || da != db {
		t.Fatal("digests differ")
	}
	h.mustReopen()
	if ws := h.f.Waits(0); len(ws) != 2 {
		t.Fatalf("after reopen: %+v", ws)
	}
}
