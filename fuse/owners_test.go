package fuse

import (
	"slices"
	"testing"
)

// TestLockOwners plays the kernel's requests for the cases that tell an OFD
// owner from a process owner, and checks which owners a RELEASE drops and
// which may be OFD owners.
func TestLockOwners(t *testing.T) {
	const ino, ino2 = 10, 11
	const (
		proc  = 100 // a process's POSIX owner (its files table)
		ofd1  = 201 // the OFD owner of fh 1
		ofd2  = 202 // the OFD owner of fh 2
		other = 300 // another process's POSIX owner
	)
	lo := newLockOwners()

	// A process locks through fh 1 and fh 2; an OFD owner through fh 3.
	if lo.locking(ino, 1, proc, 7) {
		t.Error("a process's only owner reported as maybe OFD")
	}
	lo.locking(ino, 2, proc, 7)
	lo.locking(ino2, 7, proc, 7)
	if lo.locking(ino, 3, other, 8) {
		t.Error("another process's only owner reported as maybe OFD")
	}
	// Closing a descriptor of fh 1 flushes the process: its locks on ino
	// go, and it is forgotten for every fh of ino.
	if !lo.flushed(ino, proc) {
		t.Fatal("FLUSH of a process that locked: not reported as holding")
	}
	if lo.flushed(ino, proc) {
		t.Fatal("a second FLUSH of the process: reported as holding again")
	}
	if got := releasedNow(lo, ino, 1); len(got) != 0 {
		t.Fatalf("RELEASE of fh 1 after its process flushed: drops %v, want nothing", got)
	}

	// An OFD lock through fh 1 of a process that also has a POSIX owner:
	// both may be OFD owners now.
	lo.locking(ino, 4, proc, 7)
	if !lo.locking(ino, 5, ofd1, 7) {
		t.Error("a second owner of pid 7: not reported as maybe OFD")
	}
	if !lo.locking(ino, 4, proc, 7) {
		t.Error("pid 7's first owner, with a second one present: not reported as maybe OFD")
	}
	// The process closes fh 5's descriptor: FLUSH with the process owner,
	// which leaves the OFD owner of fh 5 alone.
	lo.flushed(ino, proc)
	if got := releasedNow(lo, ino, 5); !slices.Equal(got, []uint64{ofd1}) {
		t.Fatalf("RELEASE of fh 5: drops %v, want [%d]", got, ofd1)
	}
	if lo.locking(ino, 4, proc, 7) {
		t.Error("pid 7's owner once the OFD owner is gone: still maybe OFD")
	}

	// An open file shared by a parent and its child: one owner, two pids.
	lo.locking(ino, 6, ofd2, 7)
	if !lo.locking(ino, 6, ofd2, 9) {
		t.Error("an owner locking for two pids: not reported as maybe OFD")
	}
	// fh 6's last close: its OFD owner goes; other's lock through fh 3 and
	// the process's through fh 4 and on ino2 stay.
	if got := releasedNow(lo, ino, 6); !slices.Equal(got, []uint64{ofd2}) {
		t.Fatalf("RELEASE of fh 6: drops %v, want [%d]", got, ofd2)
	}
	if !lo.flushed(ino, other) || !lo.flushed(ino, proc) || !lo.flushed(ino2, proc) {
		t.Fatal("owners still holding on ino were forgotten")
	}
	if len(lo.keys) != 0 || len(lo.byFh) != 0 || len(lo.byPid) != 0 {
		t.Fatalf("state left after every owner went: %v %v %v", lo.keys, lo.byFh, lo.byPid)
	}
}

