package cluster

import (
	"slices"
	"testing"
)

// TestOpenTableCompleteness: a leader frees no orphan until every live
// session registered before it took office has reported; an open handle
// keeps its inode; a pinned inode makes an open wait; the table forgets
// everything when leadership ends.
func TestOpenTableCompleteness(t *testing.T) {
	o := newOpenTable()
	o.start(100) // sessions 7 and 9 registered before; 150 after
	if got := o.pinUnused([]uint64{7, 9, 150}, []uint64{1, 2}); got != nil {
		t.Fatalf("pinned %v before any report", got)
	}
	o.report(7, map[uint64]uint64{1: 1}, false) // a create in flight: not yet
	if o.hasReported(7) {
		t.Fatal("an incomplete report counts as reported")
	}
	o.report(7, map[uint64]uint64{1: 1}, true) // session 7 has inode 1 open as fh 1
	if got := o.pinUnused([]uint64{7, 9, 150}, []uint64{1, 2}); got != nil {
		t.Fatalf("pinned %v while session 9 has not reported", got)
	}
	if !o.hasReported(150) || o.hasReported(9) {
		t.Fatal("a session registered with this leader must count as reported, one before it not")
	}
	o.dropSession(9) // expired: it counts no more
	got := o.pinUnused([]uint64{7, 150}, []uint64{1, 2})
	if !slices.Equal(got, []uint64{2}) {
		t.Fatalf("pinned %v, want [2] (1 is open)", got)
	}
	if again := o.pinUnused([]uint64{7, 150}, []uint64{2}); again != nil {
		t.Fatalf("pinned %v twice", again)
	}
	wait, ok := o.open(150, 4, 2)
	if !ok || wait == nil {
		t.Fatal("an open of a pinned inode must wait")
	}
	select {
	case <-wait:
		t.Fatal("the wait ended before the unpin")
	default:
	}
	o.unpin(got)
	<-wait
	if ino, last := o.release(150, 4); ino != 2 || !last {
		t.Fatalf("release: %d %v", ino, last)
	}
	if ino, last := o.release(7, 1); ino != 1 || !last {
		t.Fatalf("release of the reported handle: %d %v", ino, last)
	}
	if n := o.openFiles(7); n != 0 {
		t.Fatalf("open files of 7: %d", n)
	}
	o.opened(7, 5, 3)
	o.stop()
	if _, ok := o.open(7, 6, 3); ok {
		t.Fatal("open accepted after stop")
	}
	o.opened(7, 7, 3)
	if n := o.openFiles(7); n != 0 {
		t.Fatalf("open files after stop: %d", n)
	}
}
