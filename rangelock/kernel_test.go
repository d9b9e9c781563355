package rangelock

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The kernel tests replay random lock sequences on a real file from several
// real processes (this test binary, re-executed as a helper) and on a Table,
// and compare every answer and, after every op, the whole lock state as
// /proc/locks shows it.

var (
	kernelSeed = flag.Uint64("kernel.seed", 0, "replay only this seed in TestAgainstKernel and TestFlockAgainstKernel")
	kernelOps  = flag.Int("kernel.ops", 2000, "ops per seed in TestAgainstKernel and TestFlockAgainstKernel")
)

// helperEnv marks a process started as a lock helper.
const helperEnv = "RANGELOCK_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "1" {
		if err := serveLocks(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "lock helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveLocks is the helper process: it runs one command per line of in and
// answers each with one line on out.
//
//	open PATH                  -> "ok K": open PATH as descriptor K
//	reopen K                   -> "ok": close descriptor K and open its file again
//	closeall                   -> "ok": close every descriptor, forget them
//	setlk K TYPE START LEN     -> "ok" | "err ERRNO"   (F_SETLK, SEEK_SET)
//	getlk K TYPE START LEN     -> "lk TYPE START LEN PID" | "err ERRNO"
//	flock K OP                 -> "ok" | "err ERRNO"   (OP | LOCK_NB)
//
// TYPE is the kernel's F_RDLCK, F_WRLCK or F_UNLCK, OP its LOCK_SH, LOCK_EX
// or LOCK_UN.
func serveLocks(in io.Reader, out io.Writer) error {
	var (
		fds   []int
		paths []string
	)
	open := func(path string) (int, error) { return syscall.Open(path, syscall.O_RDWR, 0) }
	w := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			return fmt.Errorf("empty command")
		}
		n := make([]int64, len(f))
		for i := 1; i < len(f) && f[0] != "open"; i++ {
			v, err := strconv.ParseInt(f[i], 10, 64)
			if err != nil {
				return fmt.Errorf("command %q: %w", sc.Text(), err)
			}
			n[i] = v
		}
		if len(f) > 1 && f[0] != "open" && (n[1] < 0 || int(n[1]) >= len(fds)) {
			return fmt.Errorf("command %q: no descriptor %d", sc.Text(), n[1])
		}
		reply := func(err error) {
			var errno syscall.Errno
			switch {
			case err == nil:
				fmt.Fprintln(w, "ok")
			case errors.As(err, &errno):
				fmt.Fprintf(w, "err %d\n", int(errno))
			default:
				fmt.Fprintf(w, "err %q\n", err)
			}
		}
		switch {
		case f[0] == "open" && len(f) == 2:
			fd, err := open(f[1])
			if err != nil {
				return err
			}
			fds, paths = append(fds, fd), append(paths, f[1])
			fmt.Fprintf(w, "ok %d\n", len(fds)-1)
		case f[0] == "closeall" && len(f) == 1:
			for _, fd := range fds {
				if err := syscall.Close(fd); err != nil {
					return err
				}
			}
			fds, paths = nil, nil
			fmt.Fprintln(w, "ok")
		case f[0] == "reopen" && len(f) == 2:
			if err := syscall.Close(fds[n[1]]); err != nil {
				return err
			}
			fd, err := open(paths[n[1]])
			if err != nil {
				return err
			}
			fds[n[1]] = fd
			fmt.Fprintln(w, "ok")
		case (f[0] == "setlk" || f[0] == "getlk") && len(f) == 5:
			lk := syscall.Flock_t{Type: int16(n[2]), Whence: io.SeekStart, Start: n[3], Len: n[4]}
			cmd := syscall.F_SETLK
			if f[0] == "getlk" {
				cmd = syscall.F_GETLK
			}
			err := syscall.FcntlFlock(uintptr(fds[n[1]]), cmd, &lk)
			if err == nil && f[0] == "getlk" {
				fmt.Fprintf(w, "lk %d %d %d %d\n", lk.Type, lk.Start, lk.Len, lk.Pid)
			} else {
				reply(err)
			}
		case f[0] == "flock" && len(f) == 3:
			reply(syscall.Flock(fds[n[1]], int(n[2])|syscall.LOCK_NB))
		default:
			return fmt.Errorf("unknown command %q", sc.Text())
		}
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

// helper is the test's end of one helper process.
type helper struct {
	pid int
	in  io.WriteCloser
	out *bufio.Scanner
}

// mustStartHelpers starts n helper processes, all at once (a binary built
// with -race takes a while to start). They end when the test does.
func mustStartHelpers(t *testing.T, n int) []*helper {
	t.Helper()
	var (
		hs   []*helper
		cmds []*exec.Cmd
	)
	// Stop them all at once too: closing stdin ends a helper.
	t.Cleanup(func() {
		for _, h := range hs {
			h.in.Close()
		}
		for _, cmd := range cmds {
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Errorf("helper %d: %v", cmd.Process.Pid, err)
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				<-done
				t.Errorf("helper %d did not exit", cmd.Process.Pid)
			}
		}
	})
	for range n {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), helperEnv+"=1")
		cmd.Stderr = os.Stderr
		in, err := cmd.StdinPipe()
		if err != nil {
			t.Fatal(err)
		}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
		hs = append(hs, &helper{pid: cmd.Process.Pid, in: in, out: bufio.NewScanner(out)})
	}
	return hs
}

