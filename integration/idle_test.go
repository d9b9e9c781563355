package integration

import (
	"strings"
	"testing"
	"time"
)

// An idle leader does not poll for dead file data: its free loop wakes
// after applies, not on a timer. The window is measured in the leader's
// own heartbeats (every 100-200 ms), which go on by themselves; the old
// loop looked every 200 ms.
func TestIdleFreeLoopDoesNotPoll(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	leader := pc.leader(t, c)
	const looks, applied = "jfsd_free_checks_total", "jfsd_fsm_applied_index"
	beats := func(m map[string]float64) float64 {
		var n float64
		for k, v := range m {
			if strings.HasPrefix(k, "jfsd_raft_replication_heartbeat_count") {
				n += v
			}
		}
		return n
	}
	// after waits until the leader has sent 20 more heartbeats (10 to each
	// follower) than in m, and returns its metrics then.
	after := func(m map[string]float64) map[string]float64 {
		t.Helper()
		var now map[string]float64
		if !waitFor(60*time.Second, func() bool { now = leader.metrics(t); return beats(now) >= beats(m)+20 }) {
			t.Fatalf("the leader sent %v heartbeats in a minute", beats(now)-beats(m))
		}
		return now
	}
	m0 := leader.metrics(t)
	if _, ok := m0[looks]; !ok {
		t.Fatalf("the leader exports no %s", looks)
	}
	// The cluster records its members and a checkpoint at start: wait for
	// a window in which nothing was applied. A look asked for by an apply
	// before m0 is done by m1.
	for range 10 {
		m1 := after(m0)
		m2 := after(m1)
		if m2[applied] != m0[applied] {
			m0 = m2
			continue
		}
		if m2[looks] != m1[looks] {
			t.Fatalf("with nothing applied (index %v) the free loop looked %v times in 10 heartbeats", m2[applied], m2[looks]-m1[looks])
		}
		return
	}
	t.Fatal("the cluster never stayed without applies for 20 heartbeats")
}
