package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Locks through real mounts of a three-node cluster: blocking waits on the
// leader, deadlocks across mounts, interrupts, fairness, and what happens
// to the locks of a mount that dies, freezes or loses its leader.

// TestMountDeadlockAcrossMounts: P on mount A takes x then y, Q on mount B
// takes y then x: the wait that closes the cycle gets EDEADLK, the other
// is granted once the loser lets go.
func TestMountDeadlockAcrossMounts(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	p, q := startLocker(t, "p"), startLocker(t, "q")
	p.must("open 1 %s", a.path("x"))
	p.must("open 2 %s", a.path("y"))
	q.must("open 1 %s", b.path("x"))
	q.must("open 2 %s", b.path("y"))
	p.must("lk 1 setlkw w 0 0")
	q.must("lk 2 setlkw w 0 0")
	p.send("lk 2 setlkw w 0 0")
	p.blocked(pc, "P waiting for y")
	if r := q.do("lk 1 setlkw w 0 0"); r != errAnswer(syscall.EDEADLK) {
		t.Fatalf("Q's F_SETLKW closing the cycle: %q, want EDEADLK", r)
	}
	q.must("lk 2 setlk u 0 0")
	if r, _ := p.answer(10 * time.Second); r != "ok" {
		t.Fatalf("P after Q let go of y: %q", r)
	}
}

// TestMountDeadlockRings: rings of 3 and 20 processes alternating between
// two mounts, each holding its file and waiting for the next one's; only
// the wait that closes the ring is refused.
func TestMountDeadlockRings(t *testing.T) {
	pc := startProcCluster(t, 3)
	mounts := []*jfsMount{startMount(t, pc), startMount(t, pc)}
	for _, n := range []int{3, 20} {
		t.Run(fmt.Sprint(n), func(t *testing.T) {
			ls := make([]*locker, n)
			for i := range ls {
				ls[i] = startLocker(t, fmt.Sprintf("ring%d-%d", n, i))
				m := mounts[i%2]
				ls[i].must("open 1 %s", m.path(fmt.Sprintf("ring%d-%d", n, i)))
				ls[i].must("open 2 %s", m.path(fmt.Sprintf("ring%d-%d", n, (i+1)%n)))
				ls[i].must("lk 1 setlkw w 0 0")
			}
			for i := 0; i < n-1; i++ {
				ls[i].send("lk 2 setlkw w 0 0")
			}
			for i := 0; i < n-1; i++ {
				ls[i].blocked(pc, fmt.Sprintf("process %d", i))
			}
			if r := ls[n-1].do("lk 2 setlkw w 0 0"); r != errAnswer(syscall.EDEADLK) {
				t.Fatalf("the wait closing a ring of %d: %q, want EDEADLK", n, r)
			}
			ls[n-1].must("lk 1 setlk u 0 0")
			for i := n - 2; i >= 0; i-- {
				if r, _ := ls[i].answer(10 * time.Second); r != "ok" {
					t.Fatalf("process %d after its successor let go: %q", i, r)
				}
				ls[i].must("lk 1 setlk u 0 0")
				ls[i].must("lk 2 setlk u 0 0")
			}
		})
	}
}

// TestMountOneProcessTwoMounts: a process that reaches the file system
// through two mounts is one owner for the wait-for graph, although the
// kernel gives it a different lock owner on each mount.
func TestMountOneProcessTwoMounts(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	p, q := startLocker(t, "p"), startLocker(t, "q")
	for _, l := range []*locker{p, q} {
		l.must("open 1 %s", a.path("f1"))
		l.must("open 2 %s", b.path("f2"))
	}
	p.must("lk 1 setlkw w 0 0") // P holds f1 through A
	q.must("lk 2 setlkw w 0 0") // Q holds f2 through B
	q.send("lk 1 setlkw w 0 0") // Q waits for P, through A
	q.blocked(pc, "Q waiting for f1")
	if r := p.do("lk 2 setlkw w 0 0"); r != errAnswer(syscall.EDEADLK) {
		t.Fatalf("P waiting for Q through the other mount: %q, want EDEADLK", r)
	}
	p.must("lk 1 setlk u 0 0")
	if r, _ := q.answer(10 * time.Second); r != "ok" {
		t.Fatalf("Q after P let go: %q", r)
	}
	// Waiting through B for a lock it holds through A, P would wait for
	// itself: refused too.
	q.must("lk 1 setlk u 0 0")
	p.must("open 3 %s", b.path("f1"))
	p.must("lk 1 setlk w 0 0")
	if r := p.do("lk 3 setlkw w 0 0"); r != errAnswer(syscall.EDEADLK) {
		t.Fatalf("P waiting for its own lock through another mount: %q, want EDEADLK", r)
	}
}