// mustOpen makes every helper drop the files it had open, with their locks,
// and open path fds times.
func mustOpen(t *testing.T, hs []*helper, path string, fds int) {
	t.Helper()
	for _, h := range hs {
		if got := h.mustCall(t, "closeall"); got != "ok" {
			t.Fatalf("helper %d: closeall: %q", h.pid, got)
		}
		for k := range fds {
			if got, want := h.mustCall(t, "open %s", path), fmt.Sprintf("ok %d", k); got != want {
				t.Fatalf("helper %d: open: %q, want %q", h.pid, got, want)
			}
		}
	}
}

// mustCall sends one command and returns the reply line.
func (h *helper) mustCall(t *testing.T, format string, args ...any) string {
	t.Helper()
	cmd := fmt.Sprintf(format, args...)
	if _, err := fmt.Fprintln(h.in, cmd); err != nil {
		t.Fatalf("helper %d: %s: %v", h.pid, cmd, err)
	}
	if !h.out.Scan() {
		t.Fatalf("helper %d: %s: no reply (%v)", h.pid, cmd, h.out.Err())
	}
	return h.out.Text()
}

// kernelType is the kernel's l_type for typ.
func kernelType(typ Type) int {
	switch typ {
	case Read:
		return syscall.F_RDLCK
	case Write:
		return syscall.F_WRLCK
	}
	return syscall.F_UNLCK
}

// flockOp is flock(2)'s operation for typ.
func flockOp(typ Type) int {
	switch typ {
	case Read:
		return syscall.LOCK_SH
	case Write:
		return syscall.LOCK_EX
	}
	return syscall.LOCK_UN
}

// mustKernelFile creates the file the helpers lock and returns its path and
// its "major:minor:inode" as /proc/locks writes it.
func mustKernelFile(t *testing.T) (path, devIno string) {
	t.Helper()
	if _, err := os.ReadFile("/proc/locks"); err != nil {
		if os.Getenv("CI") == "" {
			t.Skipf("no /proc/locks: %v", err)
		}
		t.Fatalf("CI needs /proc/locks: %v", err)
	}
	path = filepath.Join(t.TempDir(), "locked")
	if err := os.WriteFile(path, []byte("data"), 0o644); err != nil {
		t.Fatal(err)
	}
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	// The kernel prints the superblock's device as %02x:%02x; st_dev holds it
	// in the glibc encoding.
	dev := uint64(st.Dev)
	major := (dev>>8)&0xfff | (dev>>32)&^uint64(0xfff)
	minor := dev&0xff | (dev>>12)&^uint64(0xff)
	return path, fmt.Sprintf("%02x:%02x:%d", major, minor, st.Ino)
}

