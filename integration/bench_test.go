package integration

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// BenchmarkEndToEnd measures create and getattr through the Go client against
// three real jfsd processes, from 1 and 32 concurrent callers. It reports
// ops/s and the p50 and p99 latency of single requests.
//
//	go test -run XXX -bench EndToEnd -benchtime 2000x ./integration/
func BenchmarkEndToEnd(b *testing.B) {
	pc := startProcCluster(b, 3)
	c := pc.client(b)
	ctx := context.Background()
	if r, err := c.Register(ctx, "bench", "/bench", 1, "bench"); err != nil || r.Errno != 0 {
		b.Fatalf("register: %v %v", err, r)
	}
	var seq atomic.Uint64
	leader := pc.leader(b, c)
	for _, callers := range []int{1, 32} {
		b.Run(fmt.Sprintf("create/callers=%d", callers), func(b *testing.B) {
			before := leader.metrics(b)
			defer func() { logWhereTimeGoes(b, before, leader.metrics(b)) }()
			dir := mustMkdir(b, c, fmt.Sprintf("create-%d-%d", callers, seq.Add(1)))
			runConcurrent(b, callers, func(i int) error {
				r, err := c.Create(ctx, &jfspb.CreateRequest{Parent: dir, Name: []byte(fmt.Sprintf("f%d", i)),
					Mode: 0o644, Flags: uint32(syscall.O_CREAT | syscall.O_EXCL | syscall.O_RDWR), Fh: uint64(i)})
				if err != nil {
					return err
				}
				return client.Errno(r.Errno)
			})
		})
		b.Run(fmt.Sprintf("getattr/callers=%d", callers), func(b *testing.B) {
			dir := mustMkdir(b, c, fmt.Sprintf("getattr-%d-%d", callers, seq.Add(1)))
			runConcurrent(b, callers, func(int) error {
				r, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: dir})
				if err != nil {
					return err
				}
				return client.Errno(r.Errno)
			})
		})
	}
}

func mustMkdir(b *testing.B, c *client.Client, name string) uint64 {
	b.Helper()
	r, err := c.Mkdir(context.Background(), &jfspb.MkdirRequest{Parent: 1, Name: []byte(name), Mode: 0o755})
	if err != nil || r.Errno != 0 {
		b.Fatalf("mkdir %s: %v %v", name, err, r)
	}
	return r.Attr.Ino
}

// runConcurrent runs op b.N times from callers goroutines and reports
// throughput and latency percentiles.
func runConcurrent(b *testing.B, callers int, op func(i int) error) {
	var next atomic.Int64
	lat := make([][]time.Duration, callers)
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := 0; w < callers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				t0 := time.Now()
				if err := op(i); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err, _ := failed.Load().(error); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Microseconds()) }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// logWhereTimeGoes prints, from the leader's metrics, how long the phases of
// a write took on average between two scrapes: the leader's log write
// (fsync), the time from proposal to commit (which includes the followers'
// round trip and their fsync), and the state machine's apply.
func logWhereTimeGoes(b *testing.B, before, after map[string]float64) {
	avg := func(name string) string {
		n := after[name+"_count"] - before[name+"_count"]
		if n == 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.0fµs x%.0f", (after[name+"_sum"]-before[name+"_sum"])/n*scale(name), n)
	}
	b.Logf("leader, per event: log store %s; commit %s; fsm apply batch %s; apply batch size %s",
		avg(`jfsd_raft_leader_dispatchLog`), avg(`jfsd_raft_commitTime`),
		avg(`jfsd_apply_duration_seconds`), batchAvg(before, after))
}

// scale turns a metric's unit into microseconds: go-metrics timings are in
// milliseconds, jfsd's own in seconds.
func scale(name string) float64 {
	if strings.HasPrefix(name, "jfsd_raft_") {
		return 1e3
	}
	return 1e6
}

func batchAvg(before, after map[string]float64) string {
	n := after["jfsd_apply_batch_size_count"] - before["jfsd_apply_batch_size_count"]
	if n == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f", (after["jfsd_apply_batch_size_sum"]-before["jfsd_apply_batch_size_sum"])/n)
}
