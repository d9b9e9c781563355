package cluster_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// ofdLock sends SetLk for lock owner owner of process pid, marked maybe_ofd
// as a mount marks a request whose pid locked through another owner.
func (c *lockClient) ofdLock(ctx context.Context, ino, owner uint64, pid uint32, typ jfspb.LockType, block, maybeOFD bool) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		r, err := c.srv.SetLk(ctx, &jfspb.SetLkRequest{Header: c.header(), Ino: ino, Owner: owner, Type: typ,
			Start: 0, Len: 1, Pid: pid, Block: block, MaybeOfd: maybeOFD})
		ch <- waitResult{errno: syscall.Errno(r.GetErrno()), err: err}
	}()
	return ch
}

func mustOK(t *testing.T, ch <-chan waitResult, what string) {
	t.Helper()
	if r := mustGet(t, ch, what); r.err != nil || r.errno != 0 {
		t.Fatalf("%s: %v %v", what, r.err, r.errno)
	}
}

// TestMaybeOFDWaitsAreNotMerged: two lock owners of one process on one
// mount are not one node of the wait-for graph when the mount says they may
// be open files (OFD locks): a thread waiting through one for the other's
// lock waits and is granted, where an unmarked wait is refused as the
// process waiting for itself. A POSIX wait that would close a cycle only
// through a maybe-OFD wait is not refused either, as on Linux.
func TestMaybeOFDWaitsAreNotMerged(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a := newLockClient(t, leader, "hostA")
	ctx := context.Background()
	x, y := a.mustCreate("x"), a.mustCreate("y")
	const p, q = 7, 8 // pids
	mustOK(t, a.ofdLock(ctx, x, 1001, p, wr, false, false), "the first open file's lock")

	if r := mustGet(t, a.ofdLock(ctx, x, 1002, p, wr, true, false), "unmarked wait"); r.errno != syscall.EDEADLK {
		t.Fatalf("an unmarked wait of the same process for its own lock: %v %v, want EDEADLK", r.err, r.errno)
	}
	w := a.ofdLock(ctx, x, 1002, p, wr, true, true)
	mustStillWaiting(t, a, w, x, 1002, "a maybe-OFD wait for another open file of the same process")
	mustOK(t, a.ofdLock(ctx, x, 1001, p, un, false, false), "the first open file's unlock")
	mustOK(t, w, "the maybe-OFD wait after the unlock")

	// Open file 1002 (process p) holds x and waits for y, which process q
	// holds; q then waits for x.
	mustOK(t, a.ofdLock(ctx, y, q, q, wr, false, false), "q's lock on y")
	wf := a.ofdLock(ctx, y, 1002, p, wr, true, true)
	mustStillWaiting(t, a, wf, y, 1002, "the open file waiting for y")
	qctx, cancel := context.WithCancel(ctx)
	wq := a.ofdLock(qctx, x, q, q, wr, true, false)
	mustStillWaiting(t, a, wq, x, q, "q waiting for x behind a maybe-OFD wait")
	cancel()
	mustGet(t, wq, "q's cancelled wait")
	mustOK(t, a.ofdLock(ctx, y, q, q, un, false, false), "q's unlock of y")
	mustOK(t, wf, "the open file's wait for y")
}

// TestOFDMarksAreBounded: the leader forgets an owner's maybe-OFD mark once
// the owner holds no lock and waits for none, so requests of many short-
// lived open files (refused, or locked and unlocked) do not pile up marks.
// An owner that holds a lock keeps its mark.
func TestOFDMarksAreBounded(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a := newLockClient(t, leader, "hostA")
	ctx := context.Background()
	x := a.mustCreate("x")
	const p = 7
	marks := func(want int, what string) {
		t.Helper()
		first := cluster.OFDMarks(leader)
		// Well within the session TTL (30s), whose end would drop them all.
		deadline := time.Now().Add(20 * time.Second)
		for cluster.OFDMarks(leader) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d owners marked maybe-OFD (%d at first), want %d", what, cluster.OFDMarks(leader), first, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	mustOK(t, a.ofdLock(ctx, x, 1001, p, wr, false, true), "the holder's lock")
	marks(1, "the holder's lock")
	for o := uint64(2000); o < 2100; o++ {
		if r := mustGet(t, a.ofdLock(ctx, x, o, p, wr, false, true), "a refused lock"); r.err != nil || r.errno != syscall.EAGAIN {
			t.Fatalf("owner %d's lock: %v %v, want EAGAIN", o, r.err, r.errno)
		}
	}
	marks(1, "100 refused requests of other owners")
	// A lock taken and released.
	mustOK(t, a.ofdLock(ctx, x, 1001, p, un, false, false), "the holder's unlock")
	mustOK(t, a.ofdLock(ctx, x, 3000, p, wr, false, true), "another owner's lock")
	mustOK(t, a.ofdLock(ctx, x, 3000, p, un, false, false), "its unlock")
	marks(0, "every lock released")
}
