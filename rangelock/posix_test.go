package rangelock

import (
	"errors"
	"math"
	"slices"
	"testing"
)

// pstep is one call in a POSIX table test: F_SETLK, F_GETLK or a release.
type pstep struct {
	op            byte // 's' Set, 'g' Test, 'r' ReleasePosix
	o             uint64
	typ           Type
	start, length int64 // fcntl's l_start (l_whence SEEK_SET) and l_len
	conflicts     []uint64
	found         string // Test: the lock as shortLock writes it, "" for F_UNLCK
}

func set(o uint64, typ Type, start, length int64, conflicts ...uint64) pstep {
	return pstep{op: 's', o: o, typ: typ, start: start, length: length, conflicts: conflicts}
}

func get(o uint64, typ Type, start, length int64, found string) pstep {
	return pstep{op: 'g', o: o, typ: typ, start: start, length: length, found: found}
}

func release(o uint64) pstep { return pstep{op: 'r', o: o} }

// mustRun plays steps on tb's inode 1 and checks every answer.
func mustRun(t *testing.T, tb *Table, steps []pstep) {
	t.Helper()
	const ino = 1
	for i, s := range steps {
		o := own(s.o)
		switch s.op {
		case 's':
			r := mustRange(t, s.start, s.length)
			before := tb.Locks(ino)
			pre, err := tb.Conflicts(ino, o, s.typ, r)
			if err != nil {
				t.Fatalf("step %d: Conflicts: %v", i, err)
			}
			got := mustSet(t, tb, ino, o, s.typ, r)
			if !sameIDs(got, s.conflicts) {
				t.Fatalf("step %d: %d sets %v over %v: conflicts %v, want %v", i, s.o, s.typ, r, ownerIDs(got), s.conflicts)
			}
			if !slices.Equal(pre, got) {
				t.Fatalf("step %d: Conflicts said %v, Set said %v", i, pre, got)
			}
			if len(got) > 0 && !slices.Equal(before, tb.Locks(ino)) {
				t.Fatalf("step %d: a refused Set changed the locks:\n%s\n->\n%s", i, shortLocks(before), shortLocks(tb.Locks(ino)))
			}
		case 'g':
			r := mustRange(t, s.start, s.length)
			l, found := mustTest(t, tb, ino, o, s.typ, r)
			got := ""
			if found {
				got = shortLock(l)
				if l.Pid != pidOf(l.Owner) {
					t.Fatalf("step %d: F_GETLK reports pid %d for %v, want %d", i, l.Pid, l.Owner, pidOf(l.Owner))
				}
			}
			if got != s.found {
				t.Fatalf("step %d: %d tests %v over %v: got %q, want %q", i, s.o, s.typ, r, got, s.found)
			}
		case 'r':
			tb.ReleasePosix(ino, o)
		}
	}
}

