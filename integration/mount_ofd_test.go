package integration

import (
	"os"
	"os/exec"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Open file description (OFD) locks through a real mount: they belong to the
// open file and go with its last close, as on Linux, while the POSIX locks
// of processes follow their own rule (dropped at any close by the process).
// The test process takes the OFD locks itself (they are per open file, not
// per process); lockers are the other processes.

// ofdLock is fcntl(fd, cmd, {typ, start, len}) with an OFD command.
func ofdLock(fd int, cmd int, typ int16, start, length int64) (unix.Flock_t, error) {
	lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	return lk, unix.FcntlFlock(uintptr(fd), cmd, &lk)
}

// mustEventually polls cond (every 20ms) until it holds, or fails after d.
func mustEventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v", what, d)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// releasesSent is the number of RELEASE requests the mount has sent to the
// cluster and had answered.
func releasesSent(t *testing.T, m *jfsMount) float64 {
	t.Helper()
	return scrape(t, m.metricsAddr)[`jfs_meta_ops_total{method="release"}`]
}

// TestMountOFDLockGoesWithLastClose: an OFD lock stays while any descriptor
// of its open file is open (a dup keeps it), and goes when the last one is
// closed: another process on another mount can then take the range.
func TestMountOFDLockGoesWithLastClose(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	q := startLocker(t, "q")
	fd := mustOpen(t, a.path("f"), syscall.O_RDWR|syscall.O_CREAT)
	if _, err := ofdLock(fd, unix.F_OFD_SETLK, syscall.F_WRLCK, 0, 10); err != nil {
		t.Fatalf("F_OFD_SETLK: %v", err)
	}
	q.must("open 1 %s", b.path("f"))
	if r := q.do("lk 1 setlk w 0 10"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("another process over the OFD lock: %q, want EAGAIN", r)
	}
	dup, err := syscall.Dup(fd)
	if err != nil {
		t.Fatal(err)
	}
	// Closing one descriptor neither ends the open file nor its lock.
	if err := syscall.Close(fd); err != nil {
		t.Fatal(err)
	}
	if r := q.do("lk 1 setlk w 0 10"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("after closing one of two descriptors of the open file: %q, want EAGAIN", r)
	}
	if err := syscall.Close(dup); err != nil {
		t.Fatal(err)
	}
	mustEventually(t, 20*time.Second, "the OFD lock released after the last close", func() bool {
		return q.do("lk 1 setlk w 0 10") == "ok"
	})
	// And nothing of it is left in the cluster.
	var locks struct {
		Locks []struct {
			Pid int `json:"pid"`
		} `json:"locks"`
	}
	mustJfsctlJSON(t, pc.servers(), 10*time.Second, &locks, func() bool {
		return len(locks.Locks) == 1 && locks.Locks[0].Pid == q.cmd.Process.Pid
	}, "locks", "ls", "--json")
}

// TestMountOFDCloseKeepsOtherLocks: the last close of an open file drops its
// OFD lock and nothing else: another process's POSIX lock on the same inode
// and the OFD lock of another open file of the same process stay.
func TestMountOFDCloseKeepsOtherLocks(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	p, q := startLocker(t, "p"), startLocker(t, "q")
	p.must("open 1 %s", a.path("f"))
	p.must("lk 1 setlk w 0 10") // p's POSIX lock
	q.must("open 1 %s", b.path("f"))

	keep := mustOpen(t, a.path("f"), syscall.O_RDWR)
	defer syscall.Close(keep)
	if _, err := ofdLock(keep, unix.F_OFD_SETLK, syscall.F_WRLCK, 200, 10); err != nil {
		t.Fatalf("F_OFD_SETLK on the file kept open: %v", err)
	}
	gone := mustOpen(t, a.path("f"), syscall.O_RDWR)
	if _, err := ofdLock(gone, unix.F_OFD_SETLK, syscall.F_WRLCK, 100, 10); err != nil {
		t.Fatalf("F_OFD_SETLK: %v", err)
	}
	if r := q.do("lk 1 setlk w 100 10"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("over the OFD lock: %q, want EAGAIN", r)
	}
	if err := syscall.Close(gone); err != nil {
		t.Fatal(err)
	}
	mustEventually(t, 20*time.Second, "the OFD lock released after the last close", func() bool {
		return q.do("lk 1 setlk w 100 10") == "ok"
	})
	if r := q.do("lk 1 setlk w 0 10"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("p's POSIX lock after an OFD open file of the inode was closed: %q, want EAGAIN", r)
	}
	if r := q.do("lk 1 setlk w 200 10"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("the OFD lock of the file still open after another was closed: %q, want EAGAIN", r)
	}
	// The test process's OFD view agrees: p still holds [0, 10).
	fd := mustOpen(t, a.path("f"), syscall.O_RDWR)
	defer syscall.Close(fd)
	lk, err := ofdLock(fd, unix.F_OFD_GETLK, syscall.F_WRLCK, 0, 10)
	if err != nil || lk.Type != syscall.F_WRLCK || lk.Start != 0 || lk.Len != 10 {
		t.Fatalf("F_OFD_GETLK over p's lock: %+v %v", lk, err)
	}
}

// TestMountLateReleaseKeepsNewPosixLock: a process's POSIX lock taken
// through a second open file, after it closed the first (which dropped its
// locks), survives the first open file's RELEASE when that comes later,
// because a child process still had the first open file.
func TestMountLateReleaseKeepsNewPosixLock(t *testing.T) {
	pc := startProcCluster(t, 3)
	a := startMount(t, pc)
	q := startLocker(t, "q")
	q.must("open 1 %s", a.path("f"))

	fd1 := mustOpen(t, a.path("f"), syscall.O_RDWR)
	if _, err := fcntlLock(fd1, syscall.F_SETLK, syscall.F_WRLCK, 0, 10); err != nil {
		t.Fatalf("F_SETLK through the first file: %v", err)
	}
	// A child shares the first open file until its stdin closes.
	child := exec.Command("sh", "-c", "cat >/dev/null")
	f1 := os.NewFile(uintptr(fd1), "fd1")
	child.ExtraFiles = []*os.File{f1}
	stdin, err := child.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := child.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { child.Process.Kill(); child.Wait() })
	// The close drops this process's locks (FLUSH); the open file lives on.
	if err := f1.Close(); err != nil {
		t.Fatal(err)
	}
	if r := q.do("lk 1 setlk w 0 10"); r != "ok" {
		t.Fatalf("after the holder closed a descriptor: %q, want the lock free", r)
	}
	q.must("lk 1 setlk u 0 10")

	fd2 := mustOpen(t, a.path("f"), syscall.O_RDWR)
	defer syscall.Close(fd2)
	if _, err := fcntlLock(fd2, syscall.F_SETLK, syscall.F_WRLCK, 0, 10); err != nil {
		t.Fatalf("F_SETLK through the second file: %v", err)
	}
	before := releasesSent(t, a)
	stdin.Close()
	if err := child.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	mustEventually(t, 20*time.Second, "the first open file's RELEASE sent", func() bool {
		return releasesSent(t, a) > before
	})
	if r := q.do("lk 1 setlk w 0 10"); r != errAnswer(syscall.EAGAIN) {
		t.Fatalf("the lock taken through the second file after the first one's release: %q, want EAGAIN", r)
	}
}

