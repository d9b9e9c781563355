package integration

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// BenchmarkLockHandoff measures a contended fcntl lock passed between
// processes spread over two mounts of a three-node cluster, and the same on
// a local directory for scale: hand-offs per second, and the wake-up
// latency from one holder's unlock to the next holder's return from
// F_SETLKW (p50, p99).
//
//	go test -run XXX -bench LockHandoff -benchtime 400x ./integration/
func BenchmarkLockHandoff(b *testing.B) {
	pc := startProcCluster(b, 3)
	mounts := []*jfsMount{startMount(b, pc), startMount(b, pc)}
	local := b.TempDir()
	for _, procs := range []int{2, 16} {
		b.Run(fmt.Sprintf("jfs/procs=%d", procs), func(b *testing.B) {
			runHandoff(b, procs, func(i int) string { return mounts[i%2].path("handoff") })
		})
		b.Run(fmt.Sprintf("local/procs=%d", procs), func(b *testing.B) {
			runHandoff(b, procs, func(int) string { return local + "/handoff" })
		})
	}
}

func runHandoff(b *testing.B, procs int, path func(i int) string) {
	ls := make([]*locker, procs)
	for i := range ls {
		ls[i] = startLocker(b, fmt.Sprintf("handoff%d", i))
		ls[i].must("open 1 %s", path(i))
	}
	rounds := max(1, b.N/procs)
	type event struct {
		at   int64
		proc int
		up   bool // an unlock; else a grant
	}
	var mu sync.Mutex
	var events []event
	var wg sync.WaitGroup
	b.ResetTimer()
	start := time.Now()
	for i, l := range ls {
		wg.Add(1)
		l.send("handoff 1 %d", rounds)
		go func(i int, l *locker) {
			defer wg.Done()
			r, ok := l.answer(10 * time.Minute)
			if !ok || !strings.HasPrefix(r, "times ") {
				b.Errorf("locker %d: %q", i, r)
				return
			}
			mu.Lock()
			defer mu.Unlock()
			for _, gu := range strings.Fields(strings.TrimPrefix(r, "times ")) {
				g, u, _ := strings.Cut(gu, ":")
				gn, _ := strconv.ParseInt(g, 10, 64)
				un, _ := strconv.ParseInt(u, 10, 64)
				events = append(events, event{gn, i, false}, event{un, i, true})
			}
		}(i, l)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	slices.SortFunc(events, func(x, y event) int { return int(x.at - y.at) })
	// A wake-up: a grant to one process right after another's unlock.
	var wake []int64
	for i := 1; i < len(events); i++ {
		if e, prev := events[i], events[i-1]; !e.up && prev.up && prev.proc != e.proc {
			wake = append(wake, e.at-prev.at)
		}
	}
	handoffs := procs * rounds
	b.ReportMetric(float64(handoffs)/elapsed.Seconds(), "handoffs/s")
	if len(wake) > 0 {
		slices.Sort(wake)
		b.ReportMetric(float64(wake[len(wake)/2])/1e3, "wake-p50-µs")
		b.ReportMetric(float64(wake[len(wake)*99/100])/1e3, "wake-p99-µs")
	}
}
