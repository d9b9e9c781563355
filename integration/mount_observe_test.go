package integration

import (
	"bufio"
	"bytes"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/jfs-dev/jfs/bench"
)

// The seed scenario (seeds/000): many processes stat one file through one
// mount with the kernel's caches off. Identical getattr and lookup requests
// in flight at once are merged by the mount and batched by the leader; the
// mount's .accesslog, .stats, jfs stats and jfs profile show it.

// accessLogLine is the exact format of a line of .accesslog, JuiceFS's:
// time, caller, operation, (arguments) and details, " - ", OK or the
// errno's text, seconds.
var accessLogLine = regexp.MustCompile(`^\d{4}\.\d{2}\.\d{2} \d{2}:\d{2}:\d{2}\.\d{6} \[uid:\d+,gid:\d+,pid:\d+\] [a-z_]+ \(.*\).* - (OK|[a-z][^<]*) <\d+\.\d{6}>$`)

// mustHaveOpen waits until process pid has path open (a link in
// /proc/PID/fd), so that what the test does next happens after the open.
func mustHaveOpen(t testing.TB, pid int, path string) {
	t.Helper()
	fdDir := fmt.Sprintf("/proc/%d/fd", pid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		ents, _ := os.ReadDir(fdDir)
		for _, e := range ents {
			if target, err := os.Readlink(filepath.Join(fdDir, e.Name())); err == nil && target == path {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("process %d did not open %s within 30s", pid, path)
		}
		time.Sleep(10 * time.Millisecond) // polling /proc
	}
}

// statStorm runs procs processes that each stat path reps×perCall times
// (reps runs of stat(1) with perCall arguments), all at once, and returns
// how long they took.
func statStorm(t testing.TB, path string, procs, reps, perCall int) time.Duration {
	t.Helper()
	args := strings.TrimSpace(strings.Repeat(shellQuote(path)+" ", perCall))
	script := fmt.Sprintf("read go; i=0; while [ $i -lt %d ]; do stat -c %%i %s >/dev/null || exit 1; i=$((i+1)); done", reps, args)
	var cmds []*exec.Cmd
	var starts []*os.File
	for range procs {
		cmd := exec.Command("sh", "-c", script)
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		cmd.Stdin = r
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		r.Close()
		cmds, starts = append(cmds, cmd), append(starts, w)
	}
	start := time.Now()
	for _, w := range starts { // go
		w.Write([]byte("go\n"))
		w.Close()
	}
	for _, cmd := range cmds {
		if err := cmd.Wait(); err != nil {
			t.Fatalf("stat loop: %v: %s", err, cmd.Stderr)
		}
	}
	return time.Since(start)
}

func shellQuote(s string) string { return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'" }

// scrape returns every sample of the Prometheus endpoint at addr as
// "name{labels}" -> value.
func scrape(t testing.TB, addr string) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			if v, err := strconv.ParseFloat(line[i+1:], 64); err == nil {
				out[line[:i]] = v
			}
		}
	}
	return out
}

// readMetrics is what the seed storm is judged by.
type stormMetrics struct {
	fuseGetattr, metaGetattr, mergedGetattr float64 // the mount
	fuseLookup, metaLookup, mergedLookup    float64
	nodeReads, fsmReads                     float64 // the leader, getattr+lookup
	batchSum, batchCount                    float64
}

func readStormMetrics(t testing.TB, m *jfsMount, leader *proc) stormMetrics {
	mm := scrape(t, m.metricsAddr)
	nm := leader.metrics(t)
	return stormMetrics{
		fuseGetattr: mm[`jfs_fuse_ops_total{method="GetAttr"}`], metaGetattr: mm[`jfs_meta_ops_total{method="getattr"}`],
		mergedGetattr: mm[`jfs_meta_ops_merged_total{method="getattr"}`],
		fuseLookup:    mm[`jfs_fuse_ops_total{method="Lookup"}`], metaLookup: mm[`jfs_meta_ops_total{method="lookup"}`],
		mergedLookup: mm[`jfs_meta_ops_merged_total{method="lookup"}`],
		nodeReads:    nm[`jfsd_reads_total{method="getattr"}`] + nm[`jfsd_reads_total{method="lookup"}`],
		fsmReads:     nm[`jfsd_fsm_reads_total{method="getattr"}`] + nm[`jfsd_fsm_reads_total{method="lookup"}`],
		batchSum:     nm[`jfsd_read_batch_size_sum`], batchCount: nm[`jfsd_read_batch_size_count`],
	}
}

