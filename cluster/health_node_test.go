package cluster_test

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// mustProbe serves one request to h and returns the status and the body.
func mustProbe(t *testing.T, h http.Handler) (int, cluster.Health) {
	t.Helper()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/", nil))
	var body cluster.Health
	if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
		t.Fatalf("body %q: %v", rec.Body.String(), err)
	}
	return rec.Code, body
}

// mustProbeUntil probes h until it answers code, or fails after 30s.
func mustProbeUntil(t *testing.T, h http.Handler, code int) cluster.Health {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, body := mustProbe(t, h)
		if got == code {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %d after 30s, want %d: %+v", got, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestReadyFollowsPartition: a follower cut off from the others turns not
// ready (no leader known) while staying live, the majority stays ready,
// and the follower is ready again once healed; a stopped node is not live.
func TestReadyFollowsPartition(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	var follower *cluster.Node
	for _, id := range c.IDs() {
		if id != leader.ID() {
			follower = c.Node(id)
			break
		}
	}
	for _, id := range c.IDs() {
		mustProbeUntil(t, cluster.ReadyHandler(c.Node(id), 1000), http.StatusOK)
	}

	c.Partition(follower.ID())
	h := mustProbeUntil(t, cluster.ReadyHandler(follower, 1000), http.StatusServiceUnavailable)
	if h.Ready || !h.Live || !slices.Contains(h.Reasons, "no leader known") {
		t.Fatalf("cut-off follower: %+v", h)
	}
	if code, h := mustProbe(t, cluster.LiveHandler(follower, 1000)); code != http.StatusOK || !h.Live {
		t.Fatalf("/health of the cut-off follower: %d %+v", code, h)
	}
	if code, h := mustProbe(t, cluster.ReadyHandler(c.Leader(), 1000)); code != http.StatusOK {
		t.Fatalf("the majority's leader: %d %+v", code, h)
	}

	c.Heal()
	mustProbeUntil(t, cluster.ReadyHandler(follower, 1000), http.StatusOK)

	c.Stop(follower.ID())
	code, h := mustProbe(t, cluster.LiveHandler(follower, 1000))
	if code != http.StatusServiceUnavailable || h.Live || !slices.Contains(h.Reasons, "raft is shut down") {
		t.Fatalf("/health of a stopped node: %d %+v", code, h)
	}
}
