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
	lw.allDirty = false // no state machine here: the graph below is all there is
	var ended []waitKey
	lw.endWait = func(key waitKey, errno syscall.Errno) {
		if errno != syscall.EDEADLK {
			t.Errorf("wait %v ended with %v, want EDEADLK", key, errno)
		}
		ended = append(ended, key)
	}
	p := func(i uint64) rangelock.Owner { return rangelock.Owner{Session: 7, ID: i} }
	base := time.Now()
	add := func(id uint64, ino uint64, from, to rangelock.Owner, age time.Duration, flock bool) waitKey {
		key := waitKey{7, id}
		lw.gwaits[id] = graphWait{key: key, ino: ino, flock: flock, since: base.Add(-age).UnixNano()}
		lw.inoWaits[ino] = append(lw.inoWaits[ino], id)
		if err := lw.graph.Add(id, from, []rangelock.Owner{to}); err != nil {
			t.Fatal(err)
		}
		return key
	}
	// p1 -> p2 -> p3 -> p1, plus p4 -> p1 outside the cycle.
	add(1, 10, p(1), p(2), 3*time.Second, false)
	add(2, 11, p(2), p(3), 0, true) // youngest, but a flock wait
	young := add(3, 12, p(3), p(1), time.Second, false)
	add(4, 13, p(4), p(1), 0, false)
	// p1 also waits, youngest of all, for p9: not an edge of the cycle.
	add(5, 14, p(1), p(9), -time.Second, false)

	lw.detect()

	if len(ended) != 1 || ended[0] != young {
		t.Fatalf("ended %v; want only the youngest POSIX wait of the cycle, %v", ended, young)
	}
	if c := lw.graph.Cycles(); len(c) != 0 {
		t.Fatalf("cycles left: %v", c)
	}
	// Until its end is applied the victim is not chosen again.
	lw.detect()
	if len(ended) != 1 {
		t.Fatalf("a second detect ended %v", ended)
	}
}