func TestPosix(t *testing.T) {
	const eof = 0 // l_len 0: to the end of file
	tests := []struct {
		name  string
		steps []pstep
		want  string // Locks(ino) in list order
	}{
		// fcntl(2): "A single process can hold only one type of lock on a file
		// region; if a new lock is applied to an already-locked region, then the
		// existing lock is converted to the new lock type. (Such conversions may
		// involve splitting, shrinking, or coalescing with an existing lock if the
		// byte range specified by the new lock does not precisely coincide with
		// the range of the existing lock.)" The cases up to "unlock to EOF" check
		// this sentence: coalescing, splitting, shrinking.
		{"same type overlapping merges", []pstep{set(1, Read, 0, 10), set(1, Read, 5, 10)}, "1 read [0, 14]"},
		{"same type touching on the right merges", []pstep{set(1, Write, 0, 5), set(1, Write, 5, 5)}, "1 write [0, 9]"},
		{"same type touching on the left merges", []pstep{set(1, Write, 5, 5), set(1, Write, 0, 5)}, "1 write [0, 9]"},
		{"same type with a gap stays apart", []pstep{set(1, Read, 0, 5), set(1, Read, 6, 4)}, "1 read [0, 4]; 1 read [6, 9]"},
		{"a lock bridging two merges all three", []pstep{set(1, Read, 0, 5), set(1, Read, 10, 5), set(1, Read, 5, 5)}, "1 read [0, 14]"},
		{"same type inside is a no-op", []pstep{set(1, Read, 0, 20), set(1, Read, 5, 5)}, "1 read [0, 19]"},
		{"same type touching EOF lock merges", []pstep{set(1, Write, 10, eof), set(1, Write, 0, 10)}, "1 write [0, EOF]"},
		{"other type in the middle splits", []pstep{set(1, Read, 0, 30), set(1, Write, 10, 10)}, "1 read [0, 9]; 1 write [10, 19]; 1 read [20, 29]"},
		{"other type over the start shrinks", []pstep{set(1, Read, 10, 10), set(1, Write, 5, 10)}, "1 write [5, 14]; 1 read [15, 19]"},
		{"other type over the end shrinks", []pstep{set(1, Read, 10, 10), set(1, Write, 15, 10)}, "1 read [10, 14]; 1 write [15, 24]"},
		{"other type touching does not merge", []pstep{set(1, Read, 0, 10), set(1, Write, 10, 10)}, "1 read [0, 9]; 1 write [10, 19]"},
		{"other type covering whole replaces and merges", []pstep{set(1, Write, 0, 5), set(1, Read, 5, 5), set(1, Write, 10, 5), set(1, Write, 5, 5)}, "1 write [0, 14]"},
		{"other type over several locks", []pstep{set(1, Read, 0, 4), set(1, Write, 4, 4), set(1, Read, 8, 4), set(1, Write, 2, 8)}, "1 read [0, 1]; 1 write [2, 9]; 1 read [10, 11]"},
		{"downgrade a whole-file lock", []pstep{set(1, Write, 0, eof), set(1, Read, 0, eof)}, "1 read [0, EOF]"},
		{"unlock the middle splits", []pstep{set(1, Write, 0, 30), set(1, Unlock, 10, 10)}, "1 write [0, 9]; 1 write [20, 29]"},
		{"unlock the start shrinks", []pstep{set(1, Write, 0, 30), set(1, Unlock, 0, 10)}, "1 write [10, 29]"},
		{"unlock across locks of both types", []pstep{set(1, Read, 0, 10), set(1, Write, 10, 10), set(1, Unlock, 5, 10)}, "1 read [0, 4]; 1 write [15, 19]"},
		{"unlock to EOF", []pstep{set(1, Read, 0, eof), set(1, Unlock, 100, eof)}, "1 read [0, 99]"},
		{"unlock all", []pstep{set(1, Read, 0, 10), set(1, Write, 20, 10), set(1, Unlock, 0, eof)}, ""},
		// fcntl(2): "As well as being removed by an explicit F_UNLCK ..." An
		// unlock of bytes the owner does not hold is not an error.
		{"unlock of nothing", []pstep{set(1, Unlock, 0, 10), set(2, Read, 0, 10), set(1, Unlock, 0, eof)}, "2 read [0, 9]"},

		// fcntl(2): "Any number of processes may hold a read lock (shared lock)
		// on a file region, but only one process may hold a write lock (exclusive
		// lock). An exclusive lock excludes all other locks, both shared and
		// exclusive."
		{"two readers share", []pstep{set(1, Read, 0, 10), set(2, Read, 5, 10)}, "1 read [0, 9]; 2 read [5, 14]"},
		{"writer excluded by readers", []pstep{set(1, Read, 0, 10), set(2, Read, 5, 10), set(3, Write, 0, eof, 1, 2), set(3, Write, 12, 1, 2)},
			"1 read [0, 9]; 2 read [5, 14]"},
		{"reader excluded by writer", []pstep{set(1, Write, 0, 10), set(2, Read, 9, 2, 1), set(2, Read, 10, 10)}, "1 write [0, 9]; 2 read [10, 19]"},
		{"writers excluded where they overlap only", []pstep{set(1, Write, 0, 10), set(2, Write, 10, 10), set(3, Write, 5, 10, 1, 2), set(3, Write, 20, 1)},
			"1 write [0, 9]; 2 write [10, 19]; 3 write [20, 20]"},
		// fcntl(2): "If a conflicting lock is held by another process, this call
		// returns -1 and sets errno to EACCES or EAGAIN." Nothing changes, and the
		// owners come in list order: owner 2 locked first.
		{"conflicting owners in list order", []pstep{set(2, Read, 50, 1), set(1, Read, 0, 1), set(3, Read, 20, 1), set(4, Write, 0, eof, 2, 1, 3)},
			"2 read [50, 50]; 1 read [0, 0]; 3 read [20, 20]"},
		{"refused conversion changes nothing", []pstep{set(1, Read, 0, 10), set(2, Read, 5, 1), set(1, Write, 0, 10, 2)}, "1 read [0, 9]; 2 read [5, 5]"},
		// fcntl(2): "A single process can hold only one type of lock on a file
		// region" — its own locks never stand in its way: upgrade in place.
		{"upgrade in place", []pstep{set(1, Read, 0, 10), set(1, Write, 0, 10)}, "1 write [0, 9]"},
		{"upgrade next to another reader", []pstep{set(1, Read, 0, 10), set(2, Read, 10, 10), set(1, Write, 0, 10)}, "1 write [0, 9]; 2 read [10, 19]"},
		{"owner over its own write lock", []pstep{set(1, Write, 0, eof), set(1, Write, 5, 5), set(1, Read, 7, 1)}, "1 write [0, 6]; 1 read [7, 7]; 1 write [8, EOF]"},

		// fcntl(2): "Specifying 0 for l_len has the special meaning: lock all
		// bytes starting at the location specified by l_whence and l_start
		// through to the end of file, no matter how large the file grows."
		{"len 0 reaches every offset", []pstep{set(1, Write, 100, eof), set(2, Read, 1<<40, 1, 1), set(2, Read, math.MaxInt64, 1, 1), set(2, Read, 0, 100)},
			"1 write [100, EOF]; 2 read [0, 99]"},
		// fcntl(2): "if l_len is negative, the interval described by lock covers
		// bytes l_start+l_len up to and including l_start-1."
		{"negative len", []pstep{set(1, Write, 10, -5), set(2, Read, 10, -1, 1), set(2, Read, 10, 1), get(2, Read, 6, -1, "1 write [5, 9]")},
			"1 write [5, 9]; 2 read [10, 10]"},

		// fcntl(2): "If the lock could be placed, fcntl() does not actually place
		// it, but returns F_UNLCK in the l_type field of lock ... If one or more
		// incompatible locks would prevent this lock being placed, then fcntl()
		// returns details about one of those locks". Linux returns the first one
		// in its list: owners in the order they took their first lock, each
		// owner's locks by start.
		{"F_GETLK none", []pstep{set(1, Read, 0, 10), get(2, Read, 0, eof, ""), get(2, Write, 10, eof, ""), get(1, Write, 0, eof, "")}, "1 read [0, 9]"},
		{"F_GETLK first owner group wins", []pstep{set(1, Read, 50, 10), set(2, Write, 0, 10), get(3, Write, 0, eof, "1 read [50, 59]"), get(3, Read, 0, eof, "2 write [0, 9]")},
			"1 read [50, 59]; 2 write [0, 9]"},
		{"F_GETLK by start within a group", []pstep{set(1, Read, 50, 10), set(1, Read, 0, 10), set(1, Read, 30, 10), get(2, Write, 20, eof, "1 read [30, 39]"), get(2, Write, 0, eof, "1 read [0, 9]")},
			"1 read [0, 9]; 1 read [30, 39]; 1 read [50, 59]"},
		{"F_GETLK after release the owner goes last", []pstep{set(1, Read, 0, 5), set(2, Read, 10, 5), release(1), set(1, Read, 20, 5), get(3, Write, 0, eof, "2 read [10, 14]")},
			"2 read [10, 14]; 1 read [20, 24]"},
		{"F_GETLK after unlock of all the owner goes last", []pstep{set(1, Read, 0, 5), set(2, Read, 10, 5), set(1, Unlock, 0, eof), set(1, Read, 0, 5), get(3, Write, 0, eof, "2 read [10, 14]")},
			"2 read [10, 14]; 1 read [0, 4]"},
		{"F_GETLK the group keeps its place while it holds a lock", []pstep{set(1, Read, 0, 5), set(2, Read, 10, 5), set(1, Read, 30, 5), set(1, Unlock, 0, 5), get(3, Write, 0, eof, "1 read [30, 34]")},
			"1 read [30, 34]; 2 read [10, 14]"},
		{"F_GETLK skips compatible locks", []pstep{set(1, Read, 0, 10), set(2, Write, 20, 10), get(3, Read, 0, eof, "2 write [20, 29]")}, "1 read [0, 9]; 2 write [20, 29]"},

		// fcntl(2): "If a process closes any file descriptor referring to a file,
		// then all of the process's locks on that file are released".
		{"ReleasePosix drops only that owner", []pstep{set(1, Read, 0, 10), set(1, Write, 20, 10), set(2, Read, 0, 10), release(1), set(3, Write, 20, 10)},
			"2 read [0, 9]; 3 write [20, 29]"},
		{"ReleasePosix of nothing", []pstep{set(2, Read, 0, 10), release(1)}, "2 read [0, 9]"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTable()
			mustRun(t, tb, tt.steps)
			if got := shortLocks(tb.Locks(1)); got != tt.want {
				t.Errorf("locks:\n got %s\nwant %s", got, tt.want)
			}
			if tt.want == "" && len(tb.Inodes()) != 0 {
				t.Errorf("Inodes() = %v after every lock went, want none", tb.Inodes())
			}
		})
	}
}

