package bench

import (
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"
)

// exactQuantile is the nearest-rank quantile of sorted samples.
func exactQuantile(sorted []time.Duration, q float64) time.Duration {
	rank := int(math.Ceil(q * float64(len(sorted))))
	rank = min(max(rank, 1), len(sorted))
	return sorted[rank-1]
}

func near(t *testing.T, what string, got, want time.Duration) {
	t.Helper()
	tol := float64(want) / subBuckets
	if math.Abs(float64(got-want)) > tol+1 {
		t.Errorf("%s = %v, want %v ± %.0fns", what, got, want, tol)
	}
}

func TestBenchBucketsCoverEveryValue(t *testing.T) {
	prevHi := int64(-1)
	for i := range numBuckets {
		lo, hi := bucketRange(i)
		if lo != prevHi+1 || hi < lo {
			t.Fatalf("bucket %d is [%d, %d], previous ended at %d", i, lo, hi, prevHi)
		}
		for _, v := range []int64{lo, hi, lo + (hi-lo)/2} {
			if b := bucketOf(v); b != i {
				t.Fatalf("bucketOf(%d) = %d, want %d ([%d, %d])", v, b, i, lo, hi)
			}
		}
		if lo >= subBuckets && float64(hi-lo+1)/float64(lo) > 1.0/subBuckets+1e-12 {
			t.Fatalf("bucket %d [%d, %d] is wider than 1/%d of its values", i, lo, hi, subBuckets)
		}
		prevHi = hi
		if hi == math.MaxInt64 {
			break
		}
	}
	if bucketOf(math.MaxInt64) >= numBuckets {
		t.Fatalf("MaxInt64 falls outside the buckets")
	}
}

func TestBenchQuantilesAgainstExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	dists := map[string]func() time.Duration{
		"uniform":   func() time.Duration { return time.Duration(rng.Int64N(int64(10 * time.Millisecond))) },
		"lognormal": func() time.Duration { return time.Duration(math.Exp(rng.NormFloat64()*2 + 10)) },
		"bimodal": func() time.Duration {
			if rng.IntN(100) < 95 {
				return 50*time.Microsecond + time.Duration(rng.Int64N(5000))
			}
			return 800*time.Millisecond + time.Duration(rng.Int64N(int64(time.Millisecond)))
		},
		"tiny": func() time.Duration { return time.Duration(rng.Int64N(100)) },
	}
	for name, gen := range dists {
		t.Run(name, func(t *testing.T) {
			var h Histogram
			var all []time.Duration
			for range 20000 {
				d := gen()
				all = append(all, d)
				h.Record(d)
			}
			slices.Sort(all)
			for _, q := range []float64{0, 0.01, 0.5, 0.9, 0.99, 0.999, 1} {
				near(t, name+" q"+strings.TrimRight(strings.TrimRight(time.Duration(q*1e9).String(), "s"), "n"),
					h.Quantile(q), exactQuantile(all, q))
			}
			if h.Count() != uint64(len(all)) || h.Max() != all[len(all)-1] {
				t.Errorf("count %d max %v, want %d %v", h.Count(), h.Max(), len(all), all[len(all)-1])
			}
			var sum float64
			for _, d := range all {
				sum += float64(d)
			}
			near(t, "mean", h.Mean(), time.Duration(sum/float64(len(all))))
		})
	}
}

// Merging the histograms of several workers gives the quantiles of all
// their samples together, also through JSON (the worker protocol).
func TestBenchMergeIsTheUnion(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	var all []time.Duration
	var merged Histogram
	for w := range 8 {
		var h Histogram
		scale := time.Duration(1+w*w) * time.Microsecond // workers see different latencies
		for range 1000 + 500*w {
			d := scale + time.Duration(rng.Int64N(int64(scale)))
			h.Record(d)
			all = append(all, d)
		}
		b, err := json.Marshal(&h)
		if err != nil {
			t.Fatal(err)
		}
		var back Histogram
		if err := json.Unmarshal(b, &back); err != nil {
			t.Fatal(err)
		}
		merged.Merge(&back)
	}
	merged.Merge(nil)
	merged.Merge(&Histogram{})
	slices.Sort(all)
	if merged.Count() != uint64(len(all)) {
		t.Fatalf("merged count %d, want %d", merged.Count(), len(all))
	}
	for _, q := range []float64{0.5, 0.9, 0.99} {
		near(t, "merged quantile", merged.Quantile(q), exactQuantile(all, q))
	}
	if merged.Max() != all[len(all)-1] || merged.Quantile(0) != all[0] {
		t.Errorf("merged min/max %v %v, want %v %v", merged.Quantile(0), merged.Max(), all[0], all[len(all)-1])
	}
}

func TestBenchEmptyAndBadHistograms(t *testing.T) {
	var h Histogram
	if h.Quantile(0.5) != 0 || h.Mean() != 0 || h.Count() != 0 {
		t.Fatalf("empty histogram: %v %v %d", h.Quantile(0.5), h.Mean(), h.Count())
	}
	h.Record(-5)
	if h.Quantile(1) != 0 {
		t.Fatalf("a negative sample counts as 0, got %v", h.Quantile(1))
	}
	for _, bad := range []string{`{"buckets":[[999999,1]],"n":1}`, `{"buckets":[[3,1]],"n":2}`} {
		if err := json.Unmarshal([]byte(bad), &h); err == nil {
			t.Errorf("%s: accepted", bad)
		}
	}
}