// mustProcLocks returns the /proc/locks lines of kind ("POSIX" or "FLOCK")
// on devIno, each as "PID TYPE START END", sorted.
//
// The kernel builds /proc/locks a page per read(2) from a global list, so a
// read that other processes' locking overlaps may show a line twice or miss
// one. The helpers are idle while the test reads, so it reads until two
// reads in a row agree.
func mustProcLocks(t *testing.T, kind, devIno string) []string {
	t.Helper()
	prev := readProcLocks(t, kind, devIno)
	for range 50 {
		cur := readProcLocks(t, kind, devIno)
		if slices.Equal(prev, cur) {
			return cur
		}
		prev = cur
	}
	t.Fatalf("/proc/locks does not settle for %s", devIno)
	return nil
}

func readProcLocks(t *testing.T, kind, devIno string) []string {
	t.Helper()
	data, err := os.ReadFile("/proc/locks")
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		// "1: POSIX  ADVISORY  WRITE 4242 fd:00:1234 0 EOF"; a blocked
		// request has "->" after the number.
		f := strings.Fields(line)
		if len(f) != 8 || f[1] != kind || f[5] != devIno {
			continue
		}
		out = append(out, strings.Join([]string{f[4], f[3], f[6], f[7]}, " "))
	}
	slices.Sort(out)
	return out
}

// procLine writes a lock as mustProcLocks does.
func procLine(pid int, typ Type, r Range) string {
	end := "EOF"
	if r.End != MaxOffset {
		end = strconv.FormatInt(r.End, 10)
	}
	kt := map[Type]string{Read: "READ", Write: "WRITE"}[typ]
	return fmt.Sprintf("%d %s %d %s", pid, kt, r.Start, end)
}

// kernelSeeds are the seeds a run replays: a fixed few, and one new each
// run, or only -kernel.seed.
func kernelSeeds() []uint64 {
	if *kernelSeed != 0 {
		return []uint64{*kernelSeed}
	}
	return []uint64{1, 2, 3, uint64(time.Now().UnixNano())}
}

func TestAgainstKernel(t *testing.T) {
	mustKernelFile(t) // skip early without /proc/locks
	hs := mustStartHelpers(t, 4)
	for _, seed := range kernelSeeds() {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			replayPosix(t, hs, seed, *kernelOps)
		})
	}
}

