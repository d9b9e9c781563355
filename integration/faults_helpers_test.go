package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// Workloads and invariant checkers for the fault suite (faults_test.go).
// They run in goroutines, so they never call t.Fatal: they stop at the first
// error and keep it for the test to report.

// gapMeter measures the longest pause between two acknowledged operations
// of one worker: the unavailability a fault caused it.
type gapMeter struct {
	last time.Time
	max  time.Duration
}

func (g *gapMeter) start() { g.last = time.Now() }

func (g *gapMeter) ack() {
	now := time.Now()
	g.max = max(g.max, now.Sub(g.last))
	g.last = now
}

// metaWorker creates, writes, renames, removes files and makes directories
// through a mount, in a directory of its own, and remembers every change
// the file system acknowledged.
type metaWorker struct {
	name   string
	dir    string
	expect map[string][]byte // acknowledged state: file -> content, directory -> nil
	ops    atomic.Int64
	gap    gapMeter
	err    error       // read it once run has returned
	failed atomic.Bool // err is set
}

func newMetaWorker(t testing.TB, name, dir string) *metaWorker {
	t.Helper()
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return &metaWorker{name: name, dir: dir, expect: map[string][]byte{}}
}

func metaContent(worker string, i int) []byte {
	return bytes.Repeat(fmt.Appendf(nil, "%s file %d;", worker, i), 40+i%200)
}

// run works until stop is closed or an operation fails.
func (w *metaWorker) run(stop <-chan struct{}) {
	w.gap.start()
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		if err := w.step(i); err != nil {
			w.err = fmt.Errorf("%s step %d: %w", w.name, i, err)
			w.failed.Store(true)
			return
		}
		w.ops.Add(1)
		w.gap.ack()
	}
}

func (w *metaWorker) step(i int) error {
	p := func(n string) string { return filepath.Join(w.dir, n) }
	name := fmt.Sprintf("f%d", i)
	data := metaContent(w.name, i)
	if err := os.WriteFile(p(name), data, 0o644); err != nil {
		return err
	}
	w.expect[name] = data
	got, err := os.ReadFile(p(name))
	if err != nil {
		return fmt.Errorf("read back %s: %w", name, err)
	}
	if !bytes.Equal(got, data) {
		return fmt.Errorf("read back %s: %d bytes, want %d", name, len(got), len(data))
	}
	switch {
	case i%5 == 4: // rename
		to := fmt.Sprintf("r%d", i)
		if err := os.Rename(p(name), p(to)); err != nil {
			return fmt.Errorf("rename %s: %w", name, err)
		}
		w.expect[to] = data
		delete(w.expect, name)
	case i%7 == 6: // remove an earlier file
		victim := fmt.Sprintf("f%d", i-3)
		if _, ok := w.expect[victim]; ok {
			if err := os.Remove(p(victim)); err != nil {
				return fmt.Errorf("remove %s: %w", victim, err)
			}
			delete(w.expect, victim)
		}
	case i%11 == 10:
		d := fmt.Sprintf("d%d", i)
		if err := os.Mkdir(p(d), 0o755); err != nil {
			return fmt.Errorf("mkdir %s: %w", d, err)
		}
		w.expect[d] = nil
	}
	return nil
}

// verify checks that the directory holds exactly what was acknowledged:
// no acknowledged change lost, nothing else there.
func (w *metaWorker) verify(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, e := range ents {
		seen[e.Name()] = true
		want, ok := w.expect[e.Name()]
		if !ok {
			return fmt.Errorf("%s: %s is there but was removed or never made", w.name, e.Name())
		}
		if want == nil {
			if !e.IsDir() {
				return fmt.Errorf("%s: %s is not a directory", w.name, e.Name())
			}
			continue
		}
		got, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil || !bytes.Equal(got, want) {
			return fmt.Errorf("%s: %s holds %d bytes (%v), want %d", w.name, e.Name(), len(got), err, len(want))
		}
	}
	for n := range w.expect {
		if !seen[n] {
			return fmt.Errorf("%s: acknowledged %s is missing", w.name, n)
		}
	}
	return nil
}

// counter is a file that lockers increment under an exclusive F_SETLKW
// lock. Each holder writes its id with the count it read, checks that both
// are still there, writes the incremented count and checks it once more
// before it unlocks: another holder at the same time would show. The test
// process also counts holders between a grant's answer and the unlock.
type counter struct {
	holders  atomic.Int32
	overlaps atomic.Int64
}

type counterWorker struct {
	l      *locker
	id     string
	incs   int // increments acknowledged (written, checked and unlocked)
	ops    atomic.Int64
	gap    gapMeter
	err    error
	detail []string
}

const counterWidth = 16 // "wNN-" and 12 digits

