// Package bench measures a file system the way jfs is used: many processes
// on the same files and locks. It runs on any directory, so the same
// workloads measure a jfs mount, a local file system or another network file
// system. The workers are separate processes (the program re-executed with
// WorkerEnv set), because locks belong to processes and FUSE merges
// identical requests per process.
package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Config configures a Run.
type Config struct {
	Dir       string
	Workloads []string
	Procs     int
	Duration  time.Duration // of each workload
	// MaxFiles bounds the files one worker makes in meta and smallfile
	// (default 100000).
	MaxFiles int
	// ClusterMetrics are the metrics addresses (HOST:PORT or URL) of the
	// cluster's nodes; with them a run on a jfs mount reports the cluster's
	// reads and writes per operation.
	ClusterMetrics []string
	// Command returns the command that starts one worker: this program
	// with WorkerEnv=1 in its environment. Run sets its stdin and stdout.
	Command func() *exec.Cmd
	// Progress, when set, receives a progress line while a phase runs;
	// Live rewrites one line (for a terminal) instead of printing one per
	// phase.
	Progress io.Writer
	Live     bool
}

// Report is the result of a Run.
type Report struct {
	Dir             string   `json:"dir"`
	FS              FSInfo   `json:"fs"`
	Procs           int      `json:"procs"`
	DurationSeconds float64  `json:"duration_seconds"`
	ClusterMetrics  []string `json:"cluster_metrics,omitempty"`
	Results         []Result `json:"results"`
}

// Result is one operation of one workload, over every worker.
type Result struct {
	Workload       string  `json:"workload"`
	Op             string  `json:"op"`
	Procs          int     `json:"procs"`
	Ops            uint64  `json:"ops"`
	Errors         uint64  `json:"errors"`
	FirstError     string  `json:"first_error,omitempty"`
	ElapsedSeconds float64 `json:"elapsed_seconds"`
	OpsPerSec      float64 `json:"ops_per_sec"`
	P50Micros      float64 `json:"p50_us"`
	P99Micros      float64 `json:"p99_us"`
	MeanMicros     float64 `json:"mean_us"`
	MaxMicros      float64 `json:"max_us"`
	// smallfile: files read back with the content written, and not.
	Verified   *uint64 `json:"verified,omitempty"`
	Mismatched *uint64 `json:"mismatched,omitempty"`
	// lock-handoff: times two processes held the lock at once (must be 0).
	Overlaps *uint64 `json:"overlaps,omitempty"`
	// Cluster is set on a jfs mount.
	Cluster *ClusterCost `json:"cluster,omitempty"`
	// CPUMicrosPerOp is the CPU time the jfs mount's process and the
	// nodes given with --cluster-metrics used in the phase, per operation;
	// CPU says what it covers. Both are set on a jfs mount only, and
	// CPUMicrosPerOp only when something was measured.
	CPUMicrosPerOp *float64 `json:"cpu_us_per_op,omitempty"`
	CPU            *CPUCost `json:"cpu,omitempty"`
}

// ClusterCost is what the operations of a phase cost the cluster, per
// operation of the phase. Background work (heartbeats, other clients)
// counts too.
type ClusterCost struct {
	// Available is false when no --cluster-metrics were given or they
	// could not be read (Note says why).
	Available bool   `json:"available"`
	Note      string `json:"note,omitempty"`
	// ReadRequests: reads that reached the leader; FSMReads: distinct
	// state-machine reads after batching; LogWrites: log entries applied.
	ReadRequests float64 `json:"read_requests_per_op"`
	FSMReads     float64 `json:"fsm_reads_per_op"`
	LogWrites    float64 `json:"log_writes_per_op"`
}

