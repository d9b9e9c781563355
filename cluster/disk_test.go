package cluster

import (
	"testing"

	"github.com/hashicorp/raft"
)

func TestTrailingFor(t *testing.T) {
	for _, tc := range []struct{ entries, bytes, limit, max, want uint64 }{
		{0, 0, 64 << 20, 10240, 10240},          // nothing seen: the entry bound
		{1000, 200_000, 64 << 20, 10240, 10240}, // small entries: the entry bound
		{100, 100 << 20, 64 << 20, 10240, 64},   // 1 MiB entries: 64 of them
		{10, 100 << 20, 1 << 20, 10240, 1},      // entries larger than the limit: one
		{3, 3 << 20, 64 << 20, 10240, 64},       // exact
	} {
		if got := trailingFor(tc.entries, tc.bytes, tc.limit, tc.max); got != tc.want {
			t.Errorf("trailingFor(%d, %d, %d, %d) = %d, want %d", tc.entries, tc.bytes, tc.limit, tc.max, got, tc.want)
		}
	}
}

// A snapshot is due by size once the log grew by the threshold and by half
// the state's size.
func TestSnapshotDueBySize(t *testing.T) {
	var b logBytes
	mb := &raft.Log{Data: make([]byte, 1<<20)}
	for i := 1; i < 4; i++ {
		if b.add([]*raft.Log{mb}, 4<<20) {
			t.Fatalf("due after %d MiB of a 4 MiB threshold", i)
		}
	}
	if !b.add([]*raft.Log{mb}, 4<<20) {
		t.Fatal("not due after 4 MiB")
	}
	if e, n := b.reset(); e != 4 || n != 4<<20 {
		t.Fatalf("reset: %d entries %d bytes", e, n)
	}
	b.state.Store(16 << 20) // half of it is 8 MiB
	for i := 1; i < 8; i++ {
		if b.add([]*raft.Log{mb}, 4<<20) {
			t.Fatalf("due after %d MiB with a 16 MiB state", i)
		}
	}
	if !b.add([]*raft.Log{mb}, 4<<20) {
		t.Fatal("not due after 8 MiB with a 16 MiB state")
	}
}