// TestPosixPid checks which pid F_GETLK reports once locks merge: the pid
// rides with the lock structure the kernel keeps (posix_lock_inode reuses the
// first lock it merges with, or a copy of the request).
func TestPosixPid(t *testing.T) {
	tests := []struct {
		name string
		sets []struct {
			typ           Type
			start, length int64
			pid           uint32
		}
		want []uint32 // pid of each lock in list order
	}{
		{"merge keeps the old lock's pid", []struct {
			typ           Type
			start, length int64
			pid           uint32
		}{{Read, 0, 10, 1}, {Read, 5, 10, 2}}, []uint32{1}},
		{"new lock carries the request's pid", []struct {
			typ           Type
			start, length int64
			pid           uint32
		}{{Read, 0, 10, 1}, {Write, 20, 10, 2}}, []uint32{1, 2}},
		{"split pieces keep the old pid", []struct {
			typ           Type
			start, length int64
			pid           uint32
		}{{Read, 0, 30, 1}, {Write, 10, 10, 2}}, []uint32{1, 2, 1}},
		{"covering a lock first takes the request's pid", []struct {
			typ           Type
			start, length int64
			pid           uint32
		}{{Write, 0, 5, 1}, {Read, 5, 5, 2}, {Write, 10, 5, 3}, {Write, 5, 5, 4}}, []uint32{1}},
		{"covered lock before a same-type one", []struct {
			typ           Type
			start, length int64
			pid           uint32
		}{{Read, 0, 5, 1}, {Write, 5, 5, 2}, {Write, 0, 5, 3}}, []uint32{3}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tb := NewTable()
			for _, s := range tt.sets {
				if c, err := tb.Set(1, own(1), s.typ, mustRange(t, s.start, s.length), s.pid); err != nil || c != nil {
					t.Fatalf("Set: %v %v", c, err)
				}
			}
			var got []uint32
			for _, l := range tb.Locks(1) {
				got = append(got, l.Pid)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("pids %v, want %v (locks %s)", got, tt.want, shortLocks(tb.Locks(1)))
			}
		})
	}
}

