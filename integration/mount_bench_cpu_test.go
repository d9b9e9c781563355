package integration

import (
	"bytes"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// jfs bench on a real mount with the nodes' metrics fills the CPU column:
// the mount process's CPU (from its .stats) and the nodes' (from their
// metrics) per operation.
func TestMountBenchCPUColumn(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc, noCache...)
	var addrs []string
	for _, p := range pc.procs {
		addrs = append(addrs, p.metricsAddr)
	}
	run := func(format string) []byte {
		args := []string{"bench", "--procs", "2", "--duration", "1s", "--cluster-metrics", strings.Join(addrs, ","), "stat-storm", m.dir}
		if format == "json" {
			args = append([]string{"bench", "--json"}, args[1:]...)
		}
		cmd := exec.Command(filepath.Join(binDir, "jfs"), args...)
		var out, errb bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errb
		if err := cmd.Run(); err != nil {
			t.Fatalf("jfs %s: %v\nstdout:\n%s\nstderr:\n%s", strings.Join(args, " "), err, out.String(), errb.String())
		}
		return out.Bytes()
	}
	var rep struct {
		Results []struct {
			Op    string   `json:"op"`
			Ops   uint64   `json:"ops"`
			CPUUs *float64 `json:"cpu_us_per_op"`
			CPU   struct {
				Mount *float64 `json:"mount_us_per_op"`
				Nodes *float64 `json:"nodes_us_per_op"`
				Note  string   `json:"note"`
			} `json:"cpu"`
		} `json:"results"`
	}
	out := run("json")
	if err := json.Unmarshal(out, &rep); err != nil {
		t.Fatalf("bench --json: %v\n%s", err, out)
	}
	if len(rep.Results) == 0 {
		t.Fatalf("no results:\n%s", out)
	}
	for _, r := range rep.Results {
		c := r.CPU
		if r.Ops == 0 || r.CPUUs == nil || c.Mount == nil || c.Nodes == nil || c.Note != "" {
			t.Errorf("%s: ops %d cpu %v mount %v nodes %v note %q\n%s", r.Op, r.Ops, r.CPUUs, c.Mount, c.Nodes, c.Note, out)
			continue
		}
		// The mount served every stat, and with the caches off each one
		// reached the leader: both processes used some CPU for them.
		if *c.Mount <= 0 || *c.Nodes <= 0 || *r.CPUUs != *c.Mount+*c.Nodes {
			t.Errorf("%s: cpu %v µs/op = mount %v + nodes %v", r.Op, *r.CPUUs, *c.Mount, *c.Nodes)
		}
		t.Logf("%s: %d ops, cpu %.1f µs/op (mount %.1f, nodes %.1f)", r.Op, r.Ops, *r.CPUUs, *c.Mount, *c.Nodes)
	}
	table := string(run("table"))
	if !strings.Contains(table, "CPU/OP") || strings.Contains(table, "CPU/OP: ") && strings.Contains(table, "not counted") {
		t.Errorf("table:\n%s", table)
	}
	t.Logf("\n%s", table)
}
