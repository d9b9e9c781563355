package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

func TestMain(m *testing.M) {
	if os.Getenv(WorkerEnv) == "1" {
		os.Exit(WorkerMain(os.Stdin, os.Stdout))
	}
	os.Exit(m.Run())
}

// workerCommand re-executes this test binary as a worker.
func workerCommand() *exec.Cmd {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), WorkerEnv+"=1")
	return cmd
}

// TestWorkloadsOnALocalDir runs every workload briefly with real worker
// processes on a local directory and checks what they counted.
func TestBenchWorkloadsOnALocalDir(t *testing.T) {
	dir := t.TempDir()
	const procs = 3
	var progress bytes.Buffer
	rep, err := Run(context.Background(), Config{
		// Long enough that every process gets some operations done even
		// when a loaded machine starves it for a while.
		Dir: dir, Workloads: Workloads, Procs: procs, Duration: time.Second,
		MaxFiles: 2000, Command: workerCommand, Progress: &progress,
	})
	if err != nil {
		t.Fatal(err)
	}
	byOp := map[string]Result{}
	for _, r := range rep.Results {
		t.Logf("%-12s %-28s %7d ops %9.0f ops/s p50 %8.1fµs p99 %8.1fµs errors %d", r.Workload, r.Op, r.Ops, r.OpsPerSec, r.P50Micros, r.P99Micros, r.Errors)
		byOp[r.Workload+"/"+r.Op] = r
		if r.Errors != 0 {
			t.Errorf("%s %s: %d errors, first: %s", r.Workload, r.Op, r.Errors, r.FirstError)
		}
		if r.Procs != procs || r.Cluster != nil || r.CPU != nil || r.CPUMicrosPerOp != nil {
			t.Errorf("%s %s: procs %d cluster %+v cpu %+v", r.Workload, r.Op, r.Procs, r.Cluster, r.CPU)
		}
		if r.Ops > 0 && (r.P50Micros <= 0 || r.P99Micros < r.P50Micros || r.MaxMicros < r.P99Micros || r.OpsPerSec <= 0) {
			t.Errorf("%s %s: implausible p50 %v p99 %v max %v ops/s %v", r.Workload, r.Op, r.P50Micros, r.P99Micros, r.MaxMicros, r.OpsPerSec)
		}
	}
	for _, k := range []string{"stat-storm/stat", "lookup-storm/stat", "lock-pairs/fcntl lock+unlock", "lock-pairs/flock lock+unlock",
		"lock-handoff/handoff", "meta/create", "smallfile/create+write 4KiB+close"} {
		r, ok := byOp[k]
		if !ok || r.Ops < procs {
			t.Errorf("%s: %d ops (present %v), want at least one per process", k, r.Ops, ok)
		}
	}
	// The timed phases ran for at least their share of the duration (no
	// upper bound but a sanity one: a loaded machine stretches them). The
	// meta phase is not among them: it stops early once each process made
	// its most files, which a fast local disk reaches in a fraction of it.
	for _, k := range []string{"stat-storm/stat", "lock-pairs/flock lock+unlock"} {
		if el := byOp[k].ElapsedSeconds; el < 0.3 || el > 120 {
			t.Errorf("%s ran for %.2fs", k, el)
		}
	}
	create, stat, unlink := byOp["meta/create"], byOp["meta/stat"], byOp["meta/unlink"]
	if create.Ops != stat.Ops || create.Ops != unlink.Ops {
		t.Errorf("meta: created %d, stat %d, unlinked %d: want the same", create.Ops, stat.Ops, unlink.Ops)
	}
	w, r := byOp["smallfile/create+write 4KiB+close"], byOp["smallfile/open+read+close, verified"]
	if r.Verified == nil || *r.Verified != w.Ops || *r.Mismatched != 0 || r.Ops != w.Ops {
		t.Errorf("smallfile: wrote %d, read %d, verified %v, mismatched %v", w.Ops, r.Ops, r.Verified, r.Mismatched)
	}
	h := byOp["lock-handoff/handoff"]
	if h.Overlaps == nil || *h.Overlaps != 0 {
		t.Errorf("lock-handoff: overlaps %v", h.Overlaps)
	}
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != 0 {
		t.Errorf("the bench left %d entries in %s (%v)", len(ents), dir, err)
	}
	var table, js bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"stat-storm", "smallfile", "OPS/S", "P99", "verified"} {
		if !strings.Contains(table.String(), want) {
			t.Errorf("table lacks %q:\n%s", want, table.String())
		}
	}
	if strings.Contains(table.String(), "FSM READS") || strings.Contains(table.String(), "CPU/OP") {
		t.Errorf("a local directory has no cluster columns:\n%s", table.String())
	}
	t.Logf("\n%s", table.String())
	if !strings.Contains(progress.String(), "stat-storm stat:") {
		t.Errorf("no progress lines: %q", progress.String())
	}
}

// On a jfs mount without --cluster-metrics, the cluster columns say n/a.
func TestBenchClusterColumnsNotAvailable(t *testing.T) {
	rep := &Report{FS: FSInfo{JFS: true, Type: "fuse.jfs"}, Results: []Result{{Workload: "stat-storm", Op: "stat", Ops: 1,
		Cluster: clusterAfter(context.Background(), Config{}, clusterSample{}, nil, nil)}}}
	var b bytes.Buffer
	rep.WriteTable(&b)
	if !strings.Contains(b.String(), "n/a") || !strings.Contains(b.String(), "no --cluster-metrics") {
		t.Fatalf("table:\n%s", b.String())
	}
}

func TestBenchBadConfig(t *testing.T) {
	for _, cfg := range []Config{
		{Dir: t.TempDir(), Workloads: []string{"nope"}, Procs: 1, Duration: time.Second, Command: workerCommand},
		{Dir: t.TempDir(), Workloads: []string{"meta"}, Procs: 0, Duration: time.Second, Command: workerCommand},
		{Dir: "/nonexistent/dir", Workloads: []string{"meta"}, Procs: 1, Duration: time.Second, Command: workerCommand},
	} {
		if _, err := Run(context.Background(), cfg); err == nil {
			t.Errorf("%+v: no error", cfg)
		}
	}
}
