package cluster_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// recallStream is a session's DelegRecalls call served in process: the
// recalls the leader sends arrive on ch.
type recallStream struct {
	ctx context.Context
	ch  chan *jfspb.DelegRecall
	end chan error
}

func (r *recallStream) Send(m *jfspb.DelegRecall) error {
	select {
	case r.ch <- m:
		return nil
	case <-r.ctx.Done():
		return r.ctx.Err()
	}
}
func (r *recallStream) Context() context.Context     { return r.ctx }
func (r *recallStream) SetHeader(metadata.MD) error  { return nil }
func (r *recallStream) SendHeader(metadata.MD) error { return nil }
func (r *recallStream) SetTrailer(metadata.MD)       {}
func (r *recallStream) SendMsg(any) error            { return nil }
func (r *recallStream) RecvMsg(any) error            { return nil }

// mustOpenRecalls opens c's recall stream at its server and waits until
// the leader has it (its first message).
func (c *lockClient) mustOpenRecalls(t *testing.T) *recallStream {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	rs := &recallStream{ctx: ctx, ch: make(chan *jfspb.DelegRecall, 64), end: make(chan error, 1)}
	srv := c.srv
	go func() { rs.end <- srv.DelegRecalls(&jfspb.DelegRecallsRequest{Session: c.session}, rs) }()
	select {
	case m := <-rs.ch:
		if m.Ino != 0 {
			t.Fatalf("first message of a recall stream: %v", m)
		}
	case err := <-rs.end:
		t.Fatalf("recall stream of session %d: %v", c.session, err)
	case <-time.After(10 * time.Second):
		t.Fatal("recall stream did not open")
	}
	return rs
}

// mustRecall waits for the recall of ino.
func (r *recallStream) mustRecall(t *testing.T, ino uint64) {
	t.Helper()
	for {
		select {
		case m := <-r.ch:
			if m.Ino == ino && m.ReportId == 0 {
				return
			}
		case <-time.After(20 * time.Second):
			t.Fatalf("no recall of inode %d", ino)
		}
	}
}

// delegLock takes a write lock of [start, start+length) for owner (and
// pid) as a mount that can take a delegation, and reports whether it got
// the delegation.
func (c *lockClient) delegLock(t *testing.T, ino, owner uint64, start, length int64) bool {
	t.Helper()
	r, err := c.srv.SetLk(context.Background(), &jfspb.SetLkRequest{Header: c.header(), Ino: ino, Owner: owner, Type: wr,
		Start: start, Len: length, Pid: uint32(owner), DelegOk: true})
	if err != nil || r.Errno != 0 {
		t.Fatalf("%s lock: %v %v", c.host, err, r)
	}
	return r.Delegated
}

type setlkResult struct {
	r   *jfspb.SetLkResponse
	err error
}

func (c *lockClient) setlkAsync(req *jfspb.SetLkRequest) chan setlkResult {
	req.Header = c.header()
	ch := make(chan setlkResult, 1)
	go func() {
		r, err := c.srv.SetLk(context.Background(), req)
		ch <- setlkResult{r, err}
	}()
	return ch
}

func mustSetlkResult(t *testing.T, ch chan setlkResult, what string) *jfspb.SetLkResponse {
	t.Helper()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("%s: %v", what, r.err)
		}
		return r.r
	case <-time.After(30 * time.Second):
		t.Fatalf("%s: no answer", what)
	}
	return nil
}

