package cluster

import (
	"errors"
	"testing"
	"time"
)

// blockingView is a checkpoint's view whose digest runs until the test
// lets it finish.
type blockingView struct {
	sum      [32]byte
	started  chan struct{}
	finish   chan struct{}
	released chan struct{}
}

func newBlockingView(b byte) *blockingView {
	return &blockingView{sum: [32]byte{b}, started: make(chan struct{}, 1), finish: make(chan struct{}),
		released: make(chan struct{})}
}

func (v *blockingView) Digest() ([32]byte, error) {
	v.started <- struct{}{}
	<-v.finish
	return v.sum, nil
}

func (v *blockingView) Release() { close(v.released) }

func digestDone(t *testing.T, c *checkpoints, index uint64) *digestResult {
	t.Helper()
	c.mu.Lock()
	r := c.byIndex[index]
	c.mu.Unlock()
	if r == nil {
		t.Fatalf("no result kept for index %d", index)
	}
	select {
	case <-r.done:
	case <-time.After(30 * time.Second):
		t.Fatalf("the result for index %d is not done within 30s", index)
	}
	return r
}

// A checkpoint that arrives while a digest runs is not digested: it is
// recorded as skipped at once (so the leader does not wait for it), and
// its view is released. The next checkpoint after the digest ended is
// digested again.
func TestOneDigestAtATime(t *testing.T) {
	var c checkpoints
	first, second, third := newBlockingView(1), newBlockingView(2), newBlockingView(3)
	c.take(10, first)
	<-first.started
	if !c.busy() {
		t.Fatal("not busy while a digest runs")
	}
	c.take(11, second)
	r := digestDone(t, &c, 11)
	if !errors.Is(r.err, errDigestSkipped) || !errors.Is(r.err, errNoDigest) {
		t.Fatalf("the checkpoint during a digest: %v, want it skipped", r.err)
	}
	select {
	case <-second.released:
	default:
		t.Fatal("the skipped view was not released")
	}
	select {
	case <-second.started:
		t.Fatal("a second digest ran while the first one did")
	default:
	}
	close(first.finish)
	if r := digestDone(t, &c, 10); r.err != nil || r.sum != first.sum {
		t.Fatalf("first digest: %x %v", r.sum[:1], r.err)
	}
	<-first.released
	if c.busy() {
		t.Fatal("still busy after the digest ended")
	}
	close(third.finish)
	c.take(12, third)
	if r := digestDone(t, &c, 12); r.err != nil || r.sum != third.sum {
		t.Fatalf("digest after the first ended: %x %v", r.sum[:1], r.err)
	}
}
