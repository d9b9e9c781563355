package integration

import (
	"strings"
	"syscall"
	"testing"
	"time"
)

// Lock delegation through real mounts: a mount alone on a file answers its
// locks itself; another mount's request recalls them and sees them.

// lockRequests is how many lock requests (and delegation returns) the
// cluster's nodes have answered.
func (pc *procCluster) lockRequests(t *testing.T) float64 {
	t.Helper()
	n := 0.0
	for _, p := range pc.procs {
		if p.cmd == nil {
			continue
		}
		m := p.metrics(t)
		for _, method := range []string{"SetLk", "Flock", "GetLk", "ReleaseLockOwner", "DelegReturn"} {
			n += m[`jfsd_requests_total{code="OK",method="`+method+`"}`]
		}
	}
	return n
}

// TestMountDelegatedLocksAreLocal: once a mount alone on a file took a
// lock, fcntl and flock pairs, F_GETLK and close-time releases cost no
// request at all. Fails without delegation (--lock-delegation=false).
func TestMountDelegatedLocksAreLocal(t *testing.T) {
	pc := startProcCluster(t, 3)
	a := startMount(t, pc)
	fd := mustOpen(t, a.path("f"), syscall.O_CREAT|syscall.O_RDWR)
	defer syscall.Close(fd)
	if _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_WRLCK, 0, 0); err != nil { // delegated with this grant
		t.Fatal(err)
	}
	before := pc.lockRequests(t)
	for i := range 200 {
		if _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_UNLCK, 0, 0); err != nil {
			t.Fatalf("pair %d unlock: %v", i, err)
		}
		if _, err := fcntlLock(fd, syscall.F_SETLKW, syscall.F_WRLCK, 0, 10); err != nil {
			t.Fatalf("pair %d lock: %v", i, err)
		}
		if err := syscall.Flock(fd, syscall.LOCK_EX); err != nil {
			t.Fatalf("pair %d flock: %v", i, err)
		}
		if err := syscall.Flock(fd, syscall.LOCK_UN); err != nil {
			t.Fatalf("pair %d flock unlock: %v", i, err)
		}
	}
	// F_GETLK of the same process finds no conflict with its own lock.
	if lk, err := fcntlLock(fd, syscall.F_GETLK, syscall.F_WRLCK, 0, 0); err != nil || lk.Type != syscall.F_UNLCK {
		t.Fatalf("F_GETLK of the holder: %v %v", lk, err)
	}
	// jfsctl asks the mount for the locks it holds.
	out, _, err := jfsctl(t, pc.servers(), "locks", "ls")
	if err != nil || !strings.Contains(out, "held (delegated)") || !strings.Contains(out, "0-9") {
		t.Fatalf("jfsctl locks ls does not show the delegated lock: %v\n%s", err, out)
	}
	// A second descriptor's close (FLUSH) releases the process's locks.
	fd2 := mustOpen(t, a.path("f"), syscall.O_RDWR)
	syscall.Close(fd2)
	if after := pc.lockRequests(t); after != before {
		t.Fatalf("%v lock requests reached the cluster for 800 local lock calls, want none", after-before)
	}
	out, _, err = jfsctl(t, pc.servers(), "locks", "ls")
	if err != nil || !strings.Contains(out, "delegated (no lock held)") {
		t.Fatalf("jfsctl locks ls after the close: %v\n%s", err, out)
	}
}

// TestMountDelegationRecall: a lock held under a delegation on mount A is
// seen from mount B: F_SETLK gets EAGAIN, F_GETLK reports it, and a waiter
// on B is granted when A unlocks.
func TestMountDelegationRecall(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	h, w := startLocker(t, "holder"), startLocker(t, "waiter")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlk w 0 10")
	h.must("lk 1 setlk u 0 10")
	h.must("lk 1 setlk w 0 10") // answered on A alone
	fd := mustOpen(t, b.path("f"), syscall.O_RDWR)
	defer syscall.Close(fd)
	if _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_WRLCK, 5, 1); err != syscall.EAGAIN {
		t.Fatalf("B's F_SETLK over A's delegated lock: %v, want EAGAIN", err)
	}
	lk, err := fcntlLock(fd, syscall.F_GETLK, syscall.F_RDLCK, 0, 0)
	if err != nil || lk.Type != syscall.F_WRLCK || lk.Start != 0 || lk.Len != 10 {
		t.Fatalf("B's F_GETLK: %+v %v, want A's write lock of 0-9", lk, err)
	}
	w.must("open 1 %s", b.path("f"))
	w.send("lk 1 setlkw w 0 0")
	w.blocked(pc, "B's waiter")
	h.must("lk 1 setlk u 0 10")
	if r, _ := w.answer(20 * time.Second); r != "ok" {
		t.Fatalf("B's waiter after A unlocked: %q", r)
	}
	if r := h.do("lk 1 setlk w 0 1"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("A against B's lock: %q", r)
	}
	got := map[string]float64{}
	for _, p := range pc.procs {
		m := p.metrics(t)
		for _, ev := range []string{"granted", "recalled", "returned"} {
			got[ev] += m[`jfsd_lock_delegations_total{event="`+ev+`"}`]
		}
	}
	if got["granted"] < 1 || got["recalled"] < 1 || got["returned"] < 1 {
		t.Fatalf("delegation metrics %v, want each at least 1", got)
	}
}

// TestMountDelegationAcrossFailover: the leader that delegated a lock dies;
// the new leader knows the delegation from the log, recalls it through the
// stream the holder's mount opens there, and B sees A's lock.
func TestMountDelegationAcrossFailover(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	c := pc.client(t)
	h := startLocker(t, "holder")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlk w 0 0")
	out, _, err := jfsctl(t, pc.servers(), "locks", "ls")
	if err != nil || !strings.Contains(out, "held (delegated)") {
		t.Fatalf("not delegated before the failover: %v\n%s", err, out)
	}
	leader := pc.leader(t, c)
	pc.kill(leader)
	if got := pc.leader(t, c); got == leader {
		t.Fatalf("killed node %s still leads", leader.id)
	}
	fd := mustOpen(t, b.path("f"), syscall.O_RDWR)
	defer syscall.Close(fd)
	if _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_RDLCK, 0, 1); err != syscall.EAGAIN {
		t.Fatalf("B's F_SETLK after the failover: %v, want EAGAIN", err)
	}
	h.must("lk 1 setlk u 0 0")
	if _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_RDLCK, 0, 1); err != nil {
		t.Fatalf("B's F_SETLK after A unlocked: %v", err)
	}
}

// TestMountDelegationHolderKilled: the mount holding a delegated lock dies
// (SIGKILL); once its session expires the delegation is void, its lock is
// gone, and a waiter on another mount gets the lock.
func TestMountDelegationHolderKilled(t *testing.T) {
	pc := startProcCluster(t, 3, "--session-ttl", "4s")
	a, b := startMount(t, pc), startMount(t, pc)
	h, w := startLocker(t, "holder"), startLocker(t, "waiter")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlk w 0 0")
	out, _, err := jfsctl(t, pc.servers(), "locks", "ls")
	if err != nil || !strings.Contains(out, "held (delegated)") {
		t.Fatalf("not delegated: %v\n%s", err, out)
	}
	a.kill()
	w.must("open 1 %s", b.path("f"))
	if r := w.do("lk 1 setlkw w 0 0"); r != "ok" {
		t.Fatalf("waiter after the holder's mount died: %q", r)
	}
}