// replayPosix plays ops random POSIX lock calls by the helpers on a new
// file and on a Table and compares them after each.
func replayPosix(t *testing.T, hs []*helper, seed uint64, ops int) {
	const ino = 1
	nprocs := len(hs)
	path, devIno := mustKernelFile(t)
	mustOpen(t, hs, path, 1)
	owner := func(p int) Owner { return Owner{Session: uint64(p + 1), ID: uint64(hs[p].pid)} }
	pidOwner := map[Owner]int{}
	for p, h := range hs {
		pidOwner[owner(p)] = h.pid
	}
	tb := NewTable()
	rnd := rand.New(rand.NewPCG(seed, 0))
	var refused, hits, maxLocks int
	defer func() {
		t.Logf("seed %d: %d ops, %d F_SETLK refused, %d F_GETLK found a lock, up to %d locks at once", seed, ops, refused, hits, maxLocks)
	}()
	for i := range ops {
		p := rnd.IntN(nprocs)
		h, o := hs[p], owner(p)
		start := rnd.Int64N(64)
		var length int64
		switch x := rnd.IntN(10); {
		case x == 0:
			length = 0 // to EOF
		case x == 1 && start > 0:
			length = -1 - rnd.Int64N(start) // l_start+l_len .. l_start-1
		default:
			length = 1 + rnd.Int64N(40)
		}
		r, err := NewRange(start, length)
		if err != nil {
			t.Fatalf("seed %d op %d: NewRange(%d, %d): %v", seed, i, start, length, err)
		}
		var what string
		switch x := rnd.IntN(100); {
		case x < 55:
			typ := []Type{Read, Write, Unlock}[rnd.IntN(3)]
			what = fmt.Sprintf("process %d (pid %d) F_SETLK %v start %d len %d", p, h.pid, typ, start, length)
			reply := h.mustCall(t, "setlk 0 %d %d %d", kernelType(typ), start, length)
			c, err := tb.Set(ino, o, typ, r, uint32(h.pid))
			if err != nil {
				t.Fatalf("seed %d op %d: %s: Set: %v", seed, i, what, err)
			}
			want := "ok"
			if len(c) > 0 {
				want = fmt.Sprintf("err %d", int(syscall.EAGAIN))
				refused++
			}
			if reply != want {
				t.Fatalf("seed %d op %d: %s: kernel %q, Table %q (conflicts %v)", seed, i, what, reply, want, c)
			}
		case x < 95:
			typ := []Type{Read, Write}[rnd.IntN(2)]
			what = fmt.Sprintf("process %d (pid %d) F_GETLK %v start %d len %d", p, h.pid, typ, start, length)
			reply := h.mustCall(t, "getlk 0 %d %d %d", kernelType(typ), start, length)
			l, found, err := tb.Test(ino, o, typ, r)
			if err != nil {
				t.Fatalf("seed %d op %d: %s: Test: %v", seed, i, what, err)
			}
			// F_UNLCK leaves the other fields as they were.
			want := fmt.Sprintf("lk %d %d %d 0", syscall.F_UNLCK, start, length)
			if found {
				hits++
				if int(l.Pid) != pidOwner[l.Owner] {
					t.Fatalf("seed %d op %d: %s: Table's lock %v has pid %d, its owner is pid %d", seed, i, what, l, l.Pid, pidOwner[l.Owner])
				}
				want = fmt.Sprintf("lk %d %d %d %d", kernelType(l.Type), l.Start, l.Len(), pidOwner[l.Owner])
			}
			if reply != want {
				t.Fatalf("seed %d op %d: %s: kernel %q, Table %q (%v %v)", seed, i, what, reply, want, l, found)
			}
		default:
			what = fmt.Sprintf("process %d (pid %d) closes and reopens the file", p, h.pid)
			if reply := h.mustCall(t, "reopen 0"); reply != "ok" {
				t.Fatalf("seed %d op %d: %s: %q", seed, i, what, reply)
			}
			tb.ReleasePosix(ino, o)
		}
		kernel := mustProcLocks(t, "POSIX", devIno)
		var table []string
		for _, l := range tb.Locks(ino) {
			table = append(table, procLine(pidOwner[l.Owner], l.Type, l.Range))
		}
		slices.Sort(table)
		if !slices.Equal(kernel, table) {
			t.Fatalf("seed %d op %d: after %s:\n/proc/locks %q\nTable       %q", seed, i, what, kernel, table)
		}
		maxLocks = max(maxLocks, len(table))
	}
}

func TestFlockAgainstKernel(t *testing.T) {
	mustKernelFile(t) // skip early without /proc/locks
	hs := mustStartHelpers(t, 4)
	for _, seed := range kernelSeeds() {
		t.Run(fmt.Sprint("seed=", seed), func(t *testing.T) {
			replayFlock(t, hs, seed, *kernelOps)
		})
	}
}

