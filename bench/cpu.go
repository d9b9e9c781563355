package bench

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strings"
)

// cpuMetric is the Prometheus process collector's counter of the CPU time
// (user and system) a process has used. Both jfsd and jfs mount export it.
const cpuMetric = "process_cpu_seconds_total"

// CPUCost is the CPU time the file system's own processes spent in a phase,
// per operation of the phase, in microseconds. Background work (heartbeats,
// timers, other clients) counts too.
type CPUCost struct {
	// Mount is the process serving the mount, from its .stats file; nil
	// when it could not be read (Note says why).
	Mount *float64 `json:"mount_us_per_op,omitempty"`
	// Nodes is the sum over the nodes given with --cluster-metrics; nil
	// without them or when one could not be read.
	Nodes *float64 `json:"nodes_us_per_op,omitempty"`
	Note  string   `json:"note,omitempty"`
}

// Total is what was measured of the mount and the nodes together, and
// false when neither was.
func (c *CPUCost) Total() (float64, bool) {
	if c == nil || c.Mount == nil && c.Nodes == nil {
		return 0, false
	}
	var t float64
	if c.Mount != nil {
		t += *c.Mount
	}
	if c.Nodes != nil {
		t += *c.Nodes
	}
	return t, true
}

// cpuSample is the CPU seconds the file system's processes had used at one
// moment; an error says why a part could not be read.
type cpuSample struct {
	mount, nodes       float64
	mountErr, nodesErr error
}

// sampleCPU reads the mount's CPU from its .stats file (statsPath; "" when
// the mount has none) and the nodes' from their metrics.
//
// The mount's .stats is served by the very process that serves the mount,
// so it names the right process without a search for a pid: that holds
// when several jfs mounts run, when the mount was started in the background,
// and when the mount process is in another pid namespace (a container) than
// the bench.
func sampleCPU(ctx context.Context, statsPath string, nodes []string) cpuSample {
	var s cpuSample
	if statsPath == "" {
		s.mountErr = errors.New("the mount has no .stats")
	} else {
		s.mount, s.mountErr = mountCPU(statsPath)
	}
	if len(nodes) == 0 {
		s.nodesErr = errors.New("no --cluster-metrics given")
	}
	for _, a := range nodes {
		m, err := scrape(ctx, a)
		if err == nil {
			if _, ok := m[cpuMetric]; !ok {
				err = fmt.Errorf("%s exports no %s", a, cpuMetric)
			}
		}
		if err != nil {
			s.nodesErr = err
			break
		}
		s.nodes += m[cpuMetric]
	}
	return s
}

// mountCPU reads process_cpu_seconds_total from a jfs mount's .stats.
func mountCPU(statsPath string) (float64, error) {
	f, err := os.Open(statsPath)
	if err != nil {
		return 0, fmt.Errorf("mount cpu: %w", err)
	}
	defer f.Close()
	m, err := parseMetrics(f)
	if err != nil {
		return 0, fmt.Errorf("mount cpu: %s: %w", statsPath, err)
	}
	v, ok := m[cpuMetric]
	if !ok {
		return 0, fmt.Errorf("mount cpu: %s has no %s", statsPath, cpuMetric)
	}
	return v, nil
}

// cpuCost is the CPU of a phase between two samples per operation.
func cpuCost(before, after cpuSample, ops uint64) *CPUCost {
	if ops == 0 {
		return &CPUCost{Note: "no operations"}
	}
	per := func(a, b float64) *float64 {
		v := math.Max(a-b, 0) * 1e6 / float64(ops)
		return &v
	}
	c := &CPUCost{}
	var notes []string
	if err := cmp.Or(before.mountErr, after.mountErr); err != nil {
		notes = append(notes, "mount not counted: "+err.Error())
	} else {
		c.Mount = per(after.mount, before.mount)
	}
	if err := cmp.Or(before.nodesErr, after.nodesErr); err != nil {
		notes = append(notes, "nodes not counted: "+err.Error())
	} else {
		c.Nodes = per(after.nodes, before.nodes)
	}
	c.Note = strings.Join(notes, "; ")
	return c
}
