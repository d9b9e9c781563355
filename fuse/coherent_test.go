package fuse

import (
	"testing"
	"time"
)

type fakeLease struct {
	id    uint64
	until time.Time
}

func (f *fakeLease) ID() uint64                      { return f.id }
func (f *fakeLease) LeaseUntil() (uint64, time.Time) { return f.id, f.until }

// TestCoherentTimeout: a granted answer is kept by the kernel until the
// session's lease ends, at most the maximum; never when an event, a reset
// or a new stream came while it was in flight, nor under another session.
func TestCoherentTimeout(t *testing.T) {
	l := &fakeLease{id: 7, until: time.Now().Add(time.Hour)}
	fs := &FS{opts: Options{Session: l, Metrics: NewMetrics()}}
	co := newCoherent(fs, time.Minute)
	fs.coh = co

	if sid, may, _ := co.begin(); sid != 7 || may {
		t.Fatalf("before the stream is ready: session %d, may cache %v; want 7, false", sid, may)
	}
	co.setReady(7)
	sid, may, gen := co.begin()
	if sid != 7 || !may {
		t.Fatalf("ready: session %d, may cache %v", sid, may)
	}
	if d := co.timeout(sid, gen, 5, &entryKey{1, "f"}); d != time.Minute {
		t.Fatalf("timeout %v, want the maximum, 1m", d)
	}
	if g, ok := co.entrys[entryKey{1, "f"}]; !ok || g.ino != 5 {
		t.Fatalf("entry grant not recorded: %v", co.entrys)
	}

	// An event while an answer is in flight: the answer is not kept, and
	// the event drops the entries recorded for the inode it names.
	_, _, gen = co.begin()
	co.drop([]uint64{5}, nil, false)
	if d := co.timeout(sid, gen, 5, nil); d != 0 {
		t.Fatalf("answer read before an event: timeout %v, want 0", d)
	}
	if len(co.entrys) != 0 || len(co.inos) != 0 {
		t.Fatalf("after an event for inode 5: entries %v inodes %v", co.entrys, co.inos)
	}

	// The lease bounds the timeout.
	l.until = time.Now().Add(10 * time.Second)
	_, _, gen = co.begin()
	if d := co.timeout(sid, gen, 5, nil); d <= 0 || d > 10*time.Second {
		t.Fatalf("timeout %v, want at most the 10s left of the lease", d)
	}
	l.until = time.Now().Add(-time.Second)
	_, _, gen = co.begin()
	if d := co.timeout(sid, gen, 5, nil); d != 0 {
		t.Fatalf("timeout %v past the lease, want 0", d)
	}

	// A grant asked for under session 7 is not kept once the session is 8.
	l.until = time.Now().Add(time.Hour)
	_, _, gen = co.begin()
	l.id = 8
	if d := co.timeout(7, gen, 5, nil); d != 0 {
		t.Fatalf("timeout %v under a new session, want 0", d)
	}
	// A broken stream: nothing is asked for until the next reset.
	co.setReady(0)
	if _, may, _ := co.begin(); may {
		t.Fatal("may cache with no stream")
	}
}