// replayFlock plays ops random flock calls by the helpers, which open a new
// file 3 times each, on the file and on a Table, and compares them after each.
func replayFlock(t *testing.T, hs []*helper, seed uint64, ops int) {
	const (
		ino  = 1
		nfds = 3
	)
	nprocs := len(hs)
	path, devIno := mustKernelFile(t)
	mustOpen(t, hs, path, nfds)
	pidOwner := map[Owner]int{}
	for p, h := range hs {
		for k := range nfds {
			pidOwner[Owner{Session: uint64(p + 1), ID: uint64(k)}] = h.pid
		}
	}
	tb := NewTable()
	rnd := rand.New(rand.NewPCG(seed, 1))
	for i := range ops {
		p, k := rnd.IntN(nprocs), rnd.IntN(nfds)
		h, o := hs[p], Owner{Session: uint64(p + 1), ID: uint64(k)}
		var what string
		if rnd.IntN(20) == 0 {
			// The last close of an open file description drops its flock.
			what = fmt.Sprintf("process %d (pid %d) closes and reopens descriptor %d", p, h.pid, k)
			if reply := h.mustCall(t, "reopen %d", k); reply != "ok" {
				t.Fatalf("seed %d op %d: %s: %q", seed, i, what, reply)
			}
			if _, err := tb.Flock(ino, o, Unlock); err != nil {
				t.Fatalf("seed %d op %d: %s: %v", seed, i, what, err)
			}
		} else {
			typ := []Type{Read, Write, Unlock}[rnd.IntN(3)]
			what = fmt.Sprintf("process %d (pid %d) descriptor %d flock %v", p, h.pid, k, typ)
			reply := h.mustCall(t, "flock %d %d", k, flockOp(typ))
			c, err := tb.Flock(ino, o, typ)
			if err != nil {
				t.Fatalf("seed %d op %d: %s: %v", seed, i, what, err)
			}
			want := "ok"
			if len(c) > 0 {
				want = fmt.Sprintf("err %d", int(syscall.EWOULDBLOCK))
			}
			if reply != want {
				t.Fatalf("seed %d op %d: %s: kernel %q, Table %q (conflicts %v)", seed, i, what, reply, want, c)
			}
		}
		var kernel []string
		for _, l := range mustProcLocks(t, "FLOCK", devIno) {
			f := strings.Fields(l)
			kernel = append(kernel, f[0]+" "+f[1])
		}
		slices.Sort(kernel)
		var table []string
		for _, f := range tb.Flocks(ino) {
			table = append(table, fmt.Sprintf("%d %s", pidOwner[f.Owner], map[Type]string{Read: "READ", Write: "WRITE"}[f.Type]))
		}
		slices.Sort(table)
		if !slices.Equal(kernel, table) {
			t.Fatalf("seed %d op %d: after %s:\n/proc/locks %q\nTable       %q", seed, i, what, kernel, table)
		}
	}
}

// TestNewRangeAgainstKernel sets each lock of newRangeTests with fcntl and
// compares the errno, or the range /proc/locks shows, with NewRange's.
func TestNewRangeAgainstKernel(t *testing.T) {
	path, devIno := mustKernelFile(t)
	fd, err := syscall.Open(path, syscall.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer syscall.Close(fd)
	errnos := map[error]syscall.Errno{ErrInvalid: syscall.EINVAL, ErrOverflow: syscall.EOVERFLOW}
	for _, tt := range newRangeTests {
		lk := syscall.Flock_t{Type: syscall.F_WRLCK, Whence: io.SeekStart, Start: tt.start, Len: tt.length}
		err := syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk)
		if tt.err != nil {
			if !errors.Is(err, errnos[tt.err]) {
				t.Errorf("F_SETLK start %d len %d: %v, want %v", tt.start, tt.length, err, errnos[tt.err])
			}
			continue
		}
		if err != nil {
			t.Errorf("F_SETLK start %d len %d: %v", tt.start, tt.length, err)
			continue
		}
		got := mustProcLocks(t, "POSIX", devIno)
		want := []string{procLine(os.Getpid(), Write, tt.want)}
		if !slices.Equal(got, want) {
			t.Errorf("F_SETLK start %d len %d: /proc/locks %q, NewRange %q", tt.start, tt.length, got, want)
		}
		unlock := syscall.Flock_t{Type: syscall.F_UNLCK, Whence: io.SeekStart}
		if err := syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &unlock); err != nil {
			t.Fatal(err)
		}
	}
}
