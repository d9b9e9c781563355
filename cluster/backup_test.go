package cluster

import (
	"testing"

	"github.com/hashicorp/raft"
)

// TestCheckLogHoleBelowSnapshot: installing a snapshot (a restored backup,
// or a follower far behind) leaves a hole in a node's log between its old
// entries and the snapshot's index; the node must still start. A hole above
// the newest snapshot is damage.
func TestCheckLogHoleBelowSnapshot(t *testing.T) {
	s := raft.NewInmemStore()
	for _, i := range []uint64{1, 2, 3, 1 << 40, 1<<40 + 1} {
		if err := s.StoreLog(&raft.Log{Index: i, Term: 1, Type: raft.LogNoop}); err != nil {
			t.Fatal(err)
		}
	}
	// A hole of 2^40 entries: checked without visiting each.
	if err := checkLog(s, 1<<40-1); err != nil {
		t.Fatalf("hole below the snapshot: %v", err)
	}
	if err := checkLog(s, 5); err == nil {
		t.Fatal("a hole above the snapshot at 5 was accepted")
	}
	if err := checkLog(s, 0); err == nil {
		t.Fatal("a hole with no snapshot was accepted")
	}
}