// Run runs every workload of cfg in turn and returns their results.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Procs < 1 {
		return nil, errors.New("bench: procs must be at least 1")
	}
	if cfg.Duration <= 0 {
		return nil, errors.New("bench: duration must be positive")
	}
	if cfg.MaxFiles <= 0 {
		cfg.MaxFiles = 100000
	}
	if len(cfg.Workloads) == 0 {
		return nil, errors.New("bench: no workload")
	}
	for _, w := range cfg.Workloads {
		if _, ok := phases[w]; !ok {
			return nil, fmt.Errorf("bench: unknown workload %q (want %s)", w, strings.Join(Workloads, ", "))
		}
	}
	if cfg.Command == nil {
		return nil, errors.New("bench: no worker command")
	}
	fi, err := os.Stat(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("%s is not a directory", cfg.Dir)
	}
	fs, err := DetectFS(cfg.Dir)
	if err != nil {
		fs = FSInfo{Type: "unknown"}
	}
	rep := &Report{Dir: cfg.Dir, FS: fs, Procs: cfg.Procs, DurationSeconds: cfg.Duration.Seconds(), ClusterMetrics: cfg.ClusterMetrics}
	for _, w := range cfg.Workloads {
		res, err := runWorkload(ctx, cfg, fs, w)
		rep.Results = append(rep.Results, res...)
		if err != nil {
			return rep, fmt.Errorf("%s: %w", w, err)
		}
	}
	return rep, nil
}

// workerProc is the parent's handle on a worker process.
type workerProc struct {
	id     int
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	stderr *tailBuffer
	ops    uint64 // progress in the phase running
}

type message struct {
	w    *workerProc
	line string // "" with err: the worker's output ended
	err  error
}

