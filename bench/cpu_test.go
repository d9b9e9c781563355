package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// fakeNode serves Prometheus text with a process_cpu_seconds_total that the
// test sets.
type fakeNode struct {
	mu  sync.Mutex
	cpu float64
	srv *httptest.Server
}

func newFakeNode(t *testing.T, withCPU bool) *fakeNode {
	n := &fakeNode{}
	n.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/metrics" {
			http.NotFound(w, r)
			return
		}
		n.mu.Lock()
		defer n.mu.Unlock()
		fmt.Fprintf(w, "# HELP jfsd_reads_total x\n# TYPE jfsd_reads_total counter\njfsd_reads_total{method=\"getattr\"} 7\n")
		if withCPU {
			fmt.Fprintf(w, "# HELP %s x\n# TYPE %s counter\n%s %g\n", cpuMetric, cpuMetric, cpuMetric, n.cpu)
		}
	}))
	t.Cleanup(n.srv.Close)
	return n
}

func (n *fakeNode) set(v float64) {
	n.mu.Lock()
	n.cpu = v
	n.mu.Unlock()
}

func (n *fakeNode) addr() string { return strings.TrimPrefix(n.srv.URL, "http://") }

func writeStats(t *testing.T, path string, cpu float64) {
	t.Helper()
	text := fmt.Sprintf("# TYPE jfs_fuse_ops_total counter\njfs_fuse_ops_total{method=\"GetAttr\"} 3\n# TYPE %s counter\n%s %g\n", cpuMetric, cpuMetric, cpu)
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
}

// The CPU of a phase is the growth of process_cpu_seconds_total of the
// mount (.stats) and of every node, divided by the phase's operations.
func TestBenchCPUPerOp(t *testing.T) {
	n1, n2 := newFakeNode(t, true), newFakeNode(t, true)
	stats := filepath.Join(t.TempDir(), ".stats")
	ctx := context.Background()
	nodes := []string{n1.addr(), "http://" + n2.addr() + "/metrics"}

	writeStats(t, stats, 10)
	n1.set(100)
	n2.set(200)
	before := sampleCPU(ctx, stats, nodes)
	writeStats(t, stats, 10.5) // 0.5 s
	n1.set(100.25)             // 0.25 s
	n2.set(200.75)             // 0.75 s
	after := sampleCPU(ctx, stats, nodes)
	c := cpuCost(before, after, 1000)
	if c.Note != "" || c.Mount == nil || c.Nodes == nil {
		t.Fatalf("cost %+v", c)
	}
	// 0.5 s / 1000 ops = 500 µs; 1 s / 1000 = 1000 µs.
	if !about(*c.Mount, 500) || !about(*c.Nodes, 1000) {
		t.Errorf("mount %v µs/op, nodes %v µs/op; want 500 and 1000", *c.Mount, *c.Nodes)
	}
	if tot, ok := c.Total(); !ok || !about(tot, 1500) {
		t.Errorf("total %v %v, want 1500", tot, ok)
	}

	rep := &Report{FS: FSInfo{JFS: true, Type: JFSMountType}, Results: []Result{{Workload: "stat-storm", Op: "stat", Ops: 1000,
		Cluster: &ClusterCost{Note: "x"}}}}
	rep.Results[0].setCPU(c)
	var js bytes.Buffer
	if err := rep.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back struct {
		Results []struct {
			CPU   *float64 `json:"cpu_us_per_op"`
			Parts struct {
				Mount *float64 `json:"mount_us_per_op"`
				Nodes *float64 `json:"nodes_us_per_op"`
			} `json:"cpu"`
		} `json:"results"`
	}
	if err := json.Unmarshal(js.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if r := back.Results[0]; r.CPU == nil || !about(*r.CPU, 1500) || r.Parts.Mount == nil || !about(*r.Parts.Mount, 500) || r.Parts.Nodes == nil {
		t.Errorf("json:\n%s", js.String())
	}
	var table bytes.Buffer
	if err := rep.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(table.String(), "CPU/OP") || !strings.Contains(table.String(), "1.50ms") {
		t.Errorf("table lacks the CPU column or its value 1.50ms:\n%s", table.String())
	}
}

// What cannot be measured is said, and the rest is still reported.
func TestBenchCPUPartlyMeasured(t *testing.T) {
	ctx := context.Background()
	stats := filepath.Join(t.TempDir(), ".stats")
	writeStats(t, stats, 1)
	before := sampleCPU(ctx, stats, nil)
	writeStats(t, stats, 1.002)
	c := cpuCost(before, sampleCPU(ctx, stats, nil), 2)
	if c.Mount == nil || !about(*c.Mount, 1000) || c.Nodes != nil || !strings.Contains(c.Note, "no --cluster-metrics") {
		t.Errorf("without --cluster-metrics: %+v", c)
	}

	bare := newFakeNode(t, false) // no process collector
	c = cpuCost(sampleCPU(ctx, stats, []string{bare.addr()}), sampleCPU(ctx, stats, []string{bare.addr()}), 5)
	if c.Nodes != nil || !strings.Contains(c.Note, cpuMetric) {
		t.Errorf("a node without %s: %+v", cpuMetric, c)
	}

	c = cpuCost(sampleCPU(ctx, "", nil), sampleCPU(ctx, "", nil), 5)
	if _, ok := c.Total(); ok || !strings.Contains(c.Note, ".stats") {
		t.Errorf("nothing measured: %+v", c)
	}
	rep := &Report{FS: FSInfo{JFS: true, Type: JFSMountType}, Results: []Result{{Workload: "meta", Op: "create", Ops: 5}}}
	rep.Results[0].setCPU(c)
	var table, js bytes.Buffer
	rep.WriteTable(&table)
	rep.WriteJSON(&js)
	if !strings.Contains(table.String(), "CPU/OP: mount not counted") || strings.Contains(js.String(), "cpu_us_per_op") {
		t.Errorf("table:\n%s\njson:\n%s", table.String(), js.String())
	}
	if c := cpuCost(cpuSample{}, cpuSample{}, 0); c.Note != "no operations" {
		t.Errorf("no operations: %+v", c)
	}
}

func about(a, b float64) bool { return a > b-1e-6*b-1e-9 && a < b+1e-6*b+1e-9 }
