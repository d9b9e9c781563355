package cluster_test

import (
	"context"
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// lockClient is one session talking to a node's services in process, the
// way a mount would.
type lockClient struct {
	t       testing.TB
	srv     *cluster.Server
	session uint64
	host    string
	mu      sync.Mutex
	seq     uint64
}

func newLockClient(t testing.TB, n *cluster.Node, host string) *lockClient {
	t.Helper()
	s := cluster.NewServer(n)
	r, err := s.Register(context.Background(), &jfspb.RegisterRequest{Host: host, MountPoint: "/mnt", ClientId: host + t.Name()})
	if err != nil || r.Errno != 0 {
		t.Fatalf("register %s: %v %v", host, err, r)
	}
	return &lockClient{t: t, srv: s, session: r.Session, host: host}
}

func (c *lockClient) header() *jfspb.Header {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.seq++
	return &jfspb.Header{Session: c.session, Seq: c.seq, Cred: &jfspb.Cred{}}
}

func (c *lockClient) mustCreate(name string) uint64 {
	c.t.Helper()
	r, err := c.srv.Create(context.Background(), &jfspb.CreateRequest{Header: c.header(), Parent: 1, Name: []byte(name),
		Mode: 0o644, Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
	if err != nil || r.Errno != 0 {
		c.t.Fatalf("create %s: %v %v", name, err, r)
	}
	return r.Attr.Ino
}

// setlk sends F_SETLK (block false) or F_SETLKW for process pid, whose lock
// owner is pid too, over [start, start+len).
func (c *lockClient) setlk(ctx context.Context, ino uint64, pid uint32, typ jfspb.LockType, start, length int64, block bool) (syscall.Errno, error) {
	r, err := c.srv.SetLk(ctx, &jfspb.SetLkRequest{Header: c.header(), Ino: ino, Owner: uint64(pid), Type: typ,
		Start: start, Len: length, Pid: pid, Block: block})
	if err != nil {
		return 0, err
	}
	return syscall.Errno(r.Errno), nil
}

func (c *lockClient) mustLock(ino uint64, pid uint32, typ jfspb.LockType, start, length int64) {
	c.t.Helper()
	if e, err := c.setlk(context.Background(), ino, pid, typ, start, length, false); err != nil || e != 0 {
		c.t.Fatalf("%s pid %d lock %v [%d,+%d): %v %v", c.host, pid, typ, start, length, err, e)
	}
}

const (
	rd = jfspb.LockType_LOCK_TYPE_READ
	wr = jfspb.LockType_LOCK_TYPE_WRITE
	un = jfspb.LockType_LOCK_TYPE_UNLOCK
)

// waitResult is the outcome of a blocking request run in the background.
type waitResult struct {
	errno syscall.Errno
	err   error
	at    time.Time
}

func (c *lockClient) setlkwAsync(ctx context.Context, ino uint64, pid uint32, typ jfspb.LockType, start, length int64) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		e, err := c.setlk(ctx, ino, pid, typ, start, length, true)
		ch <- waitResult{e, err, time.Now()}
	}()
	return ch
}

// mustStillWaiting waits until the leader lists c's request on ino by
// owner pid among its waiters, and checks that the request has not
// returned: it is queued, neither granted nor refused.
func mustStillWaiting(t *testing.T, c *lockClient, ch <-chan waitResult, ino uint64, pid uint32, what string) {
	t.Helper()
	notReturned := func() {
		t.Helper()
		select {
		case r := <-ch:
			t.Fatalf("%s returned %v %v, want it still waiting", what, r.errno, r.err)
		default:
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for !c.isWaiting(ino, pid) {
		notReturned()
		if time.Now().After(deadline) {
			t.Fatalf("%s: not among the leader's waiters after 30s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling the leader's waiters
	}
	notReturned()
}

// mustQueued waits until the leader lists c's request on ino by owner pid
// among its waiters.
func mustQueued(t *testing.T, c *lockClient, ino uint64, pid uint32, what string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !c.isWaiting(ino, pid) {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not among the leader's waiters after 30s", what)
		}
		time.Sleep(5 * time.Millisecond) // polling the leader's waiters
	}
}

// isWaiting reports whether the leader lists a waiting request of c on ino
// by lock owner pid (the kit locks with owner = pid, or the owner given).
func (c *lockClient) isWaiting(ino uint64, pid uint32) bool {
	r, err := c.srv.ListLocks(context.Background(), &jfspb.ListLocksRequest{Ino: ino, Session: c.session})
	if err != nil {
		return false
	}
	for _, l := range r.Locks {
		if l.Waiting && l.GetOwner().GetOwner() == uint64(pid) {
			return true
		}
	}
	return false
}

func mustGet(t *testing.T, ch <-chan waitResult, what string) waitResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s still waiting after 30s", what)
	}
	return waitResult{}
}

// TestBlockingWaitGranted: F_SETLKW waits while another host holds the
// range and returns as soon as the holder unlocks.
func TestBlockingWaitGranted(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	a.mustLock(ino, 100, wr, 0, 10)
	w := b.setlkwAsync(context.Background(), ino, 200, wr, 5, 10)
	mustStillWaiting(t, b, w, ino, 200, "F_SETLKW over a held range")
	// Locks elsewhere in the file do not wake it.
	a.mustLock(ino, 100, wr, 100, 10)
	mustStillWaiting(t, b, w, ino, 200, "F_SETLKW after an unrelated lock")
	unlocked := time.Now()
	a.mustLock(ino, 100, un, 0, 0)
	r := mustGet(t, w, "F_SETLKW after unlock")
	if r.err != nil || r.errno != 0 {
		t.Fatalf("F_SETLKW: %v %v", r.err, r.errno)
	}
	t.Logf("woken %v after the unlock returned", r.at.Sub(unlocked))
	if e, _ := a.setlk(context.Background(), ino, 100, wr, 5, 1, false); e != syscall.EAGAIN {
		t.Fatalf("after the grant, A's F_SETLK over B's range: %v, want EAGAIN", e)
	}
}

// TestDeadlockAcrossHosts: A holds X and waits for Y, B holds Y; B asking
// for X would close the cycle: EDEADLK at once, and A still waits.
func TestDeadlockAcrossHosts(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	x, y := a.mustCreate("x"), a.mustCreate("y")
	a.mustLock(x, 1, wr, 0, 0)
	b.mustLock(y, 2, wr, 0, 0)
	wa := a.setlkwAsync(context.Background(), y, 1, wr, 0, 0)
	mustStillWaiting(t, a, wa, y, 1, "A waiting for Y")
	e, err := b.setlk(context.Background(), x, 2, wr, 0, 0, true)
	if err != nil || e != syscall.EDEADLK {
		t.Fatalf("B F_SETLKW on X: %v %v, want EDEADLK", err, e)
	}
	mustStillWaiting(t, a, wa, y, 1, "A after B's EDEADLK")
	b.mustLock(y, 2, un, 0, 0)
	if r := mustGet(t, wa, "A after B unlocks Y"); r.err != nil || r.errno != 0 {
		t.Fatalf("A: %v %v", r.err, r.errno)
	}
}

// TestDeadlockCycles: rings of 3 and 20 processes on as many hosts; each
// holds its file and waits for the next one's; the last wait closes the
// ring and is refused; nobody else is refused.
func TestDeadlockCycles(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	for _, n := range []int{3, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			var clients []*lockClient
			var files []uint64
			for i := 0; i < n; i++ {
				cl := newLockClient(t, leader, fmt.Sprintf("ring%d-host%d", n, i))
				clients = append(clients, cl)
				files = append(files, cl.mustCreate(fmt.Sprintf("ring%d-%d", n, i)))
				cl.mustLock(files[i], uint32(1000+i), wr, 0, 0)
			}
			var waits []<-chan waitResult
			for i := 0; i < n-1; i++ {
				waits = append(waits, clients[i].setlkwAsync(context.Background(), files[i+1], uint32(1000+i), wr, 0, 0))
			}
			for i, w := range waits {
				mustStillWaiting(t, clients[i], w, files[i+1], uint32(1000+i), fmt.Sprintf("process %d", i))
			}
			e, err := clients[n-1].setlk(context.Background(), files[0], uint32(1000+n-1), wr, 0, 0, true)
			if err != nil || e != syscall.EDEADLK {
				t.Fatalf("closing wait: %v %v, want EDEADLK", err, e)
			}
			// Unwind: the last releases its file, and the chain drains.
			clients[n-1].mustLock(files[n-1], uint32(1000+n-1), un, 0, 0)
			for i := n - 2; i >= 0; i-- {
				if r := mustGet(t, waits[i], fmt.Sprintf("process %d", i)); r.err != nil || r.errno != 0 {
					t.Fatalf("process %d: %v %v", i, r.err, r.errno)
				}
				clients[i].mustLock(files[i], uint32(1000+i), un, 0, 0)
				clients[i].mustLock(files[i+1], uint32(1000+i), un, 0, 0)
			}
		})
	}
}