// TestMountOFDWaitSameProcess (LTP fcntl34/fcntl36): a thread waiting with
// F_OFD_SETLKW on one open file for a range that another open file of the
// same process holds is not refused with EDEADLK: open files, not
// processes, own OFD locks. It is granted when the other open file unlocks,
// whether that holder's lock is an OFD lock or the process's POSIX lock.
func TestMountOFDWaitSameProcess(t *testing.T) {
	pc := startProcCluster(t, 3)
	a := startMount(t, pc)
	for _, holderCmd := range []struct {
		name     string
		set, un  func(fd int) error
		lockKind string
	}{
		{"ofd holder", func(fd int) error { _, err := ofdLock(fd, unix.F_OFD_SETLK, syscall.F_WRLCK, 0, 1); return err },
			func(fd int) error { _, err := ofdLock(fd, unix.F_OFD_SETLK, syscall.F_UNLCK, 0, 1); return err }, "OFD"},
		{"posix holder", func(fd int) error { _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_WRLCK, 0, 1); return err },
			func(fd int) error { _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_UNLCK, 0, 1); return err }, "POSIX"},
	} {
		t.Run(holderCmd.name, func(t *testing.T) {
			path := a.path(holderCmd.lockKind)
			fd1 := mustOpen(t, path, syscall.O_RDWR|syscall.O_CREAT)
			defer syscall.Close(fd1)
			fd2 := mustOpen(t, path, syscall.O_RDWR)
			defer syscall.Close(fd2)
			if err := holderCmd.set(fd1); err != nil {
				t.Fatalf("the holder's lock: %v", err)
			}
			waited := make(chan error, 1)
			go func() {
				_, err := ofdLock(fd2, unix.F_OFD_SETLKW, syscall.F_WRLCK, 0, 1)
				waited <- err
			}()
			select {
			case err := <-waited:
				t.Fatalf("F_OFD_SETLKW behind the %s lock of another open file of this process: %v, want it to wait", holderCmd.lockKind, err)
			case <-time.After(500 * time.Millisecond):
			}
			if err := holderCmd.un(fd1); err != nil {
				t.Fatalf("the holder's unlock: %v", err)
			}
			select {
			case err := <-waited:
				if err != nil {
					t.Fatalf("F_OFD_SETLKW after the holder unlocked: %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("F_OFD_SETLKW not granted within 30s of the unlock")
			}
		})
	}
}
