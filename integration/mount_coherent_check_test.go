package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
)

// The two-mount checker: writers on mount A change files, readers on
// mounts A and B stat them, and porcupine decides whether the history is
// linearizable. Each file is a register holding its mode, written in two
// ways: chmod (the inode's attributes change) and a new file renamed over
// the name (the name points to another inode with the new mode), so that a
// stale attribute and a stale directory entry are both visible to a reader.
// One writer per file: a chmod racing a rename over the same name may change
// the inode the rename just unlinked, which is no register's write.

const checkFiles = 3

type regIn struct {
	file  int
	write bool
	mode  uint32
}

type regOut struct {
	mode uint32 // 0: the name did not exist (never written so)
}

// regModel is one register per file; partitioned by file.
var regModel = porcupine.Model{
	Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
		by := make([][]porcupine.Operation, checkFiles)
		for _, op := range history {
			f := op.Input.(regIn).file
			by[f] = append(by[f], op)
		}
		return by
	},
	Init: func() any { return uint32(0o600) },
	Step: func(state, input, output any) (bool, any) {
		in, out := input.(regIn), output.(regOut)
		if in.write {
			return true, in.mode
		}
		return out.mode == state.(uint32), state
	},
	Equal: func(a, b any) bool { return a.(uint32) == b.(uint32) },
	DescribeOperation: func(input, output any) string {
		in, out := input.(regIn), output.(regOut)
		if in.write {
			return fmt.Sprintf("f%d := %o", in.file, in.mode)
		}
		return fmt.Sprintf("f%d -> %o", in.file, out.mode)
	},
}

// history collects operations from many goroutines.
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []porcupine.Operation
}

func (h *history) now() int64 { return time.Since(h.start).Nanoseconds() }

func (h *history) add(client int, in regIn, out regOut, call, ret int64) {
	h.mu.Lock()
	h.ops = append(h.ops, porcupine.Operation{ClientId: client, Input: in, Output: out, Call: call, Return: ret})
	h.mu.Unlock()
}

// runCoherenceCheck runs writers on a and readers on a and b over the
// files for the given number of writes per file, and returns the history.
func runCoherenceCheck(t *testing.T, a, b *jfsMount, writesPerFile int) *history {
	t.Helper()
	name := func(m *jfsMount, f int) string { return m.path(fmt.Sprintf("f%d", f)) }
	for f := range checkFiles {
		if err := os.WriteFile(name(a, f), nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(name(a, f), 0o600); err != nil { // whatever the umask
			t.Fatal(err)
		}
	}
	h := &history{start: time.Now()}
	var (
		wg      sync.WaitGroup
		failMu  sync.Mutex
		failure error
	)
	fail := func(err error) {
		failMu.Lock()
		if failure == nil {
			failure = err
		}
		failMu.Unlock()
	}
	writersDone := make(chan struct{})
	// Readers pace themselves by the writes: each reads at most
	// readsPerWrite times per completed write, so the history stays small
	// enough to check, whatever the speed of a cached stat.
	const readsPerWrite = 40
	var (
		progMu sync.Mutex
		prog   = make(chan struct{}) // closed and replaced at each write
		writes int
	)
	wrote := func() {
		progMu.Lock()
		writes++
		close(prog)
		prog = make(chan struct{})
		progMu.Unlock()
	}
	progress := func() (int, chan struct{}) {
		progMu.Lock()
		defer progMu.Unlock()
		return writes, prog
	}
	var writers sync.WaitGroup
	for f := range checkFiles {
		writers.Add(1)
		go func() {
			defer writers.Done()
			rng := rand.New(rand.NewPCG(uint64(f), 7))
			for i := range writesPerFile {
				// Modes cycle through 0401..0777.
				mode := uint32(0o401 + (i*7+f)%0o377)
				in := regIn{file: f, write: true, mode: mode}
				call := h.now()
				var err error
				if rng.IntN(2) == 0 {
					err = os.Chmod(name(a, f), os.FileMode(mode))
				} else {
					tmp := a.path(fmt.Sprintf("tmp%d", f))
					var fd int
					fd, err = syscall.Open(tmp, syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o600)
					if err == nil {
						err = syscall.Fchmod(fd, mode)
						syscall.Close(fd)
					}
					if err == nil {
						err = os.Rename(tmp, name(a, f))
					}
				}
				ret := h.now()
				if err != nil {
					fail(fmt.Errorf("write f%d: %w", f, err))
					return
				}
				h.add(100+f, in, regOut{}, call, ret)
				wrote()
			}
		}()
	}
	go func() {
		writers.Wait()
		close(writersDone)
	}()
	readers := []*jfsMount{a, b, b, b} // client 0 reads on the writers' mount
	for r, m := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 11))
			n, since := 0, -1
			for {
				w, next := progress()
				if w != since {
					since, n = w, 0
				}
				if n >= readsPerWrite {
					select {
					case <-writersDone:
						return
					case <-next:
					}
					continue
				}
				select {
				case <-writersDone:
					return
				default:
				}
				n++
				f := rng.IntN(checkFiles)
				var st syscall.Stat_t
				call := h.now()
				err := syscall.Stat(name(m, f), &st)
				ret := h.now()
				switch {
				case errors.Is(err, syscall.ENOENT):
					// A rename over the name never leaves it missing.
					fail(fmt.Errorf("f%d missing on a reader", f))
					return
				case err != nil:
					fail(fmt.Errorf("stat f%d: %w", f, err))
					return
				}
				h.add(r, regIn{file: f}, regOut{mode: st.Mode & 0o777}, call, ret)
			}
		}()
	}
	wg.Wait()
	<-writersDone
	if failure != nil {
		t.Fatal(failure)
	}
	return h
}