// TestQueueFIFONoFalseDeadlock: many processes queue on one lock; none is
// refused, and they are granted in arrival order; a writer waiting behind
// a reader is not overtaken by readers that come later.
func TestQueueFIFONoFalseDeadlock(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	holder := newLockClient(t, leader, "holder")
	ino := holder.mustCreate("f")
	holder.mustLock(ino, 1, wr, 0, 0)
	const n = 12
	var order []int
	var mu sync.Mutex
	var wg sync.WaitGroup
	waiters := make([]*lockClient, n)
	for i := 0; i < n; i++ {
		waiters[i] = newLockClient(t, leader, fmt.Sprintf("w%d", i))
	}
	for i := 0; i < n; i++ {
		wg.Add(1)
		ch := waiters[i].setlkwAsync(context.Background(), ino, uint32(10+i), wr, 0, 0)
		go func(i int) {
			defer wg.Done()
			r := <-ch
			if r.err != nil || r.errno != 0 {
				t.Errorf("waiter %d: %v %v", i, r.err, r.errno)
				return
			}
			mu.Lock()
			order = append(order, i)
			mu.Unlock()
			waiters[i].mustLock(ino, uint32(10+i), un, 0, 0)
		}(i)
		// Arrival order: the next waiter asks once this one is queued.
		mustQueued(t, waiters[i], ino, uint32(10+i), fmt.Sprintf("waiter %d", i))
	}
	holder.mustLock(ino, 1, un, 0, 0)
	wg.Wait()
	for i, got := range order {
		if got != i {
			t.Fatalf("grant order %v, want arrival order", order)
		}
	}

	// Reader holds; a writer queues; a later reader must queue behind it.
	r1, w, r2 := waiters[0], waiters[1], waiters[2]
	r1.mustLock(ino, 10, rd, 0, 0)
	ww := w.setlkwAsync(context.Background(), ino, 11, wr, 0, 0)
	mustStillWaiting(t, w, ww, ino, 11, "writer behind a reader")
	rr := r2.setlkwAsync(context.Background(), ino, 12, rd, 0, 0)
	mustStillWaiting(t, r2, rr, ino, 12, "a later reader behind the waiting writer")
	r1.mustLock(ino, 10, un, 0, 0)
	if r := mustGet(t, ww, "writer"); r.err != nil || r.errno != 0 {
		t.Fatalf("writer: %v %v", r.err, r.errno)
	}
	mustStillWaiting(t, r2, rr, ino, 12, "reader while the writer holds")
	w.mustLock(ino, 11, un, 0, 0)
	if r := mustGet(t, rr, "reader"); r.err != nil || r.errno != 0 {
		t.Fatalf("reader: %v %v", r.err, r.errno)
	}
}

