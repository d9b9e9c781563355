package integration

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
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
			}
		}()
	}
	go func() {
		writers.Wait()
		close(writersDone)
	}()
	readers := []*jfsMount{a, b, b, b}
	for r, m := range readers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(r), 11))
			for {
				select {
				case <-writersDone:
					return
				default:
				}
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

// checkHistory runs porcupine on h.
func checkHistory(t *testing.T, h *history) porcupine.CheckResult {
	t.Helper()
	res := porcupine.CheckOperationsTimeout(regModel, h.ops, 2*time.Minute)
	if res == porcupine.Illegal {
		t.Logf("not linearizable: %s", firstStaleRead(h.ops))
	}
	return res
}

// firstStaleRead names a read that returned a value overwritten by a write
// that had returned before the read was called: the plainest witness.
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
	for _, op := range ops {
		in := op.Input.(regIn)
		if in.write {
			continue
		}
		var last *porcupine.Operation // the last write done before the read began
		for i := range writes[in.file] {
			if writes[in.file][i].Return < op.Call {
				last = &writes[in.file][i]
			}
		}
		if last != nil && last.Input.(regIn).mode != op.Output.(regOut).mode && !overlapsWriteOf(writes[in.file], last.Return, op, op.Output.(regOut).mode) {
			return fmt.Sprintf("client %d read f%d as %o at %v, after f%d := %o returned at %v",
				op.ClientId, in.file, op.Output.(regOut).mode, time.Duration(op.Call), in.file, last.Input.(regIn).mode, time.Duration(last.Return))
		}
	}
	return "no single stale read; see the history"
}

// overlapsWriteOf reports whether a write of mode that may have taken
// effect after `after` overlaps op: then op's value is not plainly stale.
func overlapsWriteOf(w []porcupine.Operation, after int64, op porcupine.Operation, mode uint32) bool {
	for _, x := range w {
		if x.Input.(regIn).mode == mode && x.Return > after && x.Call < op.Return {
			return true
		}
	}
	return false
}

// TestTwoMountCheckerCatchesTimedCaches: with caches kept for a fixed time
// (an hour here), a reader on mount B that looked a file up before mount A
// changed it keeps answering the old mode: the checker must say so, or it
// could not catch anything.
func TestTwoMountCheckerCatchesTimedCaches(t *testing.T) {
	pc := startProcCluster(t, 3)
	timed := []string{"--attr-cache", "1h", "--entry-cache", "1h", "--dir-entry-cache", "1h"}
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