// newRangeTests are fcntl's (l_start, l_len) pairs with the range or error
// the kernel's flock64_to_posix_lock makes of them. TestNewRangeAgainstKernel
// checks the same table against fcntl itself.
var newRangeTests = []struct {
	start, length int64
	want          Range
	err           error
}{
	// fcntl(2): "Specifying 0 for l_len has the special meaning: lock all
	// bytes starting at the location specified by l_whence and l_start
	// through to the end of file, no matter how large the file grows."
	{0, 0, Range{0, math.MaxInt64}, nil},
	{100, 0, Range{100, math.MaxInt64}, nil},
	{math.MaxInt64, 0, Range{math.MaxInt64, math.MaxInt64}, nil},
	{0, 1, Range{0, 0}, nil},
	{10, 5, Range{10, 14}, nil},
	{0, math.MaxInt64, Range{0, math.MaxInt64 - 1}, nil},
	{1, math.MaxInt64, Range{1, math.MaxInt64}, nil},
	{math.MaxInt64, 1, Range{math.MaxInt64, math.MaxInt64}, nil},
	// fcntl(2): "if l_len is negative, the interval described by lock covers
	// bytes l_start+l_len up to and including l_start-1."
	{10, -5, Range{5, 9}, nil},
	{10, -10, Range{0, 9}, nil},
	{1, -1, Range{0, 0}, nil},
	{math.MaxInt64, -math.MaxInt64, Range{0, math.MaxInt64 - 1}, nil},
	// POSIX fcntl: "[EINVAL] The cmd argument is F_GETLK, F_SETLK, or
	// F_SETLKW and the data pointed to by arg is not valid". Linux: a start,
	// after a negative length, below zero.
	{-1, 1, Range{}, ErrInvalid},
	{-1, 0, Range{}, ErrInvalid},
	{math.MinInt64, 5, Range{}, ErrInvalid},
	{10, -11, Range{}, ErrInvalid},
	{0, -1, Range{}, ErrInvalid},
	{0, math.MinInt64, Range{}, ErrInvalid},
	{math.MaxInt64, math.MinInt64, Range{}, ErrInvalid},
	// POSIX fcntl: "[EOVERFLOW] ... the smallest or, if l_len is non-zero,
	// the largest offset of any byte in the requested segment cannot be
	// represented correctly in an object of type off_t."
	{math.MaxInt64, 2, Range{}, ErrOverflow},
	{2, math.MaxInt64, Range{}, ErrOverflow},
	{math.MaxInt64, math.MaxInt64, Range{}, ErrOverflow},
	{math.MaxInt64 / 2, math.MaxInt64/2 + 3, Range{}, ErrOverflow},
}

