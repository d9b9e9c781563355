package cluster_test

import (
	"context"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// BenchmarkHandOff measures a lock hand-off between two hosts on an
// in-process cluster: the holder unlocks while the other waits in F_SETLKW;
// the time is from the unlock's call to the waiter's return. Then the roles
// swap.
func BenchmarkHandOff(b *testing.B) {
	c := clustertest.NewCluster(b, 3)
	leader := c.Leader()
	cl := [2]*lockClient{newLockClient(b, leader, "hostA"), newLockClient(b, leader, "hostB")}
	ino := cl[0].mustCreate("f")
	cl[0].mustLock(ino, 1, wr, 0, 0)
	var total time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		h, w := cl[i%2], cl[(i+1)%2]
		hp, wp := uint32(1+i%2), uint32(1+(i+1)%2)
		ch := w.setlkwAsync(context.Background(), ino, wp, wr, 0, 0)
		for !w.isWaiting(ino, wp) {
			time.Sleep(100 * time.Microsecond)
		}
		start := time.Now()
		h.mustLock(ino, hp, un, 0, 0)
		if r := <-ch; r.err != nil || r.errno != 0 {
			b.Fatalf("hand-off %d: %v %v", i, r.err, r.errno)
		}
		total += time.Since(start)
	}
	b.ReportMetric(float64(total.Microseconds())/float64(b.N), "us/handoff")
}
