package cluster

import (
	"math"
	"testing"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
)

// TestTermGuard: a request whose term is more than MaxTermJump above the
// node's is answered with ErrTermTooFar and never reaches the consumer;
// one within the bound does. (The in-memory transport has no heartbeat
// fast path; the integration test TestForgedVoteTermRefused covers the
// TCP transport.)
func TestTermGuard(t *testing.T) {
	const cur = 7
	_, target := raft.NewInmemTransport("target")
	_, sender := raft.NewInmemTransport("sender")
	sender.Connect("target", target)
	target.Connect("sender", sender)
	g := guardTerms(target, func() uint64 { return cur }, hclog.NewNullLogger())
	defer g.Close()

	// Everything that gets through is answered by this stand-in for raft.
	passed := make(chan uint64, 8)
	answer := func(rpc raft.RPC) {
		switch r := rpc.Command.(type) {
		case *raft.RequestVoteRequest:
			passed <- r.Term
			rpc.Respond(&raft.RequestVoteResponse{Term: r.Term}, nil)
		case *raft.AppendEntriesRequest:
			passed <- r.Term
			rpc.Respond(&raft.AppendEntriesResponse{Term: r.Term, Success: true}, nil)
		}
	}
	go func() {
		for rpc := range g.Consumer() {
			answer(rpc)
		}
	}()
	g.SetHeartbeatHandler(answer)

	vote := func(term uint64) error {
		var resp raft.RequestVoteResponse
		return sender.RequestVote("target", "target", &raft.RequestVoteRequest{Term: term}, &resp)
	}
	appendEntries := func(term uint64) error {
		var resp raft.AppendEntriesResponse
		return sender.AppendEntries("target", "target", &raft.AppendEntriesRequest{
			RPCHeader: raft.RPCHeader{Addr: []byte("sender")}, Term: term}, &resp)
	}
	for _, tc := range []struct {
		name string
		send func(uint64) error
		term uint64
		ok   bool
	}{
		{"vote, next term", vote, cur + 1, true},
		{"vote, at the bound", vote, cur + MaxTermJump, true},
		{"vote, past the bound", vote, cur + MaxTermJump + 1, false},
		{"vote, 2^64-1", vote, math.MaxUint64, false},
		{"append, older term", appendEntries, 1, true},
		{"append, 2^64-1", appendEntries, math.MaxUint64, false},
	} {
		err := tc.send(tc.term)
		if tc.ok {
			if err != nil {
				t.Fatalf("%s: %v", tc.name, err)
			}
			// The stand-in passes the term on before it answers.
			select {
			case got := <-passed:
				if got != tc.term {
					t.Fatalf("%s: raft saw term %d", tc.name, got)
				}
			default:
				t.Fatalf("%s: answered but never passed on", tc.name)
			}
			continue
		}
		if err == nil || err.Error() != ErrTermTooFar.Error() {
			t.Fatalf("%s: got %v, want %v", tc.name, err, ErrTermTooFar)
		}
		select {
		case got := <-passed:
			t.Fatalf("%s: raft saw term %d", tc.name, got)
		default:
		}
	}
}