// TestMountFIFOFairness: a writer waiting behind a reader is not overtaken
// by a reader that comes later.
func TestMountFIFOFairness(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	h, w, r := startLocker(t, "holder"), startLocker(t, "writer"), startLocker(t, "reader")
	h.must("open 1 %s", a.path("f"))
	w.must("open 1 %s", b.path("f"))
	r.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlkw r 0 0")
	w.send("lk 1 setlkw w 0 0")
	w.blocked(pc, "writer behind a reader")
	r.send("lk 1 setlkw r 0 0")
	r.blocked(pc, "a later reader behind the waiting writer")
	h.must("lk 1 setlk u 0 0")
	if got, _ := w.answer(10 * time.Second); got != "ok" {
		t.Fatalf("writer: %q", got)
	}
	r.blocked(pc, "reader while the writer holds")
	w.must("lk 1 setlk u 0 0")
	if got, _ := r.answer(10 * time.Second); got != "ok" {
		t.Fatalf("reader: %q", got)
	}
}

// interruptScript waits for a write lock with F_SETLKW until SIGALRM
// interrupts it (Python's handlers do not restart system calls), then
// keeps the file open, so a lock granted to it by mistake would stay held.
const interruptScript = `
import fcntl, os, signal, sys, time
class Interrupted(Exception): pass
def on_alarm(sig, frame): raise Interrupted()
signal.signal(signal.SIGALRM, on_alarm)
fd = os.open(sys.argv[1], os.O_RDWR)
signal.setitimer(signal.ITIMER_REAL, float(sys.argv[2]))
try:
    fcntl.lockf(fd, fcntl.LOCK_EX)
    print("granted", flush=True)
except Interrupted:
    print("interrupted", flush=True)
time.sleep(float(sys.argv[3]))
`