func TestNewRange(t *testing.T) {
	for _, tt := range newRangeTests {
		got, err := NewRange(tt.start, tt.length)
		if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
			t.Errorf("NewRange(%d, %d) error %v, want %v", tt.start, tt.length, err, tt.err)
			continue
		}
		if got != tt.want {
			t.Errorf("NewRange(%d, %d) = %v, want %v", tt.start, tt.length, got, tt.want)
		}
		if err == nil {
			if verr := got.Validate(); verr != nil {
				t.Errorf("NewRange(%d, %d) = %v does not validate: %v", tt.start, tt.length, got, verr)
			}
			if l := got.Len(); tt.length >= 0 && l != tt.length && got.End != MaxOffset {
				t.Errorf("NewRange(%d, %d).Len() = %d", tt.start, tt.length, l)
			}
		}
	}
}

func TestRangeValidate(t *testing.T) {
	tests := []struct {
		r   Range
		err error
	}{
		{Range{0, 0}, nil},
		{Range{0, MaxOffset}, nil},
		{Whole, nil},
		{Range{MaxOffset, MaxOffset}, nil},
		{Range{5, 4}, ErrInvalid},
		{Range{-1, 4}, ErrInvalid},
		{Range{-5, -1}, ErrInvalid},
		{Range{math.MinInt64, MaxOffset}, ErrInvalid},
		{Range{MaxOffset, 0}, ErrInvalid},
	}
	for _, tt := range tests {
		err := tt.r.Validate()
		if !errors.Is(err, tt.err) || (tt.err == nil && err != nil) {
			t.Errorf("%v.Validate() = %v, want %v", tt.r, err, tt.err)
		}
	}
}

