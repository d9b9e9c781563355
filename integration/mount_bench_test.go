package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// benchOp is one operation measured from many goroutines: setup prepares
// worker w in dir and returns its state, and op runs its i-th operation.
type benchOp struct {
	name  string
	setup func(b *testing.B, dir string, w int) any
	op    func(dir string, state any, w, i int) error
}

var benchData = make([]byte, 4096)

var benchOps = []benchOp{
	{
		name: "stat",
		setup: func(b *testing.B, dir string, w int) any {
			if w == 0 {
				mustWriteFile(b, filepath.Join(dir, "stat"), nil)
			}
			return nil
		},
		op: func(dir string, _ any, w, i int) error {
			var st syscall.Stat_t
			return syscall.Stat(filepath.Join(dir, "stat"), &st)
		},
	},
	{
		name: "create4k",
		op: func(dir string, _ any, w, i int) error {
			fd, err := syscall.Open(filepath.Join(dir, fmt.Sprintf("c%d-%d", w, i)), syscall.O_CREAT|syscall.O_WRONLY|syscall.O_TRUNC|syscall.O_CLOEXEC, 0o644)
			if err != nil {
				return err
			}
			if _, err := syscall.Write(fd, benchData); err != nil {
				syscall.Close(fd)
				return err
			}
			return syscall.Close(fd)
		},
	},
	{
		name: "lock",
		// Each worker locks its own file, open for the whole run: goroutines
		// share the process's lock owner.
		setup: func(b *testing.B, dir string, w int) any {
			p := filepath.Join(dir, fmt.Sprintf("lock%d", w))
			mustWriteFile(b, p, nil)
			fd, err := syscall.Open(p, syscall.O_RDWR|syscall.O_CLOEXEC, 0)
			if err != nil {
				b.Fatal(err)
			}
			b.Cleanup(func() { syscall.Close(fd) })
			return fd
		},
		op: func(dir string, state any, w, i int) error {
			fd := state.(int)
			for _, typ := range []int16{syscall.F_WRLCK, syscall.F_UNLCK} {
				lk := syscall.Flock_t{Type: typ}
				if err := syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk); err != nil {
					return err
				}
			}
			return nil
		},
	},
}

// runBench runs b.N operations from par goroutines and reports ops/s and
// the latency percentiles.
func runBench(b *testing.B, dir string, par int, o benchOp) {
	dir = filepath.Join(dir, fmt.Sprintf("%s-%d-%d", o.name, par, b.N))
	if err := os.Mkdir(dir, 0o755); err != nil {
		b.Fatal(err)
	}
	state := make([]any, par)
	for w := range par {
		if o.setup != nil {
			state[w] = o.setup(b, dir, w)
		}
	}
	lat := make([][]time.Duration, par)
	var next atomic.Int64
	var wg sync.WaitGroup
	var failed atomic.Value
	b.ResetTimer()
	start := time.Now()
	for w := range par {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1)) - 1; i < b.N; i = int(next.Add(1)) - 1 {
				t0 := time.Now()
				if err := o.op(dir, state[w], w, i); err != nil {
					failed.Store(err)
					return
				}
				lat[w] = append(lat[w], time.Since(t0))
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	b.StopTimer()
	if err := failed.Load(); err != nil {
		b.Fatal(err)
	}
	all := slices.Concat(lat...)
	slices.Sort(all)
	pct := func(p float64) float64 { return float64(all[int(p*float64(len(all)-1))].Nanoseconds()) / 1e3 }
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "ops/s")
	b.ReportMetric(pct(0.50), "p50-µs")
	b.ReportMetric(pct(0.99), "p99-µs")
}

// BenchmarkMount measures a jfs mount of a three-node cluster, with the
// kernel's caches off, beside a local directory for scale.
func BenchmarkMount(b *testing.B) {
	pc := startProcCluster(b, 3)
	m := startMount(b, pc, noCache...)
	for _, target := range []struct{ name, dir string }{{"jfs", m.dir}, {"local", b.TempDir()}} {
		for _, o := range benchOps {
			for _, par := range []int{1, 16} {
				b.Run(fmt.Sprintf("%s/%s/par=%d", target.name, o.name, par), func(b *testing.B) {
					runBench(b, target.dir, par, o)
				})
			}
		}
	}
}
