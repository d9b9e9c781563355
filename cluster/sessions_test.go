package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// heartbeatAnyLeader sends one heartbeat for sid to whichever node answers
// it as the ready leader, and reports whether one did and kept the session.
func heartbeatAnyLeader(c *clustertest.Cluster, sid uint64) bool {
	for _, id := range c.IDs() {
		n := c.Node(id)
		if n == nil || !n.IsLeader() {
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		r, err := cluster.NewServer(n).Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: sid})
		cancel()
		if err == nil {
			return r.Errno == 0
		}
	}
	return false
}

// TestSessionExpiryAcrossLeaderChanges: a client that stops heartbeating
// loses its session within TTL + one election timeout (plus scheduling
// slack), however many leader changes happen meanwhile, because each new
// leader starts the session's timer from when it was last recorded alive.
// A client that keeps heartbeating keeps its session through the same
// changes. Each new leader used to restart the timer at the full TTL, so
// changes every half TTL postponed the expiry for as long as they went on.
func TestSessionExpiryAcrossLeaderChanges(t *testing.T) {
	const ttl = 3 * time.Second
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.SessionTTL = ttl })
	leader := c.Leader()
	register := func(name string) uint64 {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		r, err := cluster.NewServer(leader).Register(ctx, &jfspb.RegisterRequest{Host: name, MountPoint: "/" + name, ClientId: name})
		if err != nil || r.Errno != 0 {
			t.Fatalf("register %s: %v %v", name, err, r)
		}
		return r.Session
	}
	dead, live := register("dead"), register("live")

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	liveLost := make(chan struct{})
	go func() {
		// The live client heartbeats every TTL/3, as client.Session does,
		// and like its calls retries one until some leader takes it.
		tick := time.NewTicker(ttl / 3)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			for try := time.Now(); !heartbeatAnyLeader(c, live) && ctx.Err() == nil; {
				if leader.FSM().Session(live) == nil {
					close(liveLost)
					return
				}
				if time.Since(try) > ttl/3 {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
		}
	}()

	// The dead client's last heartbeat.
	if !heartbeatAnyLeader(c, dead) {
		t.Fatal("first heartbeat refused")
	}
	lastBeat := time.Now()

	// Expiry is an applied ExpireSession: watch the state machines.
	gone := func() bool {
		for _, id := range c.IDs() {
			if n := c.Node(id); n != nil && n.FSM().Session(dead) != nil {
				return false
			}
		}
		return true
	}
	expired := make(chan time.Duration, 1)
	go func() {
		for ctx.Err() == nil {
			if gone() {
				expired <- time.Since(lastBeat)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()

	// Leader changes every TTL/6 until the session expires, for at most
	// three TTLs. A leader that restarted every timer at the full TTL
	// would keep the session alive for as long as the changes go on; the
	// rule under test expires it about one TTL after its last heartbeat
	// (the bound is TTL + an election timeout), well inside the changes.
	// The time it took is reported, not judged against a tight bound, so a
	// loaded machine does not fail the test.
	transfers := 0
	var took time.Duration
changes:
	for time.Since(lastBeat) < 3*ttl {
		l := c.Leader()
		if err := l.TransferLeadership("", "").Error(); err != nil {
			t.Logf("transfer from %s: %v", l.ID(), err)
		} else {
			transfers++
		}
		next := time.NewTimer(ttl / 6)
		select {
		case took = <-expired:
			next.Stop()
			break changes
		case <-next.C:
		}
	}
	if took == 0 {
		t.Fatalf("session still alive %v after its last heartbeat (TTL %v) across %d leader changes", time.Since(lastBeat), ttl, transfers)
	}
	if transfers < 3 {
		t.Fatalf("only %d leader transfers succeeded before the session expired", transfers)
	}
	t.Logf("expired %v after the last heartbeat, across %d leader changes", took, transfers)
	select {
	case <-liveLost:
		t.Fatal("the session that kept heartbeating was expired")
	default:
	}
	if c.Leader().FSM().Session(live) == nil {
		t.Fatal("the session that kept heartbeating is gone")
	}
}