// TestBadInput: every bad argument is an error wrapping the documented
// value, never a panic, and changes nothing.
func TestBadInput(t *testing.T) {
	tb := NewTable()
	mustGrant(t, tb, 1, own(1), Write, Range{0, 9})
	mustFlock(t, tb, 1, own(1), Read)
	bad := Range{5, 4}
	tests := []struct {
		name string
		call func() error
		want error
	}{
		{"Set unknown type", func() error { _, err := tb.Set(1, own(2), Type(3), Range{0, 1}, 1); return err }, ErrBadType},
		{"Set type 255", func() error { _, err := tb.Set(1, own(2), Type(255), Range{0, 1}, 1); return err }, ErrBadType},
		{"Set start after end", func() error { _, err := tb.Set(1, own(2), Read, bad, 1); return err }, ErrInvalid},
		{"Set negative start", func() error { _, err := tb.Set(1, own(2), Unlock, Range{-1, 3}, 1); return err }, ErrInvalid},
		{"Set on a new inode", func() error { _, err := tb.Set(2, own(2), Write, Range{-3, -1}, 1); return err }, ErrInvalid},
		// fcntl(2) F_GETLK: "lock describes a lock we would like to place on the
		// file"; F_UNLCK is not one (the kernel answers EINVAL).
		{"Test with Unlock", func() error { _, _, err := tb.Test(1, own(2), Unlock, Range{0, 1}); return err }, ErrInvalid},
		{"Test with Unlock on a new inode", func() error { _, _, err := tb.Test(2, own(2), Unlock, Range{0, 1}); return err }, ErrInvalid},
		{"Test unknown type", func() error { _, _, err := tb.Test(1, own(2), Type(9), Range{0, 1}); return err }, ErrBadType},
		{"Test bad range", func() error { _, _, err := tb.Test(1, own(2), Read, bad); return err }, ErrInvalid},
		{"Conflicts unknown type", func() error { _, err := tb.Conflicts(1, own(2), Type(3), Range{0, 1}); return err }, ErrBadType},
		{"Conflicts bad range", func() error { _, err := tb.Conflicts(1, own(2), Write, bad); return err }, ErrInvalid},
		// flock(2): "EINVAL operation is invalid."
		{"Flock unknown type", func() error { _, err := tb.Flock(1, own(2), Type(3)); return err }, ErrBadType},
		{"Flock unknown type by the holder", func() error { _, err := tb.Flock(1, own(1), Type(4)); return err }, ErrBadType},
		{"FlockConflicts unknown type", func() error { _, err := tb.FlockConflicts(1, own(2), Type(3)); return err }, ErrBadType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if err := tt.call(); !errors.Is(err, tt.want) {
				t.Fatalf("error %v, want %v", err, tt.want)
			}
			if got := shortLocks(tb.Locks(1)); got != "1 write [0, 9]" {
				t.Fatalf("locks changed to %s", got)
			}
			if got := tb.Flocks(1); len(got) != 1 || got[0] != (Flock{own(1), Read}) {
				t.Fatalf("flocks changed to %v", got)
			}
			if got := tb.Inodes(); !slices.Equal(got, []uint64{1}) {
				t.Fatalf("Inodes() = %v", got)
			}
		})
	}
}

func TestTypeString(t *testing.T) {
	for typ, want := range map[Type]string{Unlock: "unlock", Read: "read", Write: "write", Type(7): "type(7)"} {
		if got := typ.String(); got != want {
			t.Errorf("Type(%d).String() = %q, want %q", uint8(typ), got, want)
		}
		if typ.Valid() != (typ <= Write) {
			t.Errorf("Type(%d).Valid() = %v", uint8(typ), typ.Valid())
		}
	}
}

func TestReleasePosix(t *testing.T) {
	tb := NewTable()
	mustGrant(t, tb, 1, own(1), Read, Range{0, 9})
	mustGrant(t, tb, 1, own(1), Write, Range{20, 29})
	mustGrant(t, tb, 2, own(1), Write, Range{0, 9})
	mustGrant(t, tb, 1, own(2), Read, Range{0, 9})
	tests := []struct {
		ino   uint64
		o     Owner
		want  bool
		locks string // Locks(1) afterwards
	}{
		{1, own(3), false, "1 read [0, 9]; 1 write [20, 29]; 2 read [0, 9]"},
		{3, own(1), false, "1 read [0, 9]; 1 write [20, 29]; 2 read [0, 9]"},
		{1, own(1), true, "2 read [0, 9]"},
		{1, own(1), false, "2 read [0, 9]"},
		{1, own(2), true, ""},
	}
	for i, tt := range tests {
		if got := tb.ReleasePosix(tt.ino, tt.o); got != tt.want {
			t.Errorf("%d: ReleasePosix(%d, %v) = %v, want %v", i, tt.ino, tt.o, got, tt.want)
		}
		if got := shortLocks(tb.Locks(1)); got != tt.locks {
			t.Errorf("%d: locks %s, want %s", i, got, tt.locks)
		}
	}
	if got := shortLocks(tb.Locks(2)); got != "1 write [0, 9]" {
		t.Errorf("inode 2 locks %s, want its own lock untouched", got)
	}
	if got := tb.Inodes(); !slices.Equal(got, []uint64{2}) {
		t.Errorf("Inodes() = %v, want [2]", got)
	}
}