func counterText(id string, n int) string {
	return fmt.Sprintf("%s-%0*d", id, counterWidth-len(id)-1, n)
}

func parseCounter(s string) (id string, n int, err error) {
	if s == "" {
		return "", 0, nil
	}
	id, num, ok := strings.Cut(s, "-")
	if !ok {
		return "", 0, fmt.Errorf("counter %q", s)
	}
	n, err = strconv.Atoi(num)
	return id, n, err
}

// ask sends a command to a locker and waits up to d for its answer.
func ask(l *locker, d time.Duration, format string, args ...any) (string, error) {
	cmd := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(l.stdin, cmd); err != nil {
		return "", err
	}
	r, ok := l.answer(d)
	if !ok {
		return "", fmt.Errorf("%s: no answer to %q within %v", l.name, cmd, d)
	}
	return r, nil
}

func askOK(l *locker, d time.Duration, format string, args ...any) error {
	r, err := ask(l, d, format, args...)
	if err == nil && r != "ok" {
		err = fmt.Errorf("%s: %q answered %q", l.name, fmt.Sprintf(format, args...), r)
	}
	return err
}

func askRead(l *locker, d time.Duration) (string, error) {
	r, err := ask(l, d, "read 1 0 %d", counterWidth)
	if err != nil {
		return "", err
	}
	data, ok := strings.CutPrefix(r, "data ")
	if !ok && r != "data" {
		return "", fmt.Errorf("%s: read answered %q", l.name, r)
	}
	return data, nil
}

// startCounterWorker starts a locker that opens path (the counter file,
// through some mount) as descriptor 1.
func startCounterWorker(t testing.TB, id, path string) *counterWorker {
	t.Helper()
	l := startLocker(t, id)
	l.must("open 1 %s", path)
	return &counterWorker{l: l, id: id}
}

// run increments until stop is closed or something fails. The answers may
// take as long as a failover.
func (c *counter) run(cw *counterWorker, stop <-chan struct{}) {
	const d = 40 * time.Second
	cw.gap.start()
	for {
		select {
		case <-stop:
			return
		default:
		}
		if cw.err = c.increment(cw, d); cw.err != nil {
			return
		}
		cw.incs++
		cw.ops.Add(1)
		cw.gap.ack()
	}
}

func (c *counter) increment(cw *counterWorker, d time.Duration) error {
	l := cw.l
	// No cycle is possible (a locker holds nothing while it waits), so
	// anything but a grant, EDEADLK included, is a failure.
	r, err := ask(l, d, "lk 1 setlkw w 0 0")
	if err != nil {
		return err
	}
	if r != "ok" {
		return fmt.Errorf("%s: F_SETLKW answered %q", l.name, r)
	}
	if c.holders.Add(1) != 1 {
		c.overlaps.Add(1)
		cw.detail = append(cw.detail, "granted while another locker held the lock")
	}
	held := true
	defer func() {
		if held {
			c.holders.Add(-1)
		}
	}()
	before, err := askRead(l, d)
	if err != nil {
		return err
	}
	_, n, err := parseCounter(before)
	if err != nil {
		return err
	}
	check := func(want string) error {
		got, err := askRead(l, d)
		if err != nil {
			return err
		}
		if got != want {
			c.overlaps.Add(1)
			cw.detail = append(cw.detail, fmt.Sprintf("wrote %q under the lock, read back %q", want, got))
		}
		return nil
	}
	mine := counterText(cw.id, n)
	if err := askOK(l, d, "write 1 0 %s", mine); err != nil {
		return err
	}
	if err := check(mine); err != nil {
		return err
	}
	next := counterText(cw.id, n+1)
	if err := askOK(l, d, "write 1 0 %s", next); err != nil {
		return err
	}
	if err := check(next); err != nil {
		return err
	}
	c.holders.Add(-1)
	held = false
	return askOK(l, d, "lk 1 setlk u 0 0")
}

// nodeCounters sums, over the running nodes, the API requests that did not
// answer OK: every one was retried by its client (at another node, or at
// the same one later). Counters of a node start again at 0 when it
// restarts, and attempts that never reached a node are not counted.
func nodeCounters(t testing.TB, pc *procCluster) (notOK float64) {
	t.Helper()
	for _, p := range pc.procs {
		notOK += nodeNotOK(t, p)
	}
	return notOK
}

// nodeNotOK is the requests p answered with another code than OK since it
// started.
func nodeNotOK(t testing.TB, p *proc) (notOK float64) {
	t.Helper()
	if p.cmd == nil {
		return 0
	}
	for k, v := range p.metrics(t) {
		if strings.HasPrefix(k, "jfsd_requests_total{") && !strings.Contains(k, `code="OK"`) {
			notOK += v
		}
	}
	return notOK
}

