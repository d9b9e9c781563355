package integration

import (
	"fmt"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestMountFlockReleaseOvertakesPlainReleases: a mount closes a few
// thousand plain files and then the file whose flock another process on
// another mount waits for. The kernel queues the RELEASEs in that order;
// the flock's release must not wait behind the plain ones, so the waiter is
// granted. A plain release costs no log entry (the leader ends the open in
// its memory), so thousands of them are sent within moments and how many
// went before the flock's says little about the order; the order itself is
// checked without timing in fuse/owners_test.go
// (TestReleaserUrgentOvertakes). This test checks the whole path:
// the waiter on another mount is granted, and every release is sent.
func TestMountFlockReleaseOvertakesPlainReleases(t *testing.T) {
	for _, batch := range []string{"1", "256"} {
		t.Run("batch="+batch, func(t *testing.T) { testFlockReleaseOvertakes(t, batch) })
	}
}

func testFlockReleaseOvertakes(t *testing.T, batch string) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc, "--release-batch", batch), startMount(t, pc)
	const plain = 3000
	mustWriteFile(t, a.path("plain"), nil)
	fds := make([]int, plain)
	var wg sync.WaitGroup
	const openers = 8
	for w := range openers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < plain; i += openers {
				fd, err := syscall.Open(a.path("plain"), syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
				if err != nil {
					t.Errorf("open %d: %v", i, err)
					return
				}
				fds[i] = fd
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	lockFd := mustOpen(t, a.path("f"), syscall.O_RDWR|syscall.O_CREAT)
	if err := syscall.Flock(lockFd, syscall.LOCK_EX); err != nil {
		t.Fatalf("flock: %v", err)
	}
	q := startLocker(t, "q")
	q.must("open 1 %s", b.path("f"))
	q.send("flock 1 ex")
	q.blocked(pc, "q's flock while the file is locked")

	before := releasesSent(t, a)
	closed := time.Now()
	for _, fd := range fds {
		if err := syscall.Close(fd); err != nil {
			t.Fatalf("close: %v", err)
		}
	}
	if err := syscall.Close(lockFd); err != nil {
		t.Fatal(err)
	}
	r, ok := q.answer(60 * time.Second)
	if !ok || r != "ok" {
		t.Fatalf("q's flock after the holder closed the file: %q (answered: %v)", r, ok)
	}
	sent := releasesSent(t, a) - before
	t.Logf("the flock was granted %v after the closes began, with %v of %d releases sent", time.Since(closed).Round(time.Millisecond), sent, plain+1)
	// The plain ones are all sent in the end.
	mustEventually(t, 120*time.Second, fmt.Sprintf("all %d releases sent", plain+1), func() bool {
		return releasesSent(t, a)-before >= plain+1
	})
	t.Logf("all releases sent %v after the closes began", time.Since(closed).Round(time.Millisecond))
}