// TestDelegationRecall: a session alone on a file gets its locks
// delegated; another session's F_SETLK makes the leader recall them, waits
// for the return, and then conflicts with the returned lock, which F_GETLK
// shows. Without the recall (the request applied at once) B would be
// granted a lock that A holds.
func TestDelegationRecall(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	rs := a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 10) {
		t.Fatal("a session alone on the file did not get its locks delegated")
	}
	if ls, _ := a.srv.ListLocks(context.Background(), &jfspb.ListLocksRequest{Ino: ino}); len(ls.Locks) != 1 || !ls.Locks[0].Delegated || !ls.Locks[0].DelegationUnknown {
		t.Fatalf("locks ls of a delegated inode whose mount does not report: %v", ls)
	}
	w := b.setlkAsync(&jfspb.SetLkRequest{Ino: ino, Owner: 2, Type: rd, Start: 5, Len: 1, Pid: 2})
	rs.mustRecall(t, ino)
	select {
	case r := <-w:
		t.Fatalf("B answered before A returned the delegation: %v", r)
	default:
	}
	ret, err := a.srv.DelegReturn(context.Background(), &jfspb.DelegReturnRequest{Header: a.header(), Ino: ino,
		Locks: []*jfspb.DelegLock{{Owner: 1, Type: wr, Start: 0, Len: 10, Pid: 1}}})
	if err != nil || ret.Errno != 0 || !ret.Returned {
		t.Fatalf("return: %v %v", err, ret)
	}
	r := mustSetlkResult(t, w, "B's F_SETLK")
	if r.Errno != int32(syscall.EAGAIN) || len(r.Conflicts) != 1 || r.Conflicts[0].Session != a.session {
		t.Fatalf("B's F_SETLK against A's returned lock: %v", r)
	}
	g, err := b.srv.GetLk(context.Background(), &jfspb.GetLkRequest{Session: b.session, Ino: ino, Owner: 2, Type: wr, Start: 0, Len: 0})
	if err != nil || g.Type != wr || g.Holder.GetSession() != a.session || g.Start != 0 || g.Len != 10 {
		t.Fatalf("B's F_GETLK: %v %v", err, g)
	}
	// Recalled a moment ago: not delegated again at once.
	if a.delegLock(t, ino, 1, 100, 1) {
		t.Fatal("delegated again right after a recall, while B uses the file")
	}
}

// TestDelegationVoidAtExpiry: a holder that neither returns its delegation
// nor keeps its session alive loses it with the session; the request that
// waited for the recall is then granted.
func TestDelegationVoidAtExpiry(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.SessionTTL = 2 * time.Second })
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	rs := a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 0) {
		t.Fatal("not delegated")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { // B keeps its session alive; A does not.
		for ctx.Err() == nil {
			b.srv.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: b.session})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	w := b.setlkAsync(&jfspb.SetLkRequest{Ino: ino, Owner: 2, Type: wr, Pid: 2, Block: true})
	rs.mustRecall(t, ino) // and never answered
	if r := mustSetlkResult(t, w, "B's F_SETLKW"); r.Errno != 0 {
		t.Fatalf("B after A's session expired: %v", r)
	}
	if s := l.FSM().Delegation(ino); s != 0 {
		t.Fatalf("the expired session still holds the delegation (%d)", s)
	}
	// The expired session's return changes nothing.
	if ret, err := a.srv.DelegReturn(context.Background(), &jfspb.DelegReturnRequest{Header: a.header(), Ino: ino,
		Locks: []*jfspb.DelegLock{{Owner: 1, Type: wr}}}); err != nil || ret.Returned {
		t.Fatalf("an expired session's return: %v %v", err, ret)
	}
}

// TestDelegationEvictionFence: an operator evicts the holder of a
// delegation; its mount may still answer locally until its lease runs
// out, so another session's request waits until the leader's timer for the
// evicted session would have lapsed.
func TestDelegationEvictionFence(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.SessionTTL = 2 * time.Second })
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 0) {
		t.Fatal("not delegated")
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		for ctx.Err() == nil {
			b.srv.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: b.session})
			time.Sleep(200 * time.Millisecond)
		}
	}()
	if _, err := a.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: a.session}); err != nil {
		t.Fatal(err)
	}
	lease := cluster.SessionLeaseEnd(l, a.session)
	if lease.IsZero() {
		t.Fatal("no timer for A")
	}
	if r, err := a.srv.EvictSession(context.Background(), &jfspb.EvictSessionRequest{Session: a.session, Reason: "test"}); err != nil || r.Errno != 0 {
		t.Fatalf("evict: %v %v", err, r)
	}
	if s := l.FSM().Delegation(ino); s != 0 {
		t.Fatal("the evicted session's delegation is not void")
	}
	w := b.setlkAsync(&jfspb.SetLkRequest{Ino: ino, Owner: 2, Type: wr, Pid: 2})
	r := mustSetlkResult(t, w, "B's F_SETLK")
	if r.Errno != 0 {
		t.Fatalf("B after the fence: %v", r)
	}
	// Not a speed bound: the order of two events on one clock.
	if now := time.Now(); now.Before(lease) {
		t.Fatalf("B was granted %v before the evicted session's lease could have lapsed", lease.Sub(now))
	}
}