func TestReleaseSession(t *testing.T) {
	a1, a2 := Owner{1, 1}, Owner{1, 2}  // session 1: two processes
	b1, b2 := Owner{2, 1}, Owner{2, 77} // session 2
	tb := NewTable()
	mustGrant(t, tb, 7, a1, Read, Range{0, 9})
	mustGrant(t, tb, 3, a1, Write, Range{0, 9})
	mustGrant(t, tb, 3, a2, Write, Range{10, 19})
	mustGrant(t, tb, 3, b1, Read, Range{20, 29})
	mustGrant(t, tb, 9, b1, Write, Range{0, 99})
	mustFlock(t, tb, 5, a2, Write) // a flock only
	mustFlock(t, tb, 3, b2, Read)
	mustFlock(t, tb, 3, a1, Read)
	// Session 1 let go of inode 11 before it expired: not reported.
	mustGrant(t, tb, 11, a1, Read, Range{0, 0})
	mustSet(t, tb, 11, a1, Unlock, Whole)
	mustFlock(t, tb, 12, a2, Read)
	mustFlock(t, tb, 12, a2, Unlock)
	// An owner with the same id in another session is another owner.
	mustGrant(t, tb, 9, Owner{3, 1}, Read, Range{100, 100})
	if c := mustSet(t, tb, 9, Owner{3, 1}, Read, Range{0, 0}); !slices.Equal(c, []Owner{b1}) {
		t.Fatalf("conflicts %v, want %v", c, b1)
	}

	if got, want := tb.ReleaseSession(1), []uint64{3, 5, 7}; !slices.Equal(got, want) {
		t.Fatalf("ReleaseSession(1) = %v, want %v", got, want)
	}
	if got := tb.Inodes(); !slices.Equal(got, []uint64{3, 9}) {
		t.Errorf("Inodes() = %v, want [3 9]", got)
	}
	want := []Lock{{Owner: b1, Type: Read, Range: Range{20, 29}, Pid: pidOf(b1)}}
	if got := tb.Locks(3); !slices.Equal(got, want) {
		t.Errorf("Locks(3) = %v, want %v", got, want)
	}
	if got := tb.Flocks(3); !slices.Equal(got, []Flock{{b2, Read}}) {
		t.Errorf("Flocks(3) = %v", got)
	}
	if got := tb.Locks(7); got != nil {
		t.Errorf("Locks(7) = %v", got)
	}
	if got := tb.Flocks(5); got != nil {
		t.Errorf("Flocks(5) = %v", got)
	}
	// Session 1's locks are gone, so others may take their bytes.
	mustGrant(t, tb, 3, b1, Write, Range{0, 19})
	if got := tb.ReleaseSession(1); len(got) != 0 {
		t.Errorf("second ReleaseSession(1) = %v, want none", got)
	}
	if got := tb.ReleaseSession(42); len(got) != 0 {
		t.Errorf("ReleaseSession(42) = %v, want none", got)
	}
	if got, want := tb.ReleaseSession(2), []uint64{3, 9}; !slices.Equal(got, want) {
		t.Fatalf("ReleaseSession(2) = %v, want %v", got, want)
	}
	if got := shortLocks(tb.Locks(9)); got != "1 read [100, 100]" {
		t.Errorf("Locks(9) = %s, want session 3's lock", got)
	}
	if got, want := tb.ReleaseSession(3), []uint64{9}; !slices.Equal(got, want) {
		t.Fatalf("ReleaseSession(3) = %v, want %v", got, want)
	}
	if got := tb.Inodes(); len(got) != 0 {
		t.Errorf("Inodes() = %v, want none", got)
	}
}
