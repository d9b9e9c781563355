package cluster

import (
	"encoding/json"
	"fmt"
	"net/http"

	"github.com/hashicorp/raft"
)

// DefaultReadyMaxLag is how many committed log entries a node may have
// left to apply and still count as ready.
const DefaultReadyMaxLag = 1000

// Health is a node's own view of whether it is alive and whether it can
// serve (DESIGN.md, "Health"). It is what /health and /ready answer.
type Health struct {
	Node  string `json:"node"`
	State string `json:"state"`
	// Leader is the id of the leader this node knows, or "".
	Leader       string `json:"leader"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// Lag is CommitIndex - AppliedIndex (0 when applied is ahead, as it is
	// for a moment after a restart from a snapshot).
	Lag uint64 `json:"lag"`
	// MaxLag is the bound on Lag that Ready was judged by.
	MaxLag uint64 `json:"max_lag"`
	// Corrupt says why this node's state was found corrupt, or "".
	Corrupt string `json:"corrupt,omitempty"`
	// Failed says why the node can no longer work, or "".
	Failed string `json:"failed,omitempty"`
	// Live: the process runs and its raft is running (not shut down, not
	// failed). Ready: it is live, knows a leader, is not corrupt and has
	// applied the log to within MaxLag of the commit index.
	Live  bool `json:"live"`
	Ready bool `json:"ready"`
	// Reasons says why the node is not live or not ready; empty when ready.
	Reasons []string `json:"reasons"`
}

// judge fills Live, Ready, Lag and Reasons from the other fields. It is
// pure: the same fields give the same answer.
func (h *Health) judge() {
	h.Lag = 0
	if h.CommitIndex > h.AppliedIndex {
		h.Lag = h.CommitIndex - h.AppliedIndex
	}
	h.Reasons = []string{}
	if h.Failed != "" {
		h.Reasons = append(h.Reasons, "node failed: "+h.Failed)
	}
	if h.State == raft.Shutdown.String() {
		h.Reasons = append(h.Reasons, "raft is shut down")
	}
	h.Live = len(h.Reasons) == 0
	if h.Leader == "" {
		h.Reasons = append(h.Reasons, "no leader known")
	}
	if h.Corrupt != "" {
		h.Reasons = append(h.Reasons, "state is corrupt: "+h.Corrupt)
	}
	if h.Lag > h.MaxLag {
		h.Reasons = append(h.Reasons, fmt.Sprintf("applied index %d is %d entries behind the commit index %d (more than %d)",
			h.AppliedIndex, h.Lag, h.CommitIndex, h.MaxLag))
	}
	h.Ready = len(h.Reasons) == 0
}

// Health returns the node's view of its own health, judging readiness by
// maxLag. Safe to call concurrently with everything, and after Shutdown.
func (n *Node) Health(maxLag uint64) Health {
	_, leader := n.raft.LeaderWithID()
	h := Health{
		Node:         n.cfg.ID,
		State:        n.raft.State().String(),
		Leader:       string(leader),
		Term:         n.raft.CurrentTerm(),
		CommitIndex:  n.raft.CommitIndex(),
		AppliedIndex: n.fsm.AppliedIndex(),
		MaxLag:       maxLag,
		Corrupt:      n.Corrupt(),
	}
	if err := n.Err(); err != nil {
		h.Failed = err.Error()
	}
	h.judge()
	return h
}

// LiveHandler answers /health: 200 while the node is live, 503 once it
// failed or its raft shut down; the body is the Health (its readiness
// judged by maxLag, as /ready does) as JSON either way.
func LiveHandler(n *Node, maxLag uint64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := n.Health(maxLag)
		writeHealth(w, h, h.Live)
	})
}

// ReadyHandler answers /ready: 200 while the node is ready (Health.Ready,
// judged by maxLag), else 503; the body is the Health as JSON either way.
func ReadyHandler(n *Node, maxLag uint64) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := n.Health(maxLag)
		writeHealth(w, h, h.Ready)
	})
}

func writeHealth(w http.ResponseWriter, h Health, ok bool) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if ok {
		w.WriteHeader(http.StatusOK)
	} else {
		w.WriteHeader(http.StatusServiceUnavailable)
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(h) // the status is sent; a client that went away is no error of ours
}