// TestCancelLeavesNoGhost: a cancelled wait answers EINTR and is never
// granted afterwards.
func TestCancelLeavesNoGhost(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	a.mustLock(ino, 1, wr, 0, 0)
	h := b.header()
	ch := make(chan waitResult, 1)
	go func() {
		r, err := b.srv.SetLk(context.Background(), &jfspb.SetLkRequest{Header: h, Ino: ino, Owner: 2, Type: wr, Pid: 2, Block: true})
		ch <- waitResult{errno: syscall.Errno(r.GetErrno()), err: err}
	}()
	mustStillWaiting(t, b, ch, ino, 2, "B's wait")
	if _, err := b.srv.CancelLockWait(context.Background(), &jfspb.CancelLockWaitRequest{Session: b.session, Seq: h.Seq}); err != nil {
		t.Fatal(err)
	}
	if r := mustGet(t, ch, "cancelled wait"); r.err != nil || r.errno != syscall.EINTR {
		t.Fatalf("cancelled wait: %v %v, want EINTR", r.err, r.errno)
	}
	a.mustLock(ino, 1, un, 0, 0)
	// Not for ordering: a ghost grant, if the cancel left one, would be
	// proposed after the unlock; this gives it time to land. The check
	// below passes at once on a correct cluster.
	time.Sleep(200 * time.Millisecond)
	// Nobody holds the file: a third owner gets a write lock at once.
	if e, err := a.setlk(context.Background(), ino, 3, wr, 0, 0, false); err != nil || e != 0 {
		t.Fatalf("after the cancel, the lock is held by a ghost: %v %v", err, e)
	}
}

