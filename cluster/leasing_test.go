package cluster_test

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// fakeClock is a lease clock that moves only when the test moves it: a
// lease the leader got stays valid until the test says time has passed.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock { return &fakeClock{t: time.Now()} }

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = t
}

func mustReadIndex(t *testing.T, n *cluster.Node) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := n.ReadIndex(ctx); err != nil {
		t.Fatalf("read index on %s: %v", n.ID(), err)
	}
}

// waitFor checks cond every 10ms until it holds, for up to 30s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 30s for %s", what)
		}
		<-tick.C
	}
}

// TestReadsUnderLease: once a round has given the leader a lease, reads send
// no ConfirmTerm (the rounds metric stays put) while the lease holds; near
// its end a read starts one renewal in the background and is served at once;
// a leader whose clock passed the lease's end (one that was frozen) confirms
// again before it serves.
func TestReadsUnderLease(t *testing.T) {
	clk := newFakeClock()
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.Clock = clk.Now })
	leader := c.Leader() // has served a read: confirmed, with a lease
	reg := prometheus.NewRegistry()
	cluster.NewMetrics(leader, reg)
	until := leader.LeaseUntil()
	if until.IsZero() {
		t.Fatalf("no lease after a round of confirmations: %+v", leader.ReadStats())
	}
	before := leader.ReadStats()
	rounds := counterSum(t, reg, "jfsd_confirm_rounds_total")
	s := cluster.NewServer(leader)
	for range 100 {
		if r, err := s.GetAttr(context.Background(), &jfspb.GetAttrRequest{Ino: 1}); err != nil || r.Errno != 0 {
			t.Fatalf("getattr: %v %v", err, r)
		}
	}
	after := leader.ReadStats()
	if got := counterSum(t, reg, "jfsd_confirm_rounds_total"); got != rounds {
		t.Fatalf("ConfirmTerm rounds went from %v to %v while the lease held", rounds, got)
	}
	if after.ReadRounds != before.ReadRounds || after.RenewRounds != before.RenewRounds || after.Lease == before.Lease {
		t.Fatalf("reads under a lease: stats %+v, then %+v", before, after)
	}

	// Near its end: served under the lease, and renewed in the background.
	clk.Set(until.Add(-100 * time.Millisecond))
	mustReadIndex(t, leader)
	if st := leader.ReadStats(); st.Lease != after.Lease+1 || st.ReadRounds != after.ReadRounds {
		t.Fatalf("a read near the lease's end: stats %+v, then %+v", after, st)
	}
	waitFor(t, "the lease to be renewed", func() bool { return leader.LeaseUntil().After(until) })
	if st := leader.ReadStats(); st.RenewRounds != after.RenewRounds+1 {
		t.Fatalf("renewal: stats %+v, then %+v", after, st)
	}

	// Frozen past its lease: the next read confirms first.
	renewed := leader.ReadStats()
	clk.Set(leader.LeaseUntil().Add(5 * time.Second))
	mustReadIndex(t, leader)
	if st := leader.ReadStats(); st.ReadRounds != renewed.ReadRounds+1 || st.Lease != renewed.Lease {
		t.Fatalf("a read after the lease's end: stats %+v, then %+v", renewed, st)
	}
}

// TestLeaseOff: with leases off every read check is a round, and answers
// promise nothing.
func TestLeaseOff(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.ReadLease = false })
	leader := c.Leader()
	before := leader.ReadStats()
	for range 5 {
		mustReadIndex(t, leader)
	}
	if st := leader.ReadStats(); st.Lease != 0 || st.ReadRounds != before.ReadRounds+5 || !leader.LeaseUntil().IsZero() {
		t.Fatalf("leases off: stats %+v, then %+v, lease until %v", before, st, leader.LeaseUntil())
	}
	if a := leader.AnswerConfirmTerm(&jfspb.ConfirmTermRequest{Term: 1}); a.HeartbeatTimeoutNs != 0 {
		t.Fatalf("a node without leases promised %v", time.Duration(a.HeartbeatTimeoutNs))
	}
}

// TestTransferEndsLease: a leadership transfer ends the lease before it
// starts, and for the rest of the term: here the transfer is refused, the
// node stays leader in the same term, and still every read confirms.
func TestTransferEndsLease(t *testing.T) {
	restore := cluster.RefuseTransfers()
	defer restore()
	clk := newFakeClock() // a lease lasts until the test ends
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.Clock = clk.Now })
	leader := c.Leader()
	if leader.LeaseUntil().IsZero() {
		t.Fatal("no lease after a round of confirmations")
	}
	term := leader.Raft().CurrentTerm()
	s := cluster.NewServer(leader)
	if _, err := s.TransferLeader(context.Background(), &jfspb.TransferLeaderRequest{}); err == nil {
		t.Fatal("a refused transfer succeeded")
	}
	if leader.Raft().CurrentTerm() != term || !leader.IsLeader() {
		t.Fatalf("the refused transfer changed the leadership")
	}
	if u := leader.LeaseUntil(); !u.IsZero() {
		t.Fatalf("lease still held until %v after a transfer", u)
	}
	before := leader.ReadStats()
	mustReadIndex(t, leader)
	mustReadIndex(t, leader)
	if st := leader.ReadStats(); st.Lease != before.Lease || st.ReadRounds != before.ReadRounds+2 {
		t.Fatalf("reads after a transfer in the same term: stats %+v, then %+v", before, st)
	}
}

// TestRestartedNodeWaits: a node that restarts with its raft state takes no
// part in raft (and so grants no vote) for a heartbeat timeout after it
// starts: starting it takes at least that long.
func TestRestartedNodeWaits(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	var f string
	for _, id := range c.IDs() {
		if id != leader.ID() {
			f = id
			break
		}
	}
	c.Stop(f)
	start := time.Now()
	c.Restart(f)
	if took := time.Since(start); took < time.Second { // clustertest's HeartbeatTimeout
		t.Fatalf("restarted %s in %v, before its heartbeat timeout", f, took)
	}
}