// aggregate sums the workers' counts, takes the slowest worker's time for
// the rate, and keeps the first error.
func TestBenchAggregate(t *testing.T) {
	mk := func(n int, d time.Duration, elapsed time.Duration) *phaseResult {
		h := &Histogram{}
		for range n {
			h.Record(d)
		}
		return &phaseResult{Ops: map[string]*Histogram{"handoff": h, "reacquire": {}}, Elapsed: elapsed}
	}
	a, b := mk(100, time.Millisecond, time.Second), mk(300, 3*time.Millisecond, 2*time.Second)
	b.Errors, b.FirstError, b.Overlaps = 2, "boom", 1
	rs := aggregate("lock-handoff", phases["lock-handoff"][0], []*phaseResult{a, b})
	if len(rs) != 1 { // no reacquire row without reacquires
		t.Fatalf("%d rows: %+v", len(rs), rs)
	}
	r := rs[0]
	if r.Ops != 400 || r.OpsPerSec != 200 || r.Errors != 2 || r.FirstError != "boom" || *r.Overlaps != 1 || r.Procs != 2 {
		t.Fatalf("aggregate: %+v", r)
	}
	if math.Abs(r.P50Micros-3000) > 3000.0/subBuckets || math.Abs(r.P99Micros-3000) > 3000.0/subBuckets {
		t.Fatalf("p50 %v p99 %v, want about 3000µs", r.P50Micros, r.P99Micros)
	}
	if math.Abs(r.MeanMicros-2500) > 2500.0/subBuckets {
		t.Fatalf("mean %vµs, want 2500", r.MeanMicros)
	}
}

func TestBenchParseMetricsAndMountinfo(t *testing.T) {
	m, err := parseMetrics(strings.NewReader(`# HELP x
jfsd_fsm_reads_total{method="getattr"} 10
jfsd_fsm_reads_total{method="lookup",x="a b}"} 5
jfsd_fsm_applied_index 1.5e3
jfsd_reads_total 7 1700000000
`))
	if err != nil || m["jfsd_fsm_reads_total"] != 15 || m["jfsd_fsm_applied_index"] != 1500 || m["jfsd_reads_total"] != 7 {
		t.Fatalf("parse: %v %v", m, err)
	}
	mi := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 22 0:25 / /tmp rw shared:2 - tmpfs tmpfs rw
40 30 0:50 / /tmp/my\040mnt rw,nosuid - fuse.jfs jfs:127.0.0.1:7101 rw,user_id=0
`)
	for path, want := range map[string]FSInfo{
		"/home/x":         {MountPoint: "/", Type: "ext4", Source: "/dev/sda1"},
		"/tmp":            {MountPoint: "/tmp", Type: "tmpfs", Source: "tmpfs"},
		"/tmp/my mntx":    {MountPoint: "/tmp", Type: "tmpfs", Source: "tmpfs"},
		"/tmp/my mnt/a/b": {MountPoint: "/tmp/my mnt", Type: "fuse.jfs", Source: "jfs:127.0.0.1:7101"},
		"/tmp/my mnt":     {MountPoint: "/tmp/my mnt", Type: "fuse.jfs", Source: "jfs:127.0.0.1:7101"},
	} {
		if got := findMount(mi, path); got != want {
			t.Errorf("findMount(%q) = %+v, want %+v", path, got, want)
		}
	}
}

// A mount is jfs by its type only: a JuiceFS mount has a .stats file too
// and must not get jfs's cluster columns.
func TestBenchClassifyByMountType(t *testing.T) {
	mi := []byte(`22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
40 22 0:50 / /mnt/jfs rw,nosuid - fuse.jfs jfs:127.0.0.1:7101 rw,user_id=0
41 22 0:51 / /mnt/juicefs rw,nosuid - fuse.juicefs JuiceFS:vol rw,user_id=0
42 22 0:52 / /mnt/other rw,nosuid - fuse jfs:looks-like-it rw,user_id=0
`)
	everyStats := func(string) bool { return true }
	for path, want := range map[string]FSInfo{
		"/mnt/jfs/a":     {MountPoint: "/mnt/jfs", Type: "fuse.jfs", Source: "jfs:127.0.0.1:7101", JFS: true, Stats: "/mnt/jfs/.stats"},
		"/mnt/juicefs/a": {MountPoint: "/mnt/juicefs", Type: "fuse.juicefs", Source: "JuiceFS:vol"},
		"/mnt/other":     {MountPoint: "/mnt/other", Type: "fuse", Source: "jfs:looks-like-it"},
		"/home":          {MountPoint: "/", Type: "ext4", Source: "/dev/sda1"},
	} {
		if got := classify(findMount(mi, path), everyStats); got != want {
			t.Errorf("%s: %+v, want %+v", path, got, want)
		}
	}
	got := classify(findMount(mi, "/mnt/jfs"), func(string) bool { return false })
	if !got.JFS || got.Stats != "" {
		t.Errorf("jfs mount without .stats: %+v", got)
	}
}