// TestSessionExpiryWakesWaiter: a holder that stops sending heartbeats
// loses its locks after the TTL, and the waiter gets the lock; the expired
// session's requests are refused with ESTALE.
func TestSessionExpiryWakesWaiter(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.SessionTTL = 2 * time.Second })
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	a.mustLock(ino, 1, wr, 0, 0)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // B keeps its session alive; A does not.
		for ctx.Err() == nil {
			b.srv.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: b.session})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	start := time.Now()
	w := b.setlkwAsync(context.Background(), ino, 2, wr, 0, 0)
	if r := mustGet(t, w, "waiter on an expiring holder"); r.err != nil || r.errno != 0 {
		t.Fatalf("waiter: %v %v", r.err, r.errno)
	}
	t.Logf("granted %v after A stopped heartbeating (TTL 2s)", time.Since(start))
	if e, err := a.setlk(context.Background(), ino, 1, wr, 100, 1, false); err != nil || e != syscall.ESTALE {
		t.Fatalf("expired session's lock request: %v %v, want ESTALE", err, e)
	}
	r, err := a.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: a.session})
	if err != nil || r.Errno != int32(syscall.ESTALE) {
		t.Fatalf("expired session's heartbeat: %v %v, want ESTALE", err, r)
	}
}

// TestWaitFollowsLeaderChange: a waiter whose leader goes away hears
// UNAVAILABLE, re-sends the same request to the new leader and is granted
// there when the holder unlocks; never two writers at once.
func TestWaitFollowsLeaderChange(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	a.mustLock(ino, 1, wr, 0, 0)
	req := &jfspb.SetLkRequest{Header: b.header(), Ino: ino, Owner: 2, Type: wr, Pid: 2, Block: true}
	ch := make(chan error, 1)
	go func() {
		_, err := b.srv.SetLk(context.Background(), req)
		ch <- err
	}()
	mustQueued(t, b, ino, 2, "B's wait")
	c.Stop(leader.ID())
	select {
	case err := <-ch:
		if status.Code(err) != codes.Unavailable {
			t.Fatalf("wait on a stopped leader: %v, want UNAVAILABLE", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("wait did not end when its leader stopped")
	}
	nl := c.Leader()
	a.srv, b.srv = cluster.NewServer(nl), cluster.NewServer(nl)
	for _, cl := range []*lockClient{a, b} { // the new leader's timers start with the full TTL
		cl.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: cl.session})
	}
	w := make(chan waitResult, 1)
	go func() {
		r, err := b.srv.SetLk(context.Background(), req) // same (session, seq)
		w <- waitResult{errno: syscall.Errno(r.GetErrno()), err: err}
	}()
	mustStillWaiting(t, b, w, ino, 2, "re-sent wait at the new leader")
	a.mustLock(ino, 1, un, 0, 0)
	if r := mustGet(t, w, "re-sent wait"); r.err != nil || r.errno != 0 {
		t.Fatalf("re-sent wait: %v %v", r.err, r.errno)
	}
	if e, _ := a.setlk(context.Background(), ino, 1, wr, 0, 0, false); e != syscall.EAGAIN {
		t.Fatalf("A got the lock B holds: %v", e)
	}
}

// TestNoFalseDeadlockOnQuickRelock: a holder that unlocks and at once asks
// for the lock again queues behind the waiter it freed; the waiter's edge
// to it is gone by then, so no deadlock is reported.
func TestNoFalseDeadlockOnQuickRelock(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	h, w := newLockClient(t, leader, "hostH"), newLockClient(t, leader, "hostW")
	ino := h.mustCreate("f")
	for round := 0; round < 30; round++ {
		h.mustLock(ino, 1, wr, 0, 0)
		ww := w.setlkwAsync(context.Background(), ino, 2, wr, 0, 0)
		mustStillWaiting(t, w, ww, ino, 2, "waiter")
		h.mustLock(ino, 1, un, 0, 0)
		hw := h.setlkwAsync(context.Background(), ino, 1, wr, 0, 0)
		if r := mustGet(t, ww, "waiter"); r.err != nil || r.errno != 0 {
			t.Fatalf("round %d: waiter: %v %v", round, r.err, r.errno)
		}
		w.mustLock(ino, 2, un, 0, 0)
		if r := mustGet(t, hw, "holder asking again"); r.err != nil || r.errno != 0 {
			t.Fatalf("round %d: the holder asking again right after its unlock: %v %v", round, r.err, r.errno)
		}
		h.mustLock(ino, 1, un, 0, 0)
	}
}

