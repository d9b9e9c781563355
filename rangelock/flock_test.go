package rangelock

import (
	"fmt"
	"slices"
	"strings"
	"testing"
)

// fstep is one flock(2) call by open file description o (an owner), with the
// owners it must conflict with.
type fstep struct {
	o         uint64
	typ       Type
	conflicts []uint64
}

func fl(o uint64, typ Type, conflicts ...uint64) fstep { return fstep{o, typ, conflicts} }

// shortFlocks writes flocks as "owner type; ...", the owner by its id.
func shortFlocks(fs []Flock) string {
	s := make([]string, len(fs))
	for i, f := range fs {
		s[i] = fmt.Sprintf("%d %s", f.Owner.ID, f.Type)
	}
	return strings.Join(s, "; ")
}

func TestFlock(t *testing.T) {
	tests := []struct {
		name  string
		steps []fstep
		want  string // Flocks(ino) by owner
	}{
		// flock(2): "LOCK_SH Place a shared lock. More than one process may hold
		// a shared lock for a given file at a given time."
		{"shared and shared", []fstep{fl(1, Read), fl(2, Read), fl(3, Read)}, "1 read; 2 read; 3 read"},
		// flock(2): "LOCK_EX Place an exclusive lock. Only one process may hold
		// an exclusive lock for a given file at a given time." and "A call to
		// flock() may block if an incompatible lock is held by another process."
		{"exclusive excludes exclusive", []fstep{fl(1, Write), fl(2, Write, 1)}, "1 write"},
		{"exclusive excludes shared", []fstep{fl(1, Write), fl(2, Read, 1)}, "1 write"},
		{"shared excludes exclusive, all holders named", []fstep{fl(3, Read), fl(1, Read), fl(2, Write, 1, 3)}, "1 read; 3 read"},
		// flock(2): "If a process uses open(2) (or similar) to obtain more than
		// one descriptor for the same file, these descriptors are treated
		// independently by flock()." Owners 1 and 2 may be one process.
		{"another open file description conflicts", []fstep{fl(1, Read), fl(2, Write, 1)}, "1 read"},
		// flock(2): "A process may hold only one type of lock (shared or
		// exclusive) on a file. Subsequent flock() calls on an already locked
		// file will convert an existing lock to the new lock mode."
		{"re-request shared is a no-op", []fstep{fl(1, Read), fl(1, Read), fl(2, Read)}, "1 read; 2 read"},
		{"re-request exclusive is a no-op", []fstep{fl(1, Write), fl(1, Write), fl(2, Read, 1)}, "1 write"},
		{"upgrade alone", []fstep{fl(1, Read), fl(1, Write)}, "1 write"},
		{"downgrade", []fstep{fl(1, Write), fl(1, Read), fl(2, Read)}, "1 read; 2 read"},
		// flock(2): "Converting a lock (shared to exclusive, or vice versa) is
		// not guaranteed to be atomic: the existing lock is first removed, and
		// then a new lock is established. Between these two steps, a pending
		// lock request by another process may be granted, with the result that
		// the conversion either blocks, or fails if LOCK_NB was specified."
		// Linux's flock_lock_inode deletes the old lock before it looks for
		// conflicts, so a refused conversion has dropped it.
		{"refused upgrade drops the shared lock", []fstep{fl(1, Read), fl(2, Read), fl(1, Write, 2), fl(3, Write, 2)}, "2 read"},
		{"after the refused upgrade another may take it", []fstep{fl(1, Read), fl(2, Read), fl(1, Write, 2), fl(2, Write)}, "2 write"},
		// flock(2): "LOCK_UN Remove an existing lock held by this process."
		{"unlock", []fstep{fl(1, Write), fl(1, Unlock), fl(2, Write)}, "2 write"},
		{"unlock of nothing", []fstep{fl(1, Unlock), fl(2, Read), fl(1, Unlock)}, "2 read"},
		{"unlock one of two readers", []fstep{fl(1, Read), fl(2, Read), fl(2, Unlock), fl(1, Write)}, "1 write"},
		{"unlock all", []fstep{fl(1, Read), fl(2, Read), fl(2, Unlock), fl(1, Unlock)}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTable()
			for i, s := range tt.steps {
				pre, err := tb.FlockConflicts(1, own(s.o), s.typ)
				if err != nil {
					t.Fatalf("step %d: FlockConflicts: %v", i, err)
				}
				got := mustFlock(t, tb, 1, own(s.o), s.typ)
				if !sameIDs(got, s.conflicts) {
					t.Fatalf("step %d: %d flock %v: conflicts %v, want %v", i, s.o, s.typ, ownerIDs(got), s.conflicts)
				}
				if !slices.Equal(pre, got) {
					t.Fatalf("step %d: FlockConflicts said %v, Flock said %v", i, pre, got)
				}
			}
			if got := shortFlocks(tb.Flocks(1)); got != tt.want {
				t.Errorf("flocks %q, want %q", got, tt.want)
			}
			if tt.want == "" && len(tb.Inodes()) != 0 {
				t.Errorf("Inodes() = %v after every lock went, want none", tb.Inodes())
			}
		})
	}
}

// TestFlockAndPosixApart: flock(2) "Since kernel 2.0, flock() is implemented
// as a system call in its own right rather than being emulated in the GNU C
// library as a call to fcntl(2). With this implementation, there is no
// interaction between the types of lock placed by flock() and fcntl(2)".
func TestFlockAndPosixApart(t *testing.T) {
	tb := NewTable()
	mustFlock(t, tb, 1, own(1), Write)
	mustGrant(t, tb, 1, own(2), Write, Whole)
	if c := mustFlock(t, tb, 1, own(3), Read); !sameIDs(c, []uint64{1}) {
		t.Fatalf("flock conflicts %v, want [1]", ownerIDs(c))
	}
	if l, found := mustTest(t, tb, 1, own(3), Read, Whole); !found || l.Owner != own(2) {
		t.Fatalf("F_GETLK = %v %v, want owner 2's lock", l, found)
	}
	mustSet(t, tb, 1, own(2), Unlock, Whole)
	if got := tb.Flocks(1); len(got) != 1 {
		t.Fatalf("the flock went with the POSIX unlock: %v", got)
	}
	mustFlock(t, tb, 1, own(1), Unlock)
	if got := tb.Inodes(); len(got) != 0 {
		t.Fatalf("Inodes() = %v, want none", got)
	}
}