func (a stormMetrics) sub(b stormMetrics) stormMetrics {
	return stormMetrics{
		a.fuseGetattr - b.fuseGetattr, a.metaGetattr - b.metaGetattr, a.mergedGetattr - b.mergedGetattr,
		a.fuseLookup - b.fuseLookup, a.metaLookup - b.metaLookup, a.mergedLookup - b.mergedLookup,
		a.nodeReads - b.nodeReads, a.fsmReads - b.fsmReads, a.batchSum - b.batchSum, a.batchCount - b.batchCount,
	}
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

func (s stormMetrics) String() string {
	return fmt.Sprintf("mount: getattr %0.f fuse ops, %0.f sent, %0.f merged; lookup %0.f fuse ops, %0.f sent, %0.f merged; "+
		"leader: %0.f reads received, %0.f state-machine reads (%.1f received per state-machine read), "+
		"%0.f batches of %.1f on average; fuse getattr+lookup per state-machine read %.1f",
		s.fuseGetattr, s.metaGetattr, s.mergedGetattr, s.fuseLookup, s.metaLookup, s.mergedLookup,
		s.nodeReads, s.fsmReads, ratio(s.nodeReads, s.fsmReads), s.batchCount, ratio(s.batchSum, s.batchCount),
		ratio(s.fuseGetattr+s.fuseLookup, s.fsmReads))
}

func TestMountObserveStatStorm(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	leader := pc.leader(t, c)
	m := startMount(t, pc, "--cache-mode", "off")
	file := m.path("test_file.txt")
	mustWriteFile(t, file, []byte("hello\n"))
	fi, err := os.Stat(file)
	if err != nil {
		t.Fatal(err)
	}
	ino := fi.Sys().(*syscall.Stat_t).Ino

	// The virtual files: found by name, not listed.
	for _, name := range []string{".accesslog", ".stats"} {
		if _, err := os.Stat(m.path(name)); err != nil {
			t.Fatalf("stat %s: %v", name, err)
		}
	}
	ents, err := os.ReadDir(m.dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("readdir lists %s", e.Name())
		}
	}

	// As the seed does: cat .accesslog > saved log, while the storm runs.
	saved := filepath.Join(t.TempDir(), "jfs_test.alog")
	out, err := os.Create(saved)
	if err != nil {
		t.Fatal(err)
	}
	cat := exec.Command("cat", m.path(".accesslog"))
	cat.Stdout = out
	if err := cat.Start(); err != nil {
		t.Fatal(err)
	}
	stopCat := sync.OnceFunc(func() {
		cat.Process.Kill()
		cat.Wait()
		out.Close()
	})
	defer stopCat()
	mustHaveOpen(t, cat.Process.Pid, m.path(".accesslog"))

	// jfs stats --count 2, at the same time.
	var statsOut bytes.Buffer
	stats := exec.Command(filepath.Join(binDir, "jfs"), "stats", "--interval", "500ms", "--count", "2", m.dir)
	stats.Stdout, stats.Stderr = &statsOut, &statsOut
	if err := stats.Start(); err != nil {
		t.Fatal(err)
	}

	before := readStormMetrics(t, m, leader)
	const procs, reps, perCall = 50, 4, 50
	took := statStorm(t, file, procs, reps, perCall)
	delta := readStormMetrics(t, m, leader).sub(before)
	n := procs * reps * perCall
	t.Logf("%d processes, %d stats in %v: %.0f stats/s", procs, n, took, float64(n)/took.Seconds())
	t.Logf("%v", delta)

	if err := stats.Wait(); err != nil {
		t.Fatalf("jfs stats: %v\n%s", err, statsOut.String())
	}
	stopCat()

	// Merging happened: requests of the mount's processes shared RPCs.
	if delta.mergedGetattr <= 0 {
		t.Errorf("no getattr was merged: %v", delta)
	}
	if delta.metaGetattr >= delta.fuseGetattr {
		t.Errorf("as many getattr requests sent (%0.f) as served (%0.f)", delta.metaGetattr, delta.fuseGetattr)
	}

	// jfs stats printed a header and two lines.
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(statsOut.String()), "\n") {
		if regexp.MustCompile(`^\d\d:\d\d:\d\d \|`).MatchString(l) {
			lines = append(lines, l)
		}
	}
	if len(lines) != 2 {
		t.Errorf("jfs stats --count 2 printed %d lines:\n%s", len(lines), statsOut.String())
	}
	t.Logf("jfs stats:\n%s", statsOut.String())

	// The access log: every line in the exact format, getattr of the file
	// among them, and the seed's grep works on it.
	b := mustReadPath(t, saved)
	getattrs := 0
	want := fmt.Sprintf("] getattr (%d): (%d,[", ino, ino)
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		if l == "" {
			continue
		}
		if !accessLogLine.MatchString(l) {
			t.Errorf("access-log line in a wrong format: %q", l)
			break
		}
		if strings.Contains(l, want) && strings.Contains(l, " - OK <") {
			getattrs++
		}
	}
	if getattrs == 0 {
		t.Fatalf("no %q line in the access log (%d bytes)", want, len(b))
	}
	grep, err := exec.Command("sh", "-c", "grep -E '(getattr|lookup)' "+shellQuote(saved)+" | awk '{print $1, $2}' | awk -F'[:.]' '{print $1\":\"$2\":\"$3}' | sort | uniq -c | sort -rn | head -20").Output()
	if err != nil || len(grep) == 0 {
		t.Errorf("the seed's grep/awk pipeline: %v %q", err, grep)
	}
	t.Logf("%d getattr lines of inode %d in the access log; per second:\n%s", getattrs, ino, grep)

	// jfs profile of the saved log.
	prof, err := exec.Command(filepath.Join(binDir, "jfs"), "profile", "--interval", "0", saved).CombinedOutput()
	if err != nil {
		t.Fatalf("jfs profile: %v\n%s", err, prof)
	}
	if !regexp.MustCompile(`(?m)^getattr\s+\d+`).Match(prof) {
		t.Errorf("jfs profile shows no getattr:\n%s", prof)
	}
	t.Logf("jfs profile:\n%s", prof)

	// .stats is Prometheus text with the mount's metrics.
	text := mustReadPath(t, m.path(".stats"))
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(text))
	if err != nil {
		t.Fatalf(".stats is not Prometheus text: %v", err)
	}
	for _, name := range []string{"jfs_fuse_ops_total", "jfs_fuse_op_duration_seconds", "jfs_meta_ops_total",
		"jfs_meta_ops_durations_histogram_seconds", "jfs_meta_ops_merged_total"} {
		if fams[name] == nil {
			t.Errorf(".stats has no %s", name)
		}
	}
}