// TestHandOffIsOneLogWrite: the apply of the unlock grants the queued
// waiter. When the unlock returns, the waiter holds the lock already, and
// the hand-off cost exactly the one log entry of the unlock.
func TestHandOffIsOneLogWrite(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	for _, kind := range []string{"posix", "flock"} {
		var w <-chan waitResult
		if kind == "posix" {
			a.mustLock(ino, 1, wr, 0, 0)
			w = b.setlkwAsync(context.Background(), ino, 2, wr, 0, 0)
		} else {
			a.mustFlock(ino, 1, wr)
			w = b.flockAsync(ino, 2, wr)
		}
		mustStillWaiting(t, b, w, ino, 2, kind+" waiter")
		before := leader.FSM().AppliedIndex()
		if kind == "posix" {
			a.mustLock(ino, 1, un, 0, 0)
		} else {
			a.mustFlock(ino, 1, un)
		}
		if got := leader.FSM().AppliedIndex() - before; got != 1 {
			t.Fatalf("%s: the unlock took %d log entries, want 1", kind, got)
		}
		if !b.holds(ino, 2) {
			t.Fatalf("%s: the waiter does not hold the lock when the unlock returns", kind)
		}
		if r := mustGet(t, w, kind+" waiter"); r.err != nil || r.errno != 0 {
			t.Fatalf("%s waiter: %v %v", kind, r.err, r.errno)
		}
		if got := leader.FSM().AppliedIndex() - before; got != 1 {
			t.Fatalf("%s: the hand-off took %d log entries, want 1", kind, got)
		}
		if kind == "posix" {
			b.mustLock(ino, 2, un, 0, 0)
		} else {
			b.mustFlock(ino, 2, un)
		}
	}
}

func (c *lockClient) flock(ctx context.Context, ino, fh uint64, typ jfspb.LockType, block bool) (syscall.Errno, error) {
	r, err := c.srv.Flock(ctx, &jfspb.FlockRequest{Header: c.header(), Ino: ino, Fh: fh, Type: typ, Pid: uint32(fh), Block: block})
	if err != nil {
		return 0, err
	}
	return syscall.Errno(r.Errno), nil
}

func (c *lockClient) mustFlock(ino, fh uint64, typ jfspb.LockType) {
	c.t.Helper()
	if e, err := c.flock(context.Background(), ino, fh, typ, false); err != nil || e != 0 {
		c.t.Fatalf("%s fh %d flock %v: %v %v", c.host, fh, typ, err, e)
	}
}

func (c *lockClient) flockAsync(ino, fh uint64, typ jfspb.LockType) <-chan waitResult {
	ch := make(chan waitResult, 1)
	go func() {
		e, err := c.flock(context.Background(), ino, fh, typ, true)
		ch <- waitResult{e, err, time.Now()}
	}()
	return ch
}

// holds reports whether the leader lists a lock (not a wait) of c on ino by
// owner.
func (c *lockClient) holds(ino, owner uint64) bool {
	r, err := c.srv.ListLocks(context.Background(), &jfspb.ListLocksRequest{Ino: ino, Session: c.session})
	if err != nil {
		c.t.Fatal(err)
	}
	for _, l := range r.Locks {
		if !l.Waiting && l.GetOwner().GetOwner() == owner {
			return true
		}
	}
	return false
}

