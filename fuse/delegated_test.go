package fuse

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

func newTestDeleg(ino, session uint64) *delegIno {
	return &delegIno{ino: ino, session: session, live: true, table: rangelock.NewTable(),
		ofd: map[uint64]bool{}, flockPid: map[uint64]uint32{}}
}

func lkIn(ino, owner, fh uint64, typ uint32, start, end uint64, pid uint32) *fuse.LkIn {
	return &fuse.LkIn{InHeader: fuse.InHeader{NodeId: ino}, Fh: fh, Owner: owner,
		Lk: fuse.FileLock{Start: start, End: end, Typ: typ, Pid: pid}}
}

// TestDelegInoAnswers: the mount's table answers as the cluster's does:
// conflicts are EAGAIN, a blocking request that would wait is not
// answered here, F_GETLK names the holder with its pid, FLUSH and RELEASE
// drop what they free, and the return lists every lock with its flags.
func TestDelegInoAnswers(t *testing.T) {
	e := newTestDeleg(7, 3)
	wr, rd, un := jfspb.LockType_LOCK_TYPE_WRITE, jfspb.LockType_LOCK_TYPE_READ, jfspb.LockType_LOCK_TYPE_UNLOCK
	mustSt := func(what string, st fuse.Status, handled bool, want fuse.Status) {
		t.Helper()
		if !handled || st != want {
			t.Fatalf("%s: %v (handled %v), want %v", what, st, handled, want)
		}
	}
	st, h := e.setLk(lkIn(7, 1, 10, syscall.F_WRLCK, 0, 9, 100), wr, false, false)
	mustSt("owner 1 write 0-9", st, h, fuse.OK)
	st, h = e.setLk(lkIn(7, 2, 11, syscall.F_RDLCK, 5, 5, 200), rd, false, true)
	mustSt("owner 2 read over it", st, h, fuse.EAGAIN)
	if _, h := e.setLk(lkIn(7, 2, 11, syscall.F_RDLCK, 5, 5, 200), rd, true, true); h {
		t.Fatal("a blocking request that must wait was answered locally")
	}
	st, h = e.setLk(lkIn(7, 2, 11, syscall.F_RDLCK, 20, toEOF, 200), rd, true, true)
	mustSt("owner 2 blocking read that need not wait", st, h, fuse.OK)
	var out fuse.LkOut
	if st := e.getLk(lkIn(7, 3, 12, syscall.F_WRLCK, 8, 8, 300), wr, &out); st != fuse.OK ||
		out.Lk.Typ != syscall.F_WRLCK || out.Lk.Start != 0 || out.Lk.End != 9 || out.Lk.Pid != 100 {
		t.Fatalf("getlk: %v %+v", st, out.Lk)
	}
	if st := e.getLk(lkIn(7, 3, 12, syscall.F_WRLCK, 30, toEOF, 300), wr, &out); st != fuse.OK ||
		out.Lk.Typ != syscall.F_RDLCK || out.Lk.End != toEOF || out.Lk.Pid != 200 {
		t.Fatalf("getlk to EOF: %v %+v", st, out.Lk)
	}
	st, h = e.flock(lkIn(7, 0, 10, syscall.F_RDLCK, 0, 0, 100), rd, false)
	mustSt("flock sh", st, h, fuse.OK)
	st, h = e.flock(lkIn(7, 0, 11, syscall.F_WRLCK, 0, 0, 200), wr, false)
	mustSt("flock ex over sh", st, h, fuse.EAGAIN)
	locks := e.locks()
	if len(locks) != 3 || locks[0].Owner != 1 || locks[0].Len != 10 || locks[1].Owner != 2 || !locks[1].MaybeOfd ||
		locks[1].Len != 0 || !locks[2].Flock || locks[2].Owner != 10 || locks[2].Pid != 100 {
		t.Fatalf("locks for the return: %v", locks)
	}
	e.releaseOwner(1)
	e.release(10, true, []uint64{2})
	if l := e.locks(); len(l) != 0 {
		t.Fatalf("after FLUSH and RELEASE: %v", l)
	}
	st, h = e.setLk(lkIn(7, 1, 10, syscall.F_UNLCK, 0, toEOF, 100), un, false, false)
	mustSt("unlock of nothing", st, h, fuse.OK)
}
