package bench

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// WorkerEnv, set to "1" in a process's environment, makes the program that
// runs the bench a worker: it must then call WorkerMain instead of its usual
// main. Workers are separate processes because locks belong to processes and
// FUSE merges the identical requests of one process.
const WorkerEnv = "JFS_BENCH_WORKER"

// The worker protocol, one line each way:
//
//	parent: JSON job         worker: "ready" once set up, or "fail MESSAGE"
//	parent: "go PHASE"       worker: "p N" (ops so far) a few times a second,
//	                                 then "done JSON" (a phaseResult)
//	parent: "quit"           worker: cleans up, "bye", exits
//
// Any failure is "fail MESSAGE"; the worker then exits.

// job is what a worker is told to do.
type job struct {
	Workload string        `json:"workload"`
	ID       int           `json:"id"`
	Work     string        `json:"work"`     // the run's directory inside DIR
	Duration time.Duration `json:"duration"` // of a timed phase
	MaxFiles int           `json:"max_files"`
	Shm      string        `json:"shm,omitempty"` // lock-handoff: local file shared by the workers
}

// phaseResult is a worker's account of one phase.
type phaseResult struct {
	Ops        map[string]*Histogram `json:"ops"`
	Errors     uint64                `json:"errors"`
	FirstError string                `json:"first_error,omitempty"`
	Elapsed    time.Duration         `json:"elapsed"`
	Verified   uint64                `json:"verified"`
	Mismatched uint64                `json:"mismatched"`
	Overlaps   uint64                `json:"overlaps"`
}

// phases lists, for every workload, its phases in order and the operations
// each phase reports.
var phases = map[string][]phaseSpec{
	"stat-storm":   {{name: "stat", ops: []string{"stat"}, timed: 1}},
	"lookup-storm": {{name: "lookup", ops: []string{"stat"}, timed: 1}},
	"lock-pairs": {
		{name: "fcntl", ops: []string{"fcntl lock+unlock"}, timed: 0.5},
		{name: "flock", ops: []string{"flock lock+unlock"}, timed: 0.5},
	},
	"lock-handoff": {{name: "handoff", ops: []string{"handoff", "reacquire"}, timed: 1}},
	"meta": {
		{name: "create", ops: []string{"create"}, timed: 1.0 / 3},
		{name: "stat", ops: []string{"stat"}},
		{name: "unlink", ops: []string{"unlink"}},
	},
	"smallfile": {
		{name: "write", ops: []string{"create+write 4KiB+close"}, timed: 0.5},
		{name: "read", ops: []string{"open+read+close, verified"}},
	},
}

// Workloads are the workload names, in the order of the documentation.
var Workloads = []string{"stat-storm", "lookup-storm", "lock-pairs", "lock-handoff", "meta", "smallfile"}

type phaseSpec struct {
	name string
	ops  []string
	// timed is the share of the duration the phase runs for; 0: the phase
	// works through what an earlier phase made.
	timed float64
}

// Paths inside a run's directory.
const (
	statTarget    = "stat-target"
	lookupDirs    = "l1/l2/l3/l4"
	lookupTarget  = lookupDirs + "/target"
	handoffFile   = "handoff"
	smallFileSize = 4096
)

func privateDir(work string, id int) string { return filepath.Join(work, fmt.Sprintf("p%d", id)) }

// worker is one worker process's state.
type worker struct {
	job
	mu      sync.Mutex
	out     *bufio.Writer
	ops     atomic.Uint64 // of the phase running
	fd      int           // lock-pairs, lock-handoff
	shm     []byte        // lock-handoff
	created int           // meta, smallfile: files made by the first phase
}

func (w *worker) send(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	fmt.Fprintf(w.out, format+"\n", args...)
	w.out.Flush()
}

// WorkerMain runs a worker on the protocol above and returns its exit code.
func WorkerMain(in io.Reader, out io.Writer) int {
	w := &worker{out: bufio.NewWriter(out), fd: -1}
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	if !sc.Scan() {
		return 2
	}
	if err := json.Unmarshal(sc.Bytes(), &w.job); err != nil {
		w.send("fail bad job: %v", err)
		return 2
	}
	if _, ok := phases[w.Workload]; !ok {
		w.send("fail unknown workload %q", w.Workload)
		return 2
	}
	if err := w.setup(); err != nil {
		w.send("fail setup: %v", oneLine(err))
		return 1
	}
	w.send("ready")
	for sc.Scan() {
		cmd, arg, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "go":
			r, err := w.runPhase(arg)
			if err != nil {
				w.send("fail %s: %v", arg, oneLine(err))
				w.cleanup()
				return 1
			}
			b, err := json.Marshal(r)
			if err != nil {
				w.send("fail %v", err)
				return 1
			}
			w.send("done %s", b)
		case "quit":
			w.cleanup()
			w.send("bye")
			return 0
		default:
			w.send("fail unknown command %q", sc.Text())
			return 2
		}
	}
	w.cleanup() // the parent went away
	return 1
}

func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", " ") }