// TestQueueSurvivesLeaderChange: three waits queued in order keep their
// order across a leader change, even when their clients re-send them to the
// new leader in the reverse order: the queue is replicated state.
func TestQueueSurvivesLeaderChange(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a := newLockClient(t, leader, "hostA")
	ino := a.mustCreate("f")
	a.mustLock(ino, 1, wr, 0, 0)
	var ws []*lockClient
	var reqs []*jfspb.SetLkRequest
	var chs []chan waitResult
	send := func(i int) {
		ch := make(chan waitResult, 1)
		chs[i] = ch
		go func() {
			r, err := ws[i].srv.SetLk(context.Background(), reqs[i])
			ch <- waitResult{errno: syscall.Errno(r.GetErrno()), err: err}
		}()
	}
	for i := range 3 {
		w := newLockClient(t, leader, fmt.Sprintf("host%d", i))
		pid := uint32(10 + i)
		ws = append(ws, w)
		reqs = append(reqs, &jfspb.SetLkRequest{Header: w.header(), Ino: ino, Owner: uint64(pid), Type: wr, Pid: pid, Block: true})
		chs = append(chs, nil)
		send(i)
		mustStillWaiting(t, w, chs[i], ino, pid, fmt.Sprintf("waiter %d", i))
	}
	c.Stop(leader.ID())
	for i, ch := range chs {
		if r := mustGet(t, ch, fmt.Sprintf("waiter %d at the stopped leader", i)); status.Code(r.err) != codes.Unavailable {
			t.Fatalf("waiter %d on a stopped leader: %v %v, want UNAVAILABLE", i, r.errno, r.err)
		}
	}
	nl := c.Leader()
	a.srv = cluster.NewServer(nl)
	a.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: a.session})
	for i := 2; i >= 0; i-- { // the reverse order
		ws[i].srv = cluster.NewServer(nl)
		ws[i].srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: ws[i].session})
		send(i)
		mustStillWaiting(t, ws[i], chs[i], ino, uint32(10+i), fmt.Sprintf("waiter %d re-sent", i))
	}
	a.mustLock(ino, 1, un, 0, 0)
	for i := range 3 {
		if r := mustGet(t, chs[i], fmt.Sprintf("waiter %d", i)); r.err != nil || r.errno != 0 {
			t.Fatalf("waiter %d: %v %v", i, r.err, r.errno)
		}
		for j := i + 1; j < 3; j++ {
			select {
			case r := <-chs[j]:
				t.Fatalf("waiter %d returned (%v %v) before waiter %d unlocked: the queue order was lost", j, r.errno, r.err, i)
			default:
			}
		}
		ws[i].mustLock(ino, uint32(10+i), un, 0, 0)
	}
}

// TestCancelQueuedAtNewLeader: a wait queued at a leader that then stops
// is cancelled at the new leader before its client sends it again: the
// re-sent request answers EINTR, and the unlock grants it nothing.
func TestCancelQueuedAtNewLeader(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	a.mustLock(ino, 1, wr, 0, 0)
	req := &jfspb.SetLkRequest{Header: b.header(), Ino: ino, Owner: 2, Type: wr, Pid: 2, Block: true}
	ch := make(chan waitResult, 1)
	go func() {
		r, err := b.srv.SetLk(context.Background(), req)
		ch <- waitResult{errno: syscall.Errno(r.GetErrno()), err: err}
	}()
	mustStillWaiting(t, b, ch, ino, 2, "B's wait")
	c.Stop(leader.ID())
	if r := mustGet(t, ch, "wait at the stopped leader"); status.Code(r.err) != codes.Unavailable {
		t.Fatalf("wait on a stopped leader: %v %v, want UNAVAILABLE", r.errno, r.err)
	}
	nl := c.Leader()
	a.srv, b.srv = cluster.NewServer(nl), cluster.NewServer(nl)
	for _, cl := range []*lockClient{a, b} {
		cl.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: cl.session})
	}
	if _, err := b.srv.CancelLockWait(context.Background(), &jfspb.CancelLockWaitRequest{Session: b.session, Seq: req.Header.Seq}); err != nil {
		t.Fatal(err)
	}
	r, err := b.srv.SetLk(context.Background(), req) // the client's re-send
	if err != nil || r.Errno != int32(syscall.EINTR) {
		t.Fatalf("re-sent wait after the cancel: %v %v, want EINTR", r, err)
	}
	a.mustLock(ino, 1, un, 0, 0)
	if b.holds(ino, 2) {
		t.Fatal("the cancelled wait was granted")
	}
	if e, err := a.setlk(context.Background(), ino, 3, wr, 0, 0, false); err != nil || e != 0 {
		t.Fatalf("after the cancel, the lock is held by a ghost: %v %v", err, e)
	}
}