// TestReleaserUrgentOvertakes: while every worker's batch of plain
// releases is stuck in flight and more are queued, an urgent release is
// sent at once; the plain ones are all sent, in batches of at most
// plainReleaseBatch, in order of arrival within each batch.
func TestReleaserUrgentOvertakes(t *testing.T) {
	gate := make(chan struct{})
	urgent := make(chan int, 1)
	batches := make(chan []int, 100)
	r := newReleaser(func(n int) { urgent <- n }, func(b []int) {
		<-gate
		batches <- b
	}, 0)
	const plain = 5000
	for i := range plain {
		r.plain(i)
	}
	r.urgent(-1)
	if n := <-urgent; n != -1 {
		t.Fatalf("urgent release sent: %d", n)
	}
	if p := r.pending(); p < plain-plainReleaseWorkers*plainReleaseBatch {
		t.Fatalf("%d plain releases pending while all workers are stuck, want at least %d", p, plain-plainReleaseWorkers*plainReleaseBatch)
	}
	close(gate)
	seen := map[int]bool{}
	for len(seen) < plain {
		b := <-batches
		if len(b) == 0 || len(b) > plainReleaseBatch {
			t.Fatalf("a batch of %d releases", len(b))
		}
		for i, n := range b {
			if seen[n] || (i > 0 && n <= b[i-1]) {
				t.Fatalf("batch %v: release %d repeated or out of order", b, n)
			}
			seen[n] = true
		}
	}
}

// releasedNow is RELEASE of fh on ino, answered at once.
func releasedNow(lo *lockOwners, ino, fh uint64) []uint64 {
	owners, finish := lo.released(ino, fh, 0)
	finish()
	return owners
}

// TestLockOwnerReused: the kernel reuses an OFD owner id (the address of
// its struct file) for a new open file right after a close, before the old
// file's RELEASE arrives. The late RELEASE of the old fh must not drop the
// owner, whose latest lock went through the new fh; the new fh's RELEASE
// does.
func TestLockOwnerReused(t *testing.T) {
	const ino, x = 10, 500
	lo := newLockOwners()
	lo.locking(ino, 1, x, 7) // F_OFD_SETLK through fh 1
	lo.locking(ino, 2, x, 7) // close; open (fh 2, same owner); F_OFD_SETLK
	if got := releasedNow(lo, ino, 1); len(got) != 0 {
		t.Fatalf("late RELEASE of fh 1 drops %v, whose latest lock went through fh 2", got)
	}
	if got := releasedNow(lo, ino, 2); !slices.Equal(got, []uint64{x}) {
		t.Fatalf("RELEASE of fh 2 drops %v, want [%d]", got, x)
	}
	// Without reuse, the owner goes with its fh as before.
	lo.locking(ino, 3, x, 7)
	if got := releasedNow(lo, ino, 3); !slices.Equal(got, []uint64{x}) {
		t.Fatalf("RELEASE of fh 3 drops %v, want [%d]", got, x)
	}
}

// TestLockWaitsForRelease: a lock request of an owner that a release in
// flight names waits until that release was answered, so the release
// cannot overtake it at the cluster and drop what it took. Other owners,
// and the owner once the release is answered, do not wait.
func TestLockWaitsForRelease(t *testing.T) {
	const ino, x, flockOwner, other = 10, 500, 600, 700
	lo := newLockOwners()
	lo.locking(ino, 1, x, 7)
	owners, finish := lo.released(ino, 1, flockOwner)
	if !slices.Equal(owners, []uint64{x}) {
		t.Fatalf("RELEASE of fh 1 drops %v, want [%d]", owners, x)
	}
	// The kernel reuses x for fh 2 and locks through it while the release
	// is on its way.
	lo.locking(ino, 2, x, 7)
	wait := lo.releaseOf(ino, x)
	if wait == nil {
		t.Fatal("a lock of the owner a release in flight names does not wait for it")
	}
	if lo.releaseOf(ino, flockOwner) == nil {
		t.Fatal("a flock of the owner whose flock a release in flight drops does not wait for it")
	}
	if lo.releaseOf(ino, other) != nil || lo.releaseOf(ino+1, x) != nil {
		t.Fatal("a lock no release in flight names waits")
	}
	select {
	case <-wait:
		t.Fatal("the wait ended before the release was answered")
	default:
	}
	finish()
	finish() // a second call changes nothing
	select {
	case <-wait:
	default:
		t.Fatal("the wait did not end when the release was answered")
	}
	if lo.releaseOf(ino, x) != nil {
		t.Fatal("a lock still waits after the release was answered")
	}
	// fh 2's lock is the owner's latest: its own release drops it.
	if got := releasedNow(lo, ino, 2); !slices.Equal(got, []uint64{x}) {
		t.Fatalf("RELEASE of fh 2 drops %v, want [%d]", got, x)
	}
}