// Lines are dropped for a reader that does not read, and the file system
// goes on; .accesslog and .stats cannot be removed or written.
func TestMountObserveVirtualFiles(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc, noCache...)
	// jfs bench knows the mount by its type in the mount table.
	if fs, err := bench.DetectFS(m.dir); err != nil || !fs.JFS || fs.Type != bench.JFSMountType || fs.Stats != m.path(".stats") {
		t.Errorf("bench.DetectFS(%s) = %+v, %v; want a %s mount with .stats", m.dir, fs, err, bench.JFSMountType)
	}
	if err := os.WriteFile(m.path(".stats"), []byte("x"), 0o644); err == nil {
		t.Error("wrote .stats")
	}
	if err := os.Remove(m.path(".accesslog")); err == nil {
		t.Error("removed .accesslog")
	}
	if err := os.Mkdir(m.path(".stats"), 0o755); !os.IsExist(err) {
		t.Errorf("mkdir .stats: %v, want EEXIST", err)
	}
	// A reader that never reads: the file system does not wait for it.
	idle := exec.Command("sh", "-c", "exec 3<"+shellQuote(m.path(".accesslog"))+"; exec sleep 600")
	if err := idle.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { idle.Process.Kill(); idle.Wait() }()
	mustHaveOpen(t, idle.Process.Pid, m.path(".accesslog"))
	mustWriteFile(t, m.path("f"), []byte("x"))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 4000 { // about 12000 lines: more than a reader's buffer holds
			if _, err := os.Stat(m.path("f")); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(120 * time.Second):
		t.Fatal("stats stalled behind an idle .accesslog reader")
	}
	idle.Process.Kill()
	idle.Wait()
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(m.log(), "lines were dropped") {
		if time.Now().After(deadline) {
			t.Fatalf("the mount did not report the dropped lines:\n%s", m.log())
		}
		time.Sleep(50 * time.Millisecond)
	}
}