// TestNoFalseDeadlockUnderContention: processes that each hold at most one
// lock can never deadlock; eight of them take turns on one file as fast as
// they can, and none may be refused with EDEADLK. (An admission that read
// the state after a grant but the wait-for graph from before it saw the
// granted waiter still waiting, and refused the unlocking process.)
func TestNoFalseDeadlockUnderContention(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	var cls []*lockClient
	for i := range 2 {
		cls = append(cls, newLockClient(t, leader, fmt.Sprintf("host%d", i)))
	}
	ino := cls[0].mustCreate("f")
	const procs, rounds = 8, 25
	errs := make(chan error, procs)
	for p := range procs {
		cl, pid := cls[p%2], uint32(100+p)
		go func() {
			for range rounds {
				e, err := cl.setlk(context.Background(), ino, pid, wr, 0, 0, true)
				if err == nil && e == 0 {
					e, err = cl.setlk(context.Background(), ino, pid, un, 0, 0, false)
				}
				if err != nil || e != 0 {
					errs <- fmt.Errorf("process %d: %v %v", pid, e, err)
					return
				}
			}
			errs <- nil
		}()
	}
	for range procs {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

// TestBlockingLockNeedsCred: a blocking F_SETLKW or flock without
// credentials is refused like any request whose permission check needs
// them. The state machine checks a request without credentials as root's,
// so the blocking path, which proposes on its own, skipped the refusal and
// let a caller (a squashed root too) lock a file it may neither read nor
// write.
func TestBlockingLockNeedsCred(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	ino := a.mustCreate("f")
	noCred := func() *jfspb.Header {
		h := b.header()
		h.Cred = nil
		return h
	}
	ctx := context.Background()
	for _, block := range []bool{false, true} {
		_, err := b.srv.SetLk(ctx, &jfspb.SetLkRequest{Header: noCred(), Ino: ino, Owner: 1, Type: wr, Len: 10, Pid: 1, Block: block})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("SetLk (block %v) without credentials: %v, want InvalidArgument", block, err)
		}
		_, err = b.srv.Flock(ctx, &jfspb.FlockRequest{Header: noCred(), Ino: ino, Fh: 1, Type: wr, Pid: 1, Block: block})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("Flock (block %v) without credentials: %v, want InvalidArgument", block, err)
		}
	}
}

// TestFollowerRefusesBlockingLock: a blocking lock request that reaches a
// follower is redirected (Unavailable, naming the leader), never answered
// from the follower's own view of the queues. That view may be older than
// what the client has seen at the leader, and its deadlock check answered
// EDEADLK there for waits that were over (TestFaultLeaderKillRepeated).
// Here a real cycle shows that the follower does not judge at all.
func TestFollowerRefusesBlockingLock(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	a, b := newLockClient(t, leader, "hostA"), newLockClient(t, leader, "hostB")
	x, y := a.mustCreate("x"), a.mustCreate("y")
	a.mustLock(x, 1, wr, 0, 0)
	b.mustLock(y, 2, wr, 0, 0)
	wa := a.setlkwAsync(context.Background(), y, 1, wr, 0, 0)
	mustStillWaiting(t, a, wa, y, 1, "A waiting for Y")
	c.WaitApplied(leader.FSM().AppliedIndex())
	var follower *cluster.Node
	for _, id := range c.IDs() {
		if id != leader.ID() {
			follower = c.Node(id)
			break
		}
	}
	fs := cluster.NewServer(follower)
	for _, flock := range []bool{false, true} {
		var err error
		var errno int32
		if flock {
			var r *jfspb.FlockResponse
			r, err = fs.Flock(context.Background(), &jfspb.FlockRequest{Header: b.header(), Ino: x, Fh: 9, Type: wr, Pid: 2, Block: true})
			errno = r.GetErrno()
		} else {
			var r *jfspb.SetLkResponse
			r, err = fs.SetLk(context.Background(), &jfspb.SetLkRequest{Header: b.header(), Ino: x, Owner: 2, Type: wr, Pid: 2, Block: true})
			errno = r.GetErrno()
		}
		if status.Code(err) != codes.Unavailable {
			t.Errorf("blocking lock (flock %v) at follower %s: errno %v, error %v; want Unavailable (not the leader)",
				flock, follower.ID(), syscall.Errno(errno), err)
		}
	}
	mustStillWaiting(t, a, wa, y, 1, "A after the follower's answers")
	b.mustLock(y, 2, un, 0, 0)
	if r := mustGet(t, wa, "A after B unlocks Y"); r.err != nil || r.errno != 0 {
		t.Fatalf("A: %v %v", r.err, r.errno)
	}
}