// TestDelegationRecallAcrossFailover: the delegation is in the replicated
// state, so a new leader knows it and recalls it through the stream the
// holder opens there.
func TestDelegationRecallAcrossFailover(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 0) {
		t.Fatal("not delegated")
	}
	c.Stop(l.ID())
	nl := c.Leader()
	a.srv, b.srv = cluster.NewServer(nl), cluster.NewServer(nl)
	for _, cl := range []*lockClient{a, b} {
		cl.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: cl.session})
	}
	if s := nl.FSM().Delegation(ino); s != a.session {
		t.Fatalf("the new leader does not know the delegation: %d", s)
	}
	rs := a.mustOpenRecalls(t)
	w := b.setlkAsync(&jfspb.SetLkRequest{Ino: ino, Owner: 2, Type: wr, Pid: 2})
	rs.mustRecall(t, ino)
	if ret, err := a.srv.DelegReturn(context.Background(), &jfspb.DelegReturnRequest{Header: a.header(), Ino: ino,
		Locks: []*jfspb.DelegLock{{Owner: 1, Type: wr, Start: 0, Len: 0, Pid: 1}}}); err != nil || !ret.Returned {
		t.Fatalf("return at the new leader: %v %v", err, ret)
	}
	if r := mustSetlkResult(t, w, "B's F_SETLK"); r.Errno != int32(syscall.EAGAIN) {
		t.Fatalf("B against A's returned lock: %v", r)
	}
}

// TestDelegationEvictionFenceAcrossFailover: the fence of an eviction is in
// the state, so a new leader holds the evicted session's delegated inodes
// until the old leader's timer for it would have lapsed.
func TestDelegationEvictionFenceAcrossFailover(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.SessionTTL = 8 * time.Second })
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 0) {
		t.Fatal("not delegated")
	}
	if _, err := a.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: a.session}); err != nil {
		t.Fatal(err)
	}
	lease := cluster.SessionLeaseEnd(l, a.session)
	if r, err := a.srv.EvictSession(context.Background(), &jfspb.EvictSessionRequest{Session: a.session, Reason: "test"}); err != nil || r.Errno != 0 {
		t.Fatalf("evict: %v %v", err, r)
	}
	c.Stop(l.ID())
	nl := c.Leader()
	b.srv = cluster.NewServer(nl)
	b.srv.Heartbeat(context.Background(), &jfspb.HeartbeatRequest{Session: b.session})
	r := mustSetlkResult(t, b.setlkAsync(&jfspb.SetLkRequest{Ino: ino, Owner: 2, Type: wr, Pid: 2}), "B's F_SETLK at the new leader")
	if r.Errno != 0 {
		t.Fatalf("B after the fence: %v", r)
	}
	// The order of two events, not a speed bound.
	if now := time.Now(); now.Before(lease) {
		t.Fatalf("the new leader granted B %v before the evicted session's lease could have lapsed", lease.Sub(now))
	}
}

