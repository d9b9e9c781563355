package rangelock

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// own is owner n of session 1, the owner most tests use.
func own(n uint64) Owner { return Owner{Session: 1, ID: n} }

// pidOf is the pid the tests give owner o: every owner has one fixed pid.
func pidOf(o Owner) uint32 { return uint32(1000*o.Session + o.ID) }

// mustRange is NewRange that fails the test on error.
func mustRange(t testing.TB, start, length int64) Range {
	t.Helper()
	r, err := NewRange(start, length)
	if err != nil {
		t.Fatalf("NewRange(%d, %d): %v", start, length, err)
	}
	return r
}

// mustSet is Table.Set that fails the test on error; it returns the
// conflicting owners.
func mustSet(t testing.TB, tb *Table, ino uint64, o Owner, typ Type, r Range) []Owner {
	t.Helper()
	c, err := tb.Set(ino, o, typ, r, pidOf(o))
	if err != nil {
		t.Fatalf("Set(%d, %v, %v, %v): %v", ino, o, typ, r, err)
	}
	return c
}

// mustGrant is Table.Set that fails the test unless the lock is granted.
func mustGrant(t testing.TB, tb *Table, ino uint64, o Owner, typ Type, r Range) {
	t.Helper()
	if c := mustSet(t, tb, ino, o, typ, r); len(c) != 0 {
		t.Fatalf("Set(%d, %v, %v, %v) conflicts with %v, want granted", ino, o, typ, r, c)
	}
}

// mustTest is Table.Test that fails the test on error.
func mustTest(t testing.TB, tb *Table, ino uint64, o Owner, typ Type, r Range) (Lock, bool) {
	t.Helper()
	l, found, err := tb.Test(ino, o, typ, r)
	if err != nil {
		t.Fatalf("Test(%d, %v, %v, %v): %v", ino, o, typ, r, err)
	}
	return l, found
}

// mustFlock is Table.Flock that fails the test on error.
func mustFlock(t testing.TB, tb *Table, ino uint64, o Owner, typ Type) []Owner {
	t.Helper()
	c, err := tb.Flock(ino, o, typ)
	if err != nil {
		t.Fatalf("Flock(%d, %v, %v): %v", ino, o, typ, err)
	}
	return c
}

// mustAdd is Graph.Add that fails the test on error.
func mustAdd(t testing.TB, g *Graph, id uint64, waiter Owner, blockers ...Owner) {
	t.Helper()
	if err := g.Add(id, waiter, blockers); err != nil {
		t.Fatalf("Add(%d, %v, %v): %v", id, waiter, blockers, err)
	}
}

// shortLock is a lock as the table tests write it: "owner type [start, end]",
// with the owner's id only (every test owner is in session 1).
func shortLock(l Lock) string {
	return fmt.Sprintf("%d %s %s", l.Owner.ID, l.Type, l.Range)
}

func shortLocks(ls []Lock) string {
	s := make([]string, len(ls))
	for i, l := range ls {
		s[i] = shortLock(l)
	}
	return strings.Join(s, "; ")
}

func ownerIDs(os []Owner) []uint64 {
	out := make([]uint64, 0, len(os))
	for _, o := range os {
		out = append(out, o.ID)
	}
	return out
}

func sameIDs(got []Owner, want []uint64) bool {
	return slices.Equal(ownerIDs(got), want)
}