func (w *worker) setup() error {
	switch w.Workload {
	case "lock-pairs":
		if err := os.MkdirAll(filepath.Join(w.Work, "locks"), 0o755); err != nil {
			return err
		}
		fd, err := unix.Open(filepath.Join(w.Work, "locks", fmt.Sprintf("p%d", w.ID)), unix.O_RDWR|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
		if err != nil {
			return err
		}
		w.fd = fd
	case "lock-handoff":
		fd, err := unix.Open(filepath.Join(w.Work, handoffFile), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		w.fd = fd
		sfd, err := unix.Open(w.Shm, unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(sfd)
		if w.shm, err = unix.Mmap(sfd, 0, 4096, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED); err != nil {
			return fmt.Errorf("mmap %s: %w", w.Shm, err)
		}
	case "meta", "smallfile":
		return os.Mkdir(privateDir(w.Work, w.ID), 0o755)
	}
	return nil
}

func (w *worker) cleanup() {
	if w.fd >= 0 {
		unix.Close(w.fd)
		w.fd = -1
	}
	if w.shm != nil {
		unix.Munmap(w.shm)
		w.shm = nil
	}
	if w.Workload == "meta" || w.Workload == "smallfile" {
		os.RemoveAll(privateDir(w.Work, w.ID))
	}
}

// runPhase runs one phase and reports progress while it runs.
func (w *worker) runPhase(name string) (*phaseResult, error) {
	var spec *phaseSpec
	for i, p := range phases[w.Workload] {
		if p.name == name {
			spec = &phases[w.Workload][i]
		}
	}
	if spec == nil {
		return nil, fmt.Errorf("workload %s has no phase %q", w.Workload, name)
	}
	r := &phaseResult{Ops: map[string]*Histogram{}}
	for _, op := range spec.ops {
		r.Ops[op] = &Histogram{}
	}
	w.ops.Store(0)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-stop:
				return
			case <-t.C:
				w.send("p %d", w.ops.Load())
			}
		}
	}()
	deadline := time.Now().Add(time.Duration(spec.timed * float64(w.Duration)))
	start := time.Now()
	err := w.phase(spec, r, deadline)
	r.Elapsed = time.Since(start)
	close(stop)
	wg.Wait()
	return r, err
}

// fail counts a failed operation.
func (r *phaseResult) fail(what string, err error) {
	if r.Errors == 0 {
		r.FirstError = what + ": " + err.Error()
	}
	r.Errors++
}

// timed runs op until the deadline, recording each success in h.
func (w *worker) timed(deadline time.Time, h *Histogram, r *phaseResult, what string, op func() error) {
	for time.Now().Before(deadline) {
		t := time.Now()
		if err := op(); err != nil {
			r.fail(what, err)
			if r.Errors > 1000 && r.Errors > 10*h.Count() {
				return // every operation fails: no point going on
			}
			continue
		}
		h.Record(time.Since(t))
		w.ops.Add(1)
	}
}

func (w *worker) phase(spec *phaseSpec, r *phaseResult, deadline time.Time) error {
	h := r.Ops[spec.ops[0]]
	var st unix.Stat_t
	switch w.Workload + "/" + spec.name {
	case "stat-storm/stat":
		p := filepath.Join(w.Work, statTarget)
		w.timed(deadline, h, r, "stat", func() error { return unix.Stat(p, &st) })
	case "lookup-storm/lookup":
		p := filepath.Join(w.Work, lookupTarget)
		w.timed(deadline, h, r, "stat", func() error { return unix.Stat(p, &st) })
	case "lock-pairs/fcntl":
		w.timed(deadline, h, r, "fcntl", func() error {
			lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
			if err := unix.FcntlFlock(uintptr(w.fd), unix.F_SETLK, &lk); err != nil {
				return err
			}
			lk.Type = unix.F_UNLCK
			return unix.FcntlFlock(uintptr(w.fd), unix.F_SETLK, &lk)
		})
	case "lock-pairs/flock":
		w.timed(deadline, h, r, "flock", func() error {
			if err := unix.Flock(w.fd, unix.LOCK_EX); err != nil {
				return err
			}
			return unix.Flock(w.fd, unix.LOCK_UN)
		})
	case "lock-handoff/handoff":
		return w.handoff(deadline, r)
	case "meta/create":
		dir := privateDir(w.Work, w.ID)
		for w.created < w.MaxFiles && time.Now().Before(deadline) {
			t := time.Now()
			fd, err := unix.Open(filepath.Join(dir, fmt.Sprintf("f%d", w.created)), unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				err = unix.Close(fd)
			}
			if err != nil {
				r.fail("create", err)
				return nil // the later phases work on the files made so far
			}
			h.Record(time.Since(t))
			w.ops.Add(1)
			w.created++
		}
	case "meta/stat":
		dir := privateDir(w.Work, w.ID)
		w.each(h, r, "stat", func(i int) error { return unix.Stat(filepath.Join(dir, fmt.Sprintf("f%d", i)), &st) })
	case "meta/unlink":
		dir := privateDir(w.Work, w.ID)
		w.each(h, r, "unlink", func(i int) error { return unix.Unlink(filepath.Join(dir, fmt.Sprintf("f%d", i))) })
		w.created = 0
	case "smallfile/write":
		dir := privateDir(w.Work, w.ID)
		for w.created < w.MaxFiles && time.Now().Before(deadline) {
			i := w.created
			t := time.Now()
			if err := writeFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), content(w.ID, i)); err != nil {
				r.fail("write", err)
				return nil
			}
			h.Record(time.Since(t))
			w.ops.Add(1)
			w.created++
		}
	case "smallfile/read":
		dir := privateDir(w.Work, w.ID)
		buf := make([]byte, smallFileSize+1)
		w.each(h, r, "read", func(i int) error {
			n, err := readFile(filepath.Join(dir, fmt.Sprintf("f%d", i)), buf)
			if err != nil {
				return err
			}
			if bytes.Equal(buf[:n], content(w.ID, i)) {
				r.Verified++
			} else {
				r.Mismatched++
				if r.Mismatched == 1 && r.FirstError == "" {
					r.FirstError = fmt.Sprintf("f%d: read %d bytes that differ from what was written", i, n)
				}
			}
			return nil
		})
	default:
		return fmt.Errorf("no phase %s of %s", spec.name, w.Workload)
	}
	return nil
}