func runWorkload(ctx context.Context, cfg Config, fs FSInfo, name string) ([]Result, error) {
	work, err := os.MkdirTemp(cfg.Dir, "jfs-bench-"+name+"-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(work)
	j := job{Workload: name, Work: work, Duration: cfg.Duration, MaxFiles: cfg.MaxFiles}
	switch name {
	case "stat-storm":
		err = os.WriteFile(filepath.Join(work, statTarget), []byte("stat me\n"), 0o644)
	case "lookup-storm":
		if err = os.MkdirAll(filepath.Join(work, lookupDirs), 0o755); err == nil {
			err = os.WriteFile(filepath.Join(work, lookupTarget), []byte("look me up\n"), 0o644)
		}
	case "lock-handoff":
		if err = os.WriteFile(filepath.Join(work, handoffFile), nil, 0o644); err != nil {
			break
		}
		// The workers share a page of a local file to stamp unlocks.
		var shm *os.File
		if shm, err = os.CreateTemp("", "jfs-bench-shm-"); err != nil {
			break
		}
		defer os.Remove(shm.Name())
		err = shm.Truncate(4096)
		shm.Close()
		j.Shm = shm.Name()
	}
	if err != nil {
		return nil, err
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	msgs := make(chan message, 64*cfg.Procs)
	var workers []*workerProc
	var readers sync.WaitGroup
	defer func() {
		for _, w := range workers {
			w.stdin.Close()
		}
		drained := make(chan struct{})
		go func() { // the readers must not block on a full channel
			for {
				select {
				case <-msgs:
				case <-drained:
					return
				}
			}
		}()
		exited := make(chan struct{})
		go func() {
			for _, w := range workers {
				w.cmd.Wait()
			}
			close(exited)
		}()
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			for _, w := range workers {
				w.cmd.Process.Kill()
			}
			<-exited
		}
		readers.Wait()
		close(drained)
	}()
	for i := range cfg.Procs {
		w := &workerProc{id: i, cmd: cfg.Command(), stderr: &tailBuffer{max: 4096}}
		w.cmd.Stderr = w.stderr
		if w.stdin, err = w.cmd.StdinPipe(); err != nil {
			return nil, err
		}
		stdout, err := w.cmd.StdoutPipe()
		if err != nil {
			return nil, err
		}
		if err := w.cmd.Start(); err != nil {
			return nil, fmt.Errorf("start worker: %w", err)
		}
		workers = append(workers, w)
		readers.Add(1)
		go func() {
			defer readers.Done()
			sc := bufio.NewScanner(stdout)
			sc.Buffer(make([]byte, 64<<10), 16<<20)
			for sc.Scan() {
				msgs <- message{w: w, line: sc.Text()}
			}
			msgs <- message{w: w, err: fmt.Errorf("worker %d ended (%v); stderr: %s", w.id, sc.Err(), w.stderr)}
		}()
		wj := j
		wj.ID = i
		b, _ := json.Marshal(wj)
		if _, err := fmt.Fprintf(w.stdin, "%s\n", b); err != nil {
			return nil, fmt.Errorf("worker %d: %w", i, err)
		}
	}
	go func() { // an interrupt ends the workers
		<-ctx.Done()
		for _, w := range workers {
			w.cmd.Process.Kill()
		}
	}()
	// wait collects one answer starting with want from every worker.
	wait := func(want string, timeout time.Duration, progress func()) (map[int]string, error) {
		got := map[int]string{}
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		limit := time.After(timeout)
		for len(got) < len(workers) {
			select {
			case m := <-msgs:
				switch {
				case m.err != nil && want == "bye" && got[m.w.id] != "":
					// it said goodbye, then its output ended
				case m.err != nil:
					return nil, m.err
				case strings.HasPrefix(m.line, "fail "):
					return nil, fmt.Errorf("worker %d: %s", m.w.id, strings.TrimPrefix(m.line, "fail "))
				case strings.HasPrefix(m.line, "p "):
					m.w.ops, _ = strconv.ParseUint(m.line[2:], 10, 64)
				case m.line == want || strings.HasPrefix(m.line, want+" "):
					got[m.w.id] = m.line
				default:
					return nil, fmt.Errorf("worker %d: unexpected %q", m.w.id, m.line)
				}
			case <-tick.C:
				if progress != nil {
					progress()
				}
			case <-limit:
				return nil, fmt.Errorf("workers did not answer %q within %v", want, timeout)
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return got, nil
	}
	if _, err := wait("ready", time.Minute, nil); err != nil {
		return nil, err
	}
	var results []Result
	for _, ph := range phases[name] {
		before, berr := clusterBefore(ctx, cfg, fs)
		var cpuBefore cpuSample
		if fs.JFS {
			cpuBefore = sampleCPU(ctx, fs.Stats, cfg.ClusterMetrics)
		}
		for _, w := range workers {
			w.ops = 0
			if _, err := fmt.Fprintf(w.stdin, "go %s\n", ph.name); err != nil {
				return results, fmt.Errorf("worker %d: %w", w.id, err)
			}
		}
		start := time.Now()
		timed := time.Duration(ph.timed * float64(cfg.Duration))
		progress := func() {
			if cfg.Progress == nil || !cfg.Live {
				return
			}
			var ops uint64
			for _, w := range workers {
				ops += w.ops
			}
			el := time.Since(start)
			line := fmt.Sprintf("%s %s: %d ops, %.0f ops/s, %.1fs", name, ph.name, ops, float64(ops)/el.Seconds(), el.Seconds())
			if timed > 0 {
				line += fmt.Sprintf(" of %.1fs", timed.Seconds())
			}
			fmt.Fprintf(cfg.Progress, "\r\033[K%s", line)
		}
		// A timed phase ends on its own; the others get as long as the
		// workload, and a generous margin for slow file systems.
		answers, err := wait("done", 10*time.Minute+10*cfg.Duration, progress)
		if cfg.Progress != nil && cfg.Live {
			fmt.Fprint(cfg.Progress, "\r\033[K")
		}
		if err != nil {
			return results, err
		}
		var prs []*phaseResult
		for id := range len(workers) {
			var pr phaseResult
			if err := json.Unmarshal([]byte(strings.TrimPrefix(answers[id], "done ")), &pr); err != nil {
				return results, fmt.Errorf("worker %d: bad result: %v", id, err)
			}
			prs = append(prs, &pr)
		}
		rs := aggregate(name, ph, prs)
		if fs.JFS {
			cpuAfter := sampleCPU(ctx, fs.Stats, cfg.ClusterMetrics)
			cost := clusterAfter(ctx, cfg, before, berr, rs)
			cpu := cpuCost(cpuBefore, cpuAfter, phaseOps(rs))
			for i := range rs {
				rs[i].Cluster = cost
				rs[i].setCPU(cpu)
			}
		}
		if cfg.Progress != nil && !cfg.Live {
			for _, r := range rs {
				fmt.Fprintf(cfg.Progress, "%s %s: %d ops in %.1fs\n", r.Workload, r.Op, r.Ops, r.ElapsedSeconds)
			}
		}
		results = append(results, rs...)
	}
	for _, w := range workers {
		fmt.Fprintln(w.stdin, "quit")
	}
	if _, err := wait("bye", time.Minute, nil); err != nil {
		return results, err
	}
	return results, nil
}

func clusterBefore(ctx context.Context, cfg Config, fs FSInfo) (clusterSample, error) {
	if !fs.JFS || len(cfg.ClusterMetrics) == 0 {
		return clusterSample{}, nil
	}
	return scrapeCluster(ctx, cfg.ClusterMetrics)
}

// clusterAfter is the cost of a phase per operation (every row of a phase
// shares it).
func clusterAfter(ctx context.Context, cfg Config, before clusterSample, berr error, rs []Result) *ClusterCost {
	if len(cfg.ClusterMetrics) == 0 {
		return &ClusterCost{Note: "no --cluster-metrics given"}
	}
	if berr != nil {
		return &ClusterCost{Note: berr.Error()}
	}
	after, err := scrapeCluster(ctx, cfg.ClusterMetrics)
	if err != nil {
		return &ClusterCost{Note: err.Error()}
	}
	ops := phaseOps(rs)
	if ops == 0 {
		return &ClusterCost{Note: "no operations"}
	}
	per := func(a, b float64) float64 { return math.Max(a-b, 0) / float64(ops) }
	return &ClusterCost{
		Available:    true,
		ReadRequests: per(after.readRequests, before.readRequests),
		FSMReads:     per(after.fsmReads, before.fsmReads),
		LogWrites:    per(after.applied, before.applied),
	}
}

// phaseOps is the operations of every row of a phase.
func phaseOps(rs []Result) uint64 {
	var ops uint64
	for _, r := range rs {
		ops += r.Ops
	}
	return ops
}

// setCPU sets the CPU cost of the phase r belongs to.
func (r *Result) setCPU(c *CPUCost) {
	r.CPU = c
	if t, ok := c.Total(); ok {
		r.CPUMicrosPerOp = &t
	}
}

// aggregate merges the workers' accounts of a phase into one Result per
// operation. Operations per second are over the longest worker's time.
func aggregate(workload string, ph phaseSpec, prs []*phaseResult) []Result {
	var elapsed time.Duration
	var errs, verified, mismatched, overlaps uint64
	firstErr := ""
	for _, pr := range prs {
		elapsed = max(elapsed, pr.Elapsed)
		errs += pr.Errors
		verified += pr.Verified
		mismatched += pr.Mismatched
		overlaps += pr.Overlaps
		if firstErr == "" {
			firstErr = pr.FirstError
		}
	}
	var out []Result
	for i, op := range ph.ops {
		var h Histogram
		for _, pr := range prs {
			h.Merge(pr.Ops[op])
		}
		if i > 0 && h.Count() == 0 {
			continue // e.g. no reacquire: every acquisition was a handoff
		}
		r := Result{
			Workload: workload, Op: op, Procs: len(prs), Ops: h.Count(),
			ElapsedSeconds: elapsed.Seconds(),
			P50Micros:      micros(h.Quantile(0.50)), P99Micros: micros(h.Quantile(0.99)),
			MeanMicros: micros(h.Mean()), MaxMicros: micros(h.Max()),
		}
		if elapsed > 0 {
			r.OpsPerSec = float64(h.Count()) / elapsed.Seconds()
		}
		if i == 0 {
			r.Errors, r.FirstError = errs, firstErr
			switch workload {
			case "smallfile":
				if ph.name == "read" {
					r.Verified, r.Mismatched = ptr(verified), ptr(mismatched)
				}
			case "lock-handoff":
				r.Overlaps = ptr(overlaps)
			}
		}
		out = append(out, r)
	}
	return out
}

func ptr[T any](v T) *T { return &v }

func micros(d time.Duration) float64 { return float64(d) / 1e3 }

// WriteJSON writes rep as indented JSON.
func (rep *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(rep)
}

// WriteTable writes rep as a table.
func (rep *Report) WriteTable(w io.Writer) error {
	fsDesc := rep.FS.Type
	if rep.FS.JFS {
		fsDesc = "jfs mount (" + rep.FS.Type + ", " + rep.FS.Source + ")"
	}
	procs := fmt.Sprintf("%d processes", rep.Procs)
	if rep.Procs == 1 {
		procs = "1 process"
	}
	fmt.Fprintf(w, "%s on %s at %s; %s, %v per workload\n\n", rep.Dir, fsDesc, rep.FS.MountPoint, procs,
		time.Duration(rep.DurationSeconds*float64(time.Second)))
	header := []string{"WORKLOAD", "OPERATION", "OPS", "OPS/S", "P50", "P99", "ERRORS"}
	if rep.FS.JFS {
		header = append(header, "READ RPCS/OP", "FSM READS/OP", "LOG WRITES/OP", "CPU/OP")
	}
	header = append(header, "NOTE")
	rows := [][]string{header}
	var notes, cpuNotes []string
	for _, r := range rep.Results {
		row := []string{r.Workload, r.Op, strconv.FormatUint(r.Ops, 10), fmt.Sprintf("%.0f", r.OpsPerSec),
			fmtMicros(r.P50Micros), fmtMicros(r.P99Micros), strconv.FormatUint(r.Errors, 10)}
		if rep.FS.JFS {
			if c := r.Cluster; c != nil && c.Available {
				row = append(row, fmt.Sprintf("%.3f", c.ReadRequests), fmt.Sprintf("%.3f", c.FSMReads), fmt.Sprintf("%.3f", c.LogWrites))
			} else {
				row = append(row, "n/a", "n/a", "n/a")
				if c != nil && c.Note != "" && !slices.Contains(notes, c.Note) {
					notes = append(notes, c.Note)
				}
			}
			cpu := "n/a"
			switch v := r.CPUMicrosPerOp; {
			case v != nil && *v == 0:
				cpu = "0µs"
			case v != nil:
				cpu = fmtMicros(*v)
			}
			row = append(row, cpu)
			if c := r.CPU; c != nil && c.Note != "" && !slices.Contains(cpuNotes, c.Note) {
				cpuNotes = append(cpuNotes, c.Note)
			}
		}
		var note []string
		if r.Verified != nil {
			note = append(note, fmt.Sprintf("verified %d, mismatched %d", *r.Verified, *r.Mismatched))
		}
		if r.Overlaps != nil {
			note = append(note, fmt.Sprintf("overlaps %d", *r.Overlaps))
		}
		if r.Workload == "lock-handoff" {
			note = append(note, "latency: unlock to next holder's return")
		}
		if r.FirstError != "" {
			note = append(note, "first error: "+r.FirstError)
		}
		row = append(row, strings.Join(note, "; "))
		rows = append(rows, row)
	}
	widths := make([]int, len(header))
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], len(c))
		}
	}
	var b bytes.Buffer
	for _, row := range rows {
		for i, c := range row {
			switch {
			case i == len(row)-1:
				b.WriteString(c)
			case i >= 2: // numbers: right-aligned
				fmt.Fprintf(&b, "%*s  ", widths[i], c)
			default:
				fmt.Fprintf(&b, "%-*s  ", widths[i], c)
			}
		}
		b.WriteByte('\n')
	}
	for _, n := range notes {
		fmt.Fprintf(&b, "\ncluster reads and writes n/a: %s\n", n)
	}
	if rep.FS.JFS {
		b.WriteString("\nCPU/OP: CPU time of the mount process and the nodes per operation, background work included\n")
	}
	for _, n := range cpuNotes {
		fmt.Fprintf(&b, "CPU/OP: %s\n", n)
	}
	_, err := w.Write(b.Bytes())
	return err
}

// fmtMicros prints a latency with a unit that suits it.
func fmtMicros(us float64) string {
	switch {
	case us == 0:
		return "-"
	case us < 1000:
		return fmt.Sprintf("%.1fµs", us)
	case us < 1e6:
		return fmt.Sprintf("%.2fms", us/1e3)
	}
	return fmt.Sprintf("%.2fs", us/1e6)
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = t.b[len(t.b)-t.max:]
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}