// TestMountInterruptLeavesNoGhost: a signal ends a blocked F_SETLKW with
// EINTR, and the lock is never granted to that process afterwards, nor to
// a process killed while it waited.
func TestMountInterruptLeavesNoGhost(t *testing.T) {
	py, err := exec.LookPath("python3")
	if err != nil {
		t.Fatalf("python3 is needed for this test (.ci/run installs it): %v", err)
	}
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	h, k, r := startLocker(t, "holder"), startLocker(t, "killed"), startLocker(t, "later")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlkw w 0 0")

	// Interrupted by a signal.
	script := filepath.Join(t.TempDir(), "interrupt.py")
	if err := os.WriteFile(script, []byte(interruptScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(py, script, b.path("f"), "1", "4")
	cmd.Stderr = os.Stderr
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	line := make([]byte, 64)
	n, _ := out.Read(line)
	if got := strings.TrimSpace(string(line[:n])); got != "interrupted" {
		t.Fatalf("python's F_SETLKW with an alarm: %q, want interrupted", got)
	}

	// Killed while waiting.
	k.must("open 1 %s", b.path("f"))
	k.send("lk 1 setlkw w 0 0")
	k.blocked(pc, "waiter to be killed")
	k.cmd.Process.Kill()
	k.cmd.Wait()

	h.must("lk 1 setlk u 0 0")
	// Nobody may hold the lock now: the interrupted process still has the
	// file open, and a ghost grant would show here.
	r.must("open 1 %s", a.path("f"))
	// Not for ordering: a ghost grant would be proposed after the unlock;
	// this gives it time to land. A correct cluster passes at once.
	time.Sleep(300 * time.Millisecond)
	if got := r.do("lk 1 setlk w 0 0"); got != "ok" {
		t.Fatalf("after the holder let go, a new F_SETLK: %q; a lock went to an interrupted or killed waiter", got)
	}
}

// TestMountHolderMountKilled: the mount of a lock holder dies (SIGKILL);
// its session expires after the TTL, its locks are released, and a waiter
// on another mount gets the lock.
func TestMountHolderMountKilled(t *testing.T) {
	pc := startProcCluster(t, 3, "--session-ttl", "4s")
	a, b := startMount(t, pc), startMount(t, pc)
	h, w := startLocker(t, "holder"), startLocker(t, "waiter")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlkw w 0 0")
	w.must("open 1 %s", b.path("f"))
	w.send("lk 1 setlkw w 0 0")
	w.blocked(pc, "waiter")
	killed := time.Now()
	a.kill()
	if r, _ := w.answer(20 * time.Second); r != "ok" {
		t.Fatalf("waiter after the holder's mount died: %q", r)
	}
	t.Logf("granted %v after the holder's mount was killed (TTL 4s)", time.Since(killed).Round(time.Millisecond))
}

// TestMountFencing: a mount frozen (SIGSTOP) past its session's TTL loses
// its locks to a waiter on another mount. Resumed, it must not write under
// the lock it thought it held: every file it had open fails, while new opens
// work under a new session and see the other writer's data.
func TestMountFencing(t *testing.T) {
	pc := startProcCluster(t, 3, "--session-ttl", "4s")
	a, b := startMount(t, pc, noCache...), startMount(t, pc, noCache...)
	p, w := startLocker(t, "paused"), startLocker(t, "other")
	p.must("open 1 %s", a.path("f"))
	p.must("lk 1 setlkw w 0 0")
	p.must("write 1 0 P1")
	w.must("open 1 %s", b.path("f"))
	w.send("lk 1 setlkw w 0 0")
	w.blocked(pc, "waiter")

	a.cmd.Process.Signal(syscall.SIGSTOP)
	if r, _ := w.answer(20 * time.Second); r != "ok" {
		a.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("waiter while the holder's mount is frozen: %q", r)
	}
	w.must("write 1 0 W2")
	w.must("fsync 1") // a write is kept in its mount until then
	a.cmd.Process.Signal(syscall.SIGCONT)

	eio := errAnswer(syscall.EIO)
	// The write may be buffered before the mount learns that its session
	// ended (its error then comes at the close); it must never reach the
	// cluster, which the read of W2 below checks.
	if r := p.do("write 1 0 P3"); r != eio && r != "ok" {
		t.Fatalf("write through a file of the expired session: %q, want EIO or ok", r)
	}
	if r := p.do("lk 1 setlk w 0 0"); r != eio {
		t.Fatalf("lock through a file of the expired session: %q, want EIO", r)
	}
	if r := p.do("read 1 0 2"); r != eio {
		t.Fatalf("read through a file of the expired session: %q, want EIO", r)
	}
	if r := p.do("close 1"); r != eio {
		t.Fatalf("close of a file of the expired session: %q, want EIO", r)
	}
	// New opens work again, under a new session, and see W2.
	deadline := time.Now().Add(20 * time.Second)
	for {
		p.must("open 2 %s", a.path("f"))
		r := p.do("read 2 0 2")
		if r == "data W2" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("a new open on the resumed mount reads %q, want W2", r)
		}
		p.must("close 2")
		time.Sleep(200 * time.Millisecond)
	}
	if got := string(mustReadPath(t, b.path("f"))); got != "W2" {
		t.Fatalf("file holds %q, want W2: the frozen mount wrote after losing its lock", got)
	}
	// The other mount still holds the lock; the resumed one is refused.
	if r := p.do("lk 2 setlk w 0 0"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("the resumed mount's new lock request: %q, want EAGAIN", r)
	}
}

// TestMountLeaderKilledWhileWaiting: processes blocked in F_SETLKW when
// the leader is killed are granted later, one at a time, never two writers
// at once.
func TestMountLeaderKilledWhileWaiting(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	c := pc.client(t)
	h := startLocker(t, "holder")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlkw w 0 0")
	const n = 3
	ws := make([]*locker, n)
	for i := range ws {
		ws[i] = startLocker(t, fmt.Sprintf("waiter%d", i))
		ws[i].must("open 1 %s", b.path("f"))
		ws[i].send("lk 1 setlkw w 0 0")
	}
	for i := range ws {
		ws[i].blocked(pc, fmt.Sprintf("waiter %d", i))
	}
	pc.kill(pc.leader(t, c))
	// The waits move to the new leader before the holder lets go.
	for i := range ws {
		ws[i].blocked(pc, fmt.Sprintf("waiter %d at the new leader", i))
	}
	h.must("lk 1 setlk u 0 0")
	granted := map[int]bool{}
	for len(granted) < n {
		got := -1
		deadline := time.Now().Add(20 * time.Second)
		for got < 0 && time.Now().Before(deadline) {
			for i, w := range ws {
				if granted[i] {
					continue
				}
				if r, ok := w.answer(20 * time.Millisecond); ok {
					if r != "ok" {
						t.Fatalf("waiter %d: %q", i, r)
					}
					got = i
					break
				}
			}
		}
		if got < 0 {
			t.Fatalf("after the failover only %d of %d waiters were granted", len(granted), n)
		}
		granted[got] = true
		// No other waiter may be granted while this one holds the lock.
		for i, w := range ws {
			if !granted[i] {
				w.blocked(pc, fmt.Sprintf("waiter %d while waiter %d holds the lock", i, got))
			}
		}
		ws[got].must("lk 1 setlk u 0 0")
	}
}

// TestMountLeaderKilledKeepsQueueOrder: three processes queued one after
// another in F_SETLKW keep their places when the leader is killed (the
// queue is replicated state): they are granted in the order they queued,
// one at a time.
func TestMountLeaderKilledKeepsQueueOrder(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	c := pc.client(t)
	h := startLocker(t, "holder")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlkw w 0 0")
	const n = 3
	ws := make([]*locker, n)
	for i := range ws {
		ws[i] = startLocker(t, fmt.Sprintf("waiter%d", i))
		ws[i].must("open 1 %s", b.path("f"))
		ws[i].send("lk 1 setlkw w 0 0")
		ws[i].blocked(pc, fmt.Sprintf("waiter %d", i)) // queued before the next one asks
	}
	pc.kill(pc.leader(t, c))
	h.must("lk 1 setlk u 0 0")
	for i, w := range ws {
		if r, ok := w.answer(30 * time.Second); !ok || r != "ok" {
			t.Fatalf("waiter %d: %q %v, want it granted in its turn", i, r, ok)
		}
		for _, later := range ws[i+1:] {
			later.blocked(pc, fmt.Sprintf("a later waiter while waiter %d holds the lock", i))
		}
		w.must("lk 1 setlk u 0 0")
	}
}
