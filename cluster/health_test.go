package cluster

import (
	"slices"
	"strings"
	"testing"
)

func TestHealthJudge(t *testing.T) {
	base := Health{Node: "n1", State: "Follower", Leader: "n2", CommitIndex: 5000, AppliedIndex: 4500, MaxLag: 1000}
	for _, tc := range []struct {
		name        string
		edit        func(h *Health)
		live, ready bool
		lag         uint64
		reason      string // a substring of one reason; "" when ready
	}{
		{"healthy follower", func(*Health) {}, true, true, 500, ""},
		{"lag at the bound", func(h *Health) { h.AppliedIndex = 4000 }, true, true, 1000, ""},
		{"lag past the bound", func(h *Health) { h.AppliedIndex = 3999 }, true, false, 1001, "1001 entries behind"},
		{"applied ahead of commit", func(h *Health) { h.AppliedIndex = 6000 }, true, true, 0, ""},
		{"no leader", func(h *Health) { h.Leader = ""; h.State = "Candidate" }, true, false, 500, "no leader known"},
		{"corrupt", func(h *Health) { h.Corrupt = "digest differs" }, true, false, 500, "corrupt: digest differs"},
		{"failed", func(h *Health) { h.Failed = "apply stopped" }, false, false, 500, "node failed: apply stopped"},
		{"shut down", func(h *Health) { h.State = "Shutdown"; h.Leader = "" }, false, false, 500, "raft is shut down"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := base
			tc.edit(&h)
			h.judge()
			if h.Live != tc.live || h.Ready != tc.ready || h.Lag != tc.lag {
				t.Fatalf("live %v ready %v lag %d, want %v %v %d (reasons %q)", h.Live, h.Ready, h.Lag, tc.live, tc.ready, tc.lag, h.Reasons)
			}
			if tc.reason == "" {
				if len(h.Reasons) != 0 {
					t.Fatalf("ready, yet reasons %q", h.Reasons)
				}
				return
			}
			if !slices.ContainsFunc(h.Reasons, func(r string) bool { return strings.Contains(r, tc.reason) }) {
				t.Fatalf("reasons %q lack %q", h.Reasons, tc.reason)
			}
		})
	}
}
