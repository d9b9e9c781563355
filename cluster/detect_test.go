package cluster

import (
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"

	"github.com/jfs-dev/jfs/rangelock"
)

// TestDetectBreaksLateCycle: a cycle that formed after its waits were
// admitted (here put into the graph directly) is broken by failing the
// youngest POSIX wait that makes one of its edges with EDEADLK; flock waits,
// waits outside the cycle and other waits of its processes are left alone.
func TestDetectBreaksLateCycle(t *testing.T) {
	lw := newLockWaits(&Node{log: hclog.NewNullLogger()})
	p := func(i uint64) rangelock.Owner { return rangelock.Owner{Session: 7, ID: i} }
	base := time.Now()
	add := func(id uint64, ino uint64, from, to rangelock.Owner, age time.Duration, flock bool) *waiter {
		w := &waiter{id: id, ino: ino, node: from, owner: from, flock: flock, since: base.Add(-age),
			key: waitKey{7, id}, done: make(chan waitResult, 1)}
		lw.queues[ino] = append(lw.queues[ino], w)
		lw.byID[id] = w
		lw.byKey[w.key] = w
		if err := lw.graph.Add(id, from, []rangelock.Owner{to}); err != nil {
			t.Fatal(err)
		}
		return w
	}
	// p1 -> p2 -> p3 -> p1, plus p4 -> p1 outside the cycle.
	oldest := add(1, 10, p(1), p(2), 3*time.Second, false)
	flock := add(2, 11, p(2), p(3), 0, true) // youngest, but a flock wait
	young := add(3, 12, p(3), p(1), time.Second, false)
	outside := add(4, 13, p(4), p(1), 0, false)
	// p1 also waits, youngest of all, for p9: not an edge of the cycle.
	unrelated := add(5, 14, p(1), p(9), -time.Second, false)

	lw.detect()

	select {
	case r := <-young.done:
		if r.errno != syscall.EDEADLK {
			t.Fatalf("victim got %v, want EDEADLK", r.errno)
		}
	default:
		t.Fatal("the youngest POSIX wait in the cycle was not failed")
	}
	for _, w := range []*waiter{oldest, flock, outside, unrelated} {
		select {
		case r := <-w.done:
			t.Fatalf("wait %d failed with %v; only the victim should be", w.id, r.errno)
		default:
		}
	}
	if c := lw.graph.Cycles(); len(c) != 0 {
		t.Fatalf("cycles left: %v", c)
	}
}
