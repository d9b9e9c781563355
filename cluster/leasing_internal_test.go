package cluster

import (
	"testing"
	"time"
)

// TestStartRuleDelay: only a node that has raft state and keeps the start
// rule waits, for a heartbeat timeout and the drift from when it (or its
// process) started.
func TestStartRuleDelay(t *testing.T) {
	now := time.Now()
	for _, tc := range []struct {
		name     string
		lease    bool
		existing bool
		started  time.Time
		wait     bool
	}{
		{"restart with leases", true, true, time.Time{}, true},
		{"new node", true, false, time.Time{}, false},
		{"leases off", false, true, time.Time{}, false},
		{"process started long ago", true, true, now.Add(-2 * time.Hour), false},
	} {
		n := &Node{cfg: Config{ReadLease: tc.lease, HeartbeatTimeout: time.Hour, Started: tc.started}, began: now}
		d := n.startRuleDelay(tc.existing)
		if got := d > 0; got != tc.wait {
			t.Errorf("%s: wait %v, want a wait: %v", tc.name, d, tc.wait)
		}
		if d > time.Duration(float64(time.Hour)*(1+LeaseDrift)) {
			t.Errorf("%s: wait %v, longer than the heartbeat timeout and drift", tc.name, d)
		}
	}
}
