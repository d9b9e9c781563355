package cluster_test

import (
	"strings"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// TestLeaderSurvivesLateHeartbeats: with the default timings, a leader whose
// every AppendEntries (heartbeats included) is 300ms late, as on a 2-core
// machine loaded far beyond its cores, keeps its quorum and its followers
// stay with it: no election for several seconds. A lease shorter than the
// gap between two answers made the leader step down with "failed to contact
// quorum" over and over.
func TestLeaderSurvivesLateHeartbeats(t *testing.T) {
	c := clustertest.NewCluster(t, 3, clustertest.Defaults)
	leader := c.Leader()
	term := leader.Raft().CurrentTerm()

	c.DelayAppends(300 * time.Millisecond)
	// No event marks "no election happened": watch for a while instead.
	// Eight seconds cover many lease checks and heartbeat timeouts.
	watch := time.NewTimer(8 * time.Second)
	defer watch.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-watch.C:
			c.DelayAppends(0)
			return
		case <-tick.C:
		}
		for _, id := range c.IDs() {
			n := c.Node(id)
			if got := n.Raft().CurrentTerm(); got != term {
				t.Fatalf("%s moved from term %d to %d under late heartbeats (leader %s was %s)",
					id, term, got, leader.ID(), leader.Raft().State())
			}
		}
		if !leader.IsLeader() {
			t.Fatalf("%s stopped leading under late heartbeats", leader.ID())
		}
	}
}

func TestCheckTiming(t *testing.T) {
	for _, tc := range []struct {
		heartbeat, election, lease time.Duration
		wantErr                    string // "" for valid
	}{
		{0, 0, 0, ""},
		{time.Second, 2 * time.Second, time.Second, ""},
		{200 * time.Millisecond, 200 * time.Millisecond, 100 * time.Millisecond, ""},
		{time.Second, 2 * time.Second, 2 * time.Second, "--leader-lease-timeout 2s must not exceed --heartbeat-timeout 1s"},
		{2 * time.Second, time.Second, time.Second, "--election-timeout 1s must be at least --heartbeat-timeout 2s"},
		{0, 500 * time.Millisecond, 0, "--election-timeout 500ms must be at least --heartbeat-timeout 1s"},
		{5 * time.Millisecond, time.Second, 0, "--heartbeat-timeout 5ms: must be at least 10ms"},
	} {
		err := cluster.CheckTiming(tc.heartbeat, tc.election, tc.lease)
		switch {
		case tc.wantErr == "" && err != nil:
			t.Errorf("CheckTiming(%v, %v, %v) = %v, want nil", tc.heartbeat, tc.election, tc.lease, err)
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("CheckTiming(%v, %v, %v) = %v, want %q", tc.heartbeat, tc.election, tc.lease, err, tc.wantErr)
		}
	}
}