// checkHistory judges h: the writes and the reads on mount B must be
// linearizable (porcupine); a read on mount A, the writers' own mount, must
// not return a value that a write done before the read began had replaced.
// A's readers are held to less: while a write of A is in flight, the other
// mount may already see its result while A's kernel shows the old one until
// the write's answer reaches it (its own view is updated by the answer,
// cluster/DESIGN.md "Coherent caches"). The promise is the second:
// a stat that starts after a write returned sees it, on any mount.
func checkHistory(t *testing.T, h *history) porcupine.CheckResult {
	t.Helper()
	var onB, onA []porcupine.Operation
	for _, op := range h.ops {
		if op.ClientId == 0 {
			onA = append(onA, op)
		} else {
			onB = append(onB, op)
		}
	}
	res := porcupine.CheckOperationsTimeout(regModel, onB, 2*time.Minute)
	if res == porcupine.Illegal {
		t.Logf("writes and mount B's reads not linearizable: %s", firstStaleRead(onB))
	}
	var writes []porcupine.Operation
	for _, op := range h.ops {
		if op.Input.(regIn).write {
			writes = append(writes, op)
		}
	}
	if w := firstStaleRead(append(writes, onA...)); strings.HasPrefix(w, "stale:") {
		t.Logf("a read on mount A saw a replaced value: %s", w)
		res = porcupine.Illegal
	}
	return res
}

// firstStaleRead names a plain witness of a non-linearizable history: a
// read that returned a value overwritten by a write done before the read
// was called, a read of a value whose write had not been called yet, or
// two reads in real-time order that saw a file's writes out of order.
// Writes to one file are sequential, so their order is their call order.
func firstStaleRead(ops []porcupine.Operation) string {
	writes := map[int][]porcupine.Operation{}
	for _, op := range ops {
		if in := op.Input.(regIn); in.write {
			writes[in.file] = append(writes[in.file], op)
		}
	}
	for _, w := range writes {
		sort.Slice(w, func(i, j int) bool { return w[i].Call < w[j].Call })
	}
	// index of the write a read saw: -1 the initial value; several
	// writes of one mode are taken at the latest not after the read.
	seen := func(op porcupine.Operation) int {
		f, mode := op.Input.(regIn).file, op.Output.(regOut).mode
		k := -2
		for i, w := range writes[f] {
			if w.Input.(regIn).mode == mode && w.Call < op.Return {
				k = i
			}
		}
		if k == -2 && mode == 0o600 {
			k = -1
		}
		return k
	}
	var reads []porcupine.Operation
	for _, op := range ops {
		if !op.Input.(regIn).write {
			reads = append(reads, op)
		}
	}
	sort.Slice(reads, func(i, j int) bool { return reads[i].Call < reads[j].Call })
	last := map[int]porcupine.Operation{} // per file: the read with the highest index returned so far
	lastIdx := map[int]int{}
	for _, r := range reads {
		f := r.Input.(regIn).file
		k := seen(r)
		if k == -2 {
			return fmt.Sprintf("stale: client %d read f%d as %o at %v, a mode never written before it returned", r.ClientId, f, r.Output.(regOut).mode, time.Duration(r.Call))
		}
		for i := k + 1; i < len(writes[f]); i++ {
			if w := writes[f][i]; w.Return < r.Call {
				return fmt.Sprintf("stale: client %d read f%d as %o (write %d) at %v, after write %d (f%d := %o) returned at %v",
					r.ClientId, f, r.Output.(regOut).mode, k, time.Duration(r.Call), i, f, w.Input.(regIn).mode, time.Duration(w.Return))
			}
		}
		if p, ok := last[f]; ok && p.Return < r.Call && lastIdx[f] > k {
			return fmt.Sprintf("client %d read f%d as write %d at %v, after client %d had read write %d (returned %v)",
				r.ClientId, f, k, time.Duration(r.Call), p.ClientId, lastIdx[f], time.Duration(p.Return))
		}
		if p, ok := last[f]; !ok || k > lastIdx[f] || (k == lastIdx[f] && r.Return < p.Return) {
			last[f], lastIdx[f] = r, k
		}
	}
	return "no plain witness found; see the history"
}

