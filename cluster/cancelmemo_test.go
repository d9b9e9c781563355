package cluster

import (
	"testing"
	"time"
)

// TestCancelMemo: a cancel is remembered for cancelMemoFor and taken once;
// a key cancelled again keeps its newer entry when the older one expires;
// the queue holds no more than about twice the live entries however many
// cancels pass through, so each call does O(1) amortised work.
func TestCancelMemo(t *testing.T) {
	m := newCancelMemo()
	t0 := time.Unix(1000, 0)
	k := func(i uint64) waitKey { return waitKey{session: 1, seq: i} }

	m.add(k(1), t0)
	m.add(k(2), t0.Add(time.Second))
	if !m.take(k(1), t0.Add(cancelMemoFor)) {
		t.Fatal("a cancel taken within cancelMemoFor was forgotten")
	}
	if m.take(k(1), t0.Add(cancelMemoFor)) {
		t.Fatal("a cancel was taken twice")
	}
	if m.take(k(2), t0.Add(time.Second+cancelMemoFor+time.Nanosecond)) {
		t.Fatal("a cancel older than cancelMemoFor was still remembered")
	}

	// Cancelled again: the first entry's expiry must not drop the second.
	m.add(k(3), t0.Add(2*time.Minute))
	m.add(k(3), t0.Add(2*time.Minute+30*time.Second))
	if !m.take(k(3), t0.Add(3*time.Minute+time.Second)) {
		t.Fatal("a key cancelled again was forgotten when its first cancel expired")
	}

	// A stream of cancels, one a millisecond, none ever taken: the memo
	// keeps about a minute's worth and the queue does not grow past twice
	// that.
	const n = 300_000
	start := t0.Add(time.Hour)
	maxQueue := 0
	for i := range n {
		m.add(k(uint64(10+i)), start.Add(time.Duration(i)*time.Millisecond))
		maxQueue = max(maxQueue, len(m.queue))
	}
	live := int(cancelMemoFor / time.Millisecond)
	if got := m.len(); got > live+1 || got < live-1 {
		t.Fatalf("%d cancels remembered, want about %d (a minute's worth)", got, live)
	}
	if maxQueue > 2*live+2 {
		t.Fatalf("the expiry queue grew to %d entries for %d live ones", maxQueue, live)
	}
}