// TestDelegationRecallPendingAnswer: a request with a deadline that is
// still waiting for a recall shortly before it is answered "ask again"
// (UNAVAILABLE with a DelegRecall detail), which the client follows to the
// same leader without suspecting it; the same request sent again after
// the return is answered.
func TestDelegationRecallPendingAnswer(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	rs := a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 0) {
		t.Fatal("not delegated")
	}
	req := &jfspb.SetLkRequest{Header: b.header(), Ino: ino, Owner: 2, Type: wr, Pid: 2}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, err := b.srv.SetLk(ctx, req)
	cancel()
	st, _ := status.FromError(err)
	pending := false
	for _, d := range st.Details() {
		_, pending = d.(*jfspb.DelegRecall)
	}
	if st.Code() != codes.Unavailable || !pending {
		t.Fatalf("a bounded request waiting for a recall: %v, want UNAVAILABLE with a DelegRecall detail", err)
	}
	rs.mustRecall(t, ino)
	if ret, err := a.srv.DelegReturn(context.Background(), &jfspb.DelegReturnRequest{Header: a.header(), Ino: ino,
		Locks: []*jfspb.DelegLock{{Owner: 1, Type: wr, Pid: 1}}}); err != nil || !ret.Returned {
		t.Fatalf("return: %v %v", err, ret)
	}
	r, err := b.srv.SetLk(context.Background(), req)
	if err != nil || r.Errno != int32(syscall.EAGAIN) {
		t.Fatalf("the same request after the return: %v %v", err, r)
	}
}

// TestDelegationInterruptWhileRecalling: a blocking request interrupted
// while it waits for a recall answers EINTR at once, and is never granted.
func TestDelegationInterruptWhileRecalling(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	l := c.Leader()
	a, b := newLockClient(t, l, "hostA"), newLockClient(t, l, "hostB")
	ino := a.mustCreate("f")
	rs := a.mustOpenRecalls(t)
	if !a.delegLock(t, ino, 1, 0, 0) {
		t.Fatal("not delegated")
	}
	req := &jfspb.SetLkRequest{Ino: ino, Owner: 2, Type: wr, Pid: 2, Block: true}
	w := b.setlkAsync(req)
	rs.mustRecall(t, ino) // B waits for it; A does not answer
	if _, err := b.srv.CancelLockWait(context.Background(), &jfspb.CancelLockWaitRequest{Session: b.session, Seq: req.Header.Seq}); err != nil {
		t.Fatal(err)
	}
	if r := mustSetlkResult(t, w, "interrupted F_SETLKW"); r.Errno != int32(syscall.EINTR) {
		t.Fatalf("interrupted while recalling: %v, want EINTR", r)
	}
	if ret, err := a.srv.DelegReturn(context.Background(), &jfspb.DelegReturnRequest{Header: a.header(), Ino: ino}); err != nil || !ret.Returned {
		t.Fatalf("return: %v %v", err, ret)
	}
	if ls := l.FSM().Waits(ino); len(ls) != 0 {
		t.Fatalf("the interrupted request waits still: %v", ls)
	}
	if e, err := a.setlk(context.Background(), ino, 3, wr, 0, 0, false); err != nil || e != 0 {
		t.Fatalf("a lock after the interrupted request: %v %v (granted to it?)", err, e)
	}
}

// TestRecallStreamOfEndedSession: a recall stream whose session ends
// between DelegRecalls' look at the session and the stream's registration
// (dropSession then finds no stream to end) must not stay open: its mount,
// listening on it, would never reconnect under the session it registers
// next, whose recalls would then reach no one. Served for a session the
// state no longer has, the stream ends before it tells the mount it is
// open.
func TestRecallStreamOfEndedSession(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	l := c.Leader()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	opened := false
	err := cluster.ServeRecalls(ctx, l, 424242, func(m *jfspb.DelegRecall) error {
		opened = true
		cancel() // ends the stream the old code kept open for good
		return nil
	})
	if opened || status.Code(err) != codes.FailedPrecondition {
		t.Fatalf("recall stream of an ended session: opened %v, %v", opened, err)
	}
}

// TestDelegReportAtFollower: a mount's report of its delegated locks
// (jfsctl locks ls) that reaches a follower, which waits for none, is
// answered NotLeader for the client to take it to the leader; it used to
// be answered OK and dropped, and the listing showed the locks unknown.
func TestDelegReportAtFollower(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	l := c.Leader()
	for _, id := range c.IDs() {
		n := c.Node(id)
		if n == l {
			continue
		}
		_, err := cluster.NewServer(n).DelegReport(context.Background(), &jfspb.DelegReportRequest{Session: 1, ReportId: 1, Ino: 5})
		if status.Code(err) == codes.OK {
			t.Fatalf("a follower took a delegation report: %v", err)
		}
		return
	}
	t.Fatal("no follower")
}