// TestTwoMountCheckerCatchesTimedCaches: with caches kept for a fixed time
// (an hour here), a reader on mount B that looked a file up before mount A
// changed it keeps answering the old mode: the checker must say so, or it
// could not catch anything.
func TestTwoMountCheckerCatchesTimedCaches(t *testing.T) {
	pc := startProcCluster(t, 3)
	timed := []string{"--cache-mode", "timed", "--attr-cache", "1h", "--entry-cache", "1h", "--dir-entry-cache", "1h"}
	a, b := startMount(t, pc, timed...), startMount(t, pc, timed...)
	h := runCoherenceCheck(t, a, b, 40)
	if res := checkHistory(t, h); res != porcupine.Illegal {
		t.Fatalf("%d operations with hour-long timed caches on two mounts judged %v; the checker must catch the stale reads", len(h.ops), res)
	}
}

// TestTwoMountLinearizableNoCache: with every kernel cache off, both mounts
// ask the cluster each time, and the history is linearizable.
func TestTwoMountLinearizableNoCache(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc, noCache...), startMount(t, pc, noCache...)
	h := runCoherenceCheck(t, a, b, 40)
	if res := checkHistory(t, h); res != porcupine.Ok {
		t.Fatalf("%d operations with caches off judged %v", len(h.ops), res)
	}
	if n := countReads(h); n == 0 {
		t.Fatal("no reads recorded")
	}
}

func countReads(h *history) int {
	n := 0
	for _, op := range h.ops {
		if !op.Input.(regIn).write {
			n++
		}
	}
	return n
}

// TestTwoMountLinearizableCoherent: with coherent caches (the default) both
// mounts keep what they read in the kernel, and the history is still
// linearizable: the cluster answers each change only after the caching
// mounts dropped what it changed.
func TestTwoMountLinearizableCoherent(t *testing.T) {
	pc := startProcCluster(t, 3)
	coherent := []string{"--cache-mode", "coherent"}
	a, b := startMount(t, pc, coherent...), startMount(t, pc, coherent...)
	for _, m := range []*jfsMount{a, b} {
		if !waitFor(60*time.Second, func() bool { return mountMetric(t, m, "jfs_cache_ready") == 1 }) {
			t.Fatalf("the coherent cache stream of %s is not ready after 60s", m.dir)
		}
	}
	h := runCoherenceCheck(t, a, b, 60)
	// The readers must have read from the kernel's caches, or this
	// checked nothing new.
	if g := mountMetric(t, b, "jfs_cache_grants_total"); g <= 0 {
		t.Fatalf("mount B was granted nothing to cache (%v)", g)
	}
	if res := checkHistory(t, h); res != porcupine.Ok {
		t.Fatalf("%d operations with coherent caches on two mounts judged %v", len(h.ops), res)
	}
	if n := countReads(h); n == 0 {
		t.Fatal("no reads recorded")
	}
}