// each runs op on every file the first phase made.
func (w *worker) each(h *Histogram, r *phaseResult, what string, op func(i int) error) {
	for i := 0; i < w.created; i++ {
		t := time.Now()
		if err := op(i); err != nil {
			r.fail(fmt.Sprintf("%s f%d", what, i), err)
			continue
		}
		h.Record(time.Since(t))
		w.ops.Add(1)
	}
}

// content is the data of smallfile i of worker id: 4 KiB that differ from
// every other file's.
func content(id, i int) []byte {
	b := make([]byte, 0, smallFileSize)
	line := fmt.Appendf(nil, "jfs bench: worker %d, file %d\n", id, i)
	for len(b) < smallFileSize {
		b = append(b, line...)
	}
	b = b[:smallFileSize]
	x := uint32(id*1_000_003 + i + 1)
	for j := len(line); j < smallFileSize; j += 61 { // sprinkle a per-file pattern
		x = x*1664525 + 1013904223
		b[j] = byte(x >> 24)
	}
	return b
}

func writeFile(p string, data []byte) error {
	fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
	if err != nil {
		return err
	}
	n, err := unix.Write(fd, data)
	if err == nil && n != len(data) {
		err = fmt.Errorf("short write: %d of %d bytes", n, len(data))
	}
	if cerr := unix.Close(fd); err == nil {
		err = cerr
	}
	return err
}

// readFile reads p into buf (at most len(buf) bytes) and returns how many.
func readFile(p string, buf []byte) (int, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	total := 0
	for total < len(buf) {
		n, err := unix.Read(fd, buf[total:])
		if err != nil {
			return total, err
		}
		if n == 0 {
			break
		}
		total += n
	}
	return total, nil
}

// The lock-handoff workers share a page of a local file (not on the file
// system under test):
const (
	shmLastUnlock = 0  // monotonic ns when the last holder started to unlock
	shmLastHolder = 8  // id+1 of the last holder
	shmHolders    = 16 // processes holding the lock now: more than 1 is a bug
)

func (w *worker) shmWord(off int) *atomic.Int64 {
	return (*atomic.Int64)(unsafe.Pointer(&w.shm[off]))
}

func monoNow() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// handoff takes turns on one lock with F_SETLKW until the deadline. The
// latency of an acquisition is from the later of the previous holder's
// unlock and this request, to the return of F_SETLKW: the wake-up latency
// when the lock was handed over from another process.
func (w *worker) handoff(deadline time.Time, r *phaseResult) error {
	handoff, again := r.Ops["handoff"], r.Ops["reacquire"]
	last, holder, holders := w.shmWord(shmLastUnlock), w.shmWord(shmLastHolder), w.shmWord(shmHolders)
	me := int64(w.ID + 1)
	for time.Now().Before(deadline) {
		asked := monoNow()
		lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0}
		if err := unix.FcntlFlock(uintptr(w.fd), unix.F_SETLKW, &lk); err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			r.fail("F_SETLKW", err)
			if r.Errors > 100 {
				return nil
			}
			continue
		}
		got := monoNow()
		if holders.Add(1) != 1 {
			r.Overlaps++
		}
		lat := time.Duration(got - max(last.Load(), asked))
		if holder.Swap(me) == me {
			again.Record(lat)
		} else {
			handoff.Record(lat)
		}
		w.ops.Add(1)
		holders.Add(-1)
		last.Store(monoNow())
		lk.Type = unix.F_UNLCK
		if err := unix.FcntlFlock(uintptr(w.fd), unix.F_SETLK, &lk); err != nil {
			return fmt.Errorf("unlock: %w", err)
		}
	}
	return nil
}