// mountErrors sums the errors a mount returned to applications, by errno.
func mountErrors(m *jfsMount) map[string]float64 {
	out := map[string]float64{}
	resp, err := http.Get("http://" + m.metricsAddr + "/metrics")
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	re := regexp.MustCompile(`(?m)^jfs_fuse_errors_total\{([^}]*)\} (\S+)$`)
	for _, mm := range re.FindAllStringSubmatch(b.String(), -1) {
		v, _ := strconv.ParseFloat(mm[2], 64)
		errno := regexp.MustCompile(`errno="([^"]*)"`).FindStringSubmatch(mm[1])
		if len(errno) == 2 {
			out[errno[1]] += v
		}
	}
	return out
}

// statusOf asks p for its own view of the cluster, with a short timeout.
func statusOf(c *client.Client, p *proc) (*jfspb.ClusterStatusResponse, error) {
	var st *jfspb.ClusterStatusResponse
	err := c.AdminAt(context.Background(), p.apiAddr, func(ctx context.Context, a jfspb.AdminClient) (err error) {
		st, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
		return err
	})
	return st, err
}

// leaderAmong waits for a leader among procs (not every process of pc:
// a frozen one would only time out).
func leaderAmong(t testing.TB, c *client.Client, procs ...*proc) *proc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range procs {
			if p.cmd == nil {
				continue
			}
			if st, err := statusOf(c, p); err == nil && st.State == "Leader" {
				return p
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatal("no leader within 30s")
	return nil
}

// waitCaughtUp waits until p has applied what the leader had committed
// when the wait began.
func waitCaughtUp(t testing.TB, c *client.Client, leader, p *proc) {
	t.Helper()
	st, err := statusOf(c, leader)
	if err != nil {
		t.Fatalf("status of %s: %v", leader.id, err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if own, err := statusOf(c, p); err == nil && own.AppliedIndex >= st.CommitIndex {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not catch up to index %d within 30s", p.id, st.CommitIndex)
}

// digests asks every running node for the digest of its state machine.
func digests(c *client.Client, procs []*proc) (map[string]*jfspb.DigestResponse, error) {
	out := map[string]*jfspb.DigestResponse{}
	var errs []error
	for _, p := range procs {
		err := c.AdminAt(context.Background(), p.apiAddr, func(ctx context.Context, a jfspb.AdminClient) error {
			d, err := a.Digest(ctx, &jfspb.DigestRequest{})
			if err == nil {
				out[p.id] = d
			}
			return err
		})
		errs = append(errs, err)
	}
	return out, errors.Join(errs...)
}

// waitSameDigest waits until every node has applied the same index, then
// requires the same digest of all.
func waitSameDigest(t testing.TB, c *client.Client, procs []*proc) (uint64, []byte) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	var last map[string]*jfspb.DigestResponse
	for time.Now().Before(deadline) {
		ds, err := digests(c, procs)
		last = ds
		if err == nil && len(ds) == len(procs) {
			// A node that rebuilds its state reports applied index 0
			// until it has caught up: 0 is an index like any other here.
			idx, same := uint64(0), true
			seen := false
			for _, d := range ds {
				if !seen {
					idx, seen = d.AppliedIndex, true
				}
				same = same && d.AppliedIndex == idx
			}
			if same {
				var first []byte
				for _, d := range ds {
					if first == nil {
						first = d.Digest
					}
					if !bytes.Equal(d.Digest, first) || len(first) != 32 {
						t.Fatalf("at applied index %d the state machines differ: %s", idx, describeDigests(ds))
					}
				}
				return idx, first
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("applied indexes did not converge within 30s: %s", describeDigests(last))
	return 0, nil
}

func describeDigests(ds map[string]*jfspb.DigestResponse) string {
	var b strings.Builder
	for id, d := range ds {
		fmt.Fprintf(&b, "%s: applied %d digest %x; ", id, d.AppliedIndex, d.Digest)
	}
	return b.String()
}

// sigProc sends sig to p.
func sigProc(t testing.TB, p *proc, sig syscall.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signal %v to %s: %v", sig, p.id, err)
	}
}

// waitFor polls cond every 20ms for up to d.
func waitFor(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if cond() {
			return true
		}
		time.Sleep(20 * time.Millisecond)
	}
	return cond()
}

// logMatches returns the submatches of re in p's log.
func logMatches(p *proc, re *regexp.Regexp) [][]string {
	b, _ := os.ReadFile(p.logPath)
	return re.FindAllStringSubmatch(string(b), -1)
}

// runAll starts fn for each worker and returns a function that stops them
// and waits.
func runAll(fns ...func(stop <-chan struct{})) (stopAndWait func()) {
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, fn := range fns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			fn(stop)
		}()
	}
	var once sync.Once
	return func() {
		once.Do(func() { close(stop) })
		wg.Wait()
	}
}
