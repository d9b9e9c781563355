// Package rangelock holds the pure lock logic of jfs: POSIX record locks
// (fcntl F_GETLK/F_SETLK), BSD flocks, and the wait-for graph between lock
// owners with its cycle search.
//
// Nothing here blocks, sleeps, or knows about time, the network or raft. A
// Table answers "granted, or conflicting with whom" and a Graph answers "would
// this wait close a cycle"; waiting and waking belong to the caller. None of
// the types is safe for concurrent use: the caller serialises access (the
// state machine applies one command at a time).
//
// Every answer is deterministic: the same sequence of calls gives the same
// results on every node, which is what a replicated state machine needs.
package rangelock

import (
	"errors"
	"fmt"
	"math"
)

// MaxOffset is the largest byte offset a lock can cover, Linux's OFFSET_MAX.
// A range that ends at MaxOffset runs "to the end of the file and beyond".
const MaxOffset int64 = math.MaxInt64

// Errors returned for bad input. They are the only errors this package
// returns; callers map them to errnos (ErrInvalid and ErrBadType to EINVAL,
// ErrOverflow to EOVERFLOW).
var (
	// ErrInvalid: a negative offset, a range whose start is after its end, or
	// an unlock passed where a lock type is required (F_GETLK with F_UNLCK).
	ErrInvalid = errors.New("rangelock: invalid range")
	// ErrOverflow: start+length-1 does not fit in an int64 (fcntl's EOVERFLOW).
	ErrOverflow = errors.New("rangelock: range overflows the largest offset")
	// ErrBadType: a lock type other than Unlock, Read or Write.
	ErrBadType = errors.New("rangelock: unknown lock type")
	// ErrDuplicateWait: Graph.Add with a wait id that is already present.
	ErrDuplicateWait = errors.New("rangelock: wait id already in the graph")
)

// Type is a lock type. For flock, Read is LOCK_SH and Write is LOCK_EX.
type Type uint8

const (
	Unlock Type = iota // F_UNLCK / LOCK_UN
	Read               // F_RDLCK / LOCK_SH
	Write              // F_WRLCK / LOCK_EX
)

// Valid reports whether t is one of Unlock, Read, Write.
func (t Type) Valid() bool { return t <= Write }

func (t Type) String() string {
	switch t {
	case Unlock:
		return "unlock"
	case Read:
		return "read"
	case Write:
		return "write"
	}
	return fmt.Sprintf("type(%d)", uint8(t))
}

// conflicts reports whether locks of types a and b held by different owners
// over overlapping bytes conflict: only two readers may share.
func conflicts(a, b Type) bool { return a == Write || b == Write }

// Owner identifies who holds a lock. For POSIX locks it is a process as the
// kernel sees it (a session plus the kernel's lock owner id); for flock it is
// an open file description (a session plus the file handle). The package never
// interprets the fields beyond comparing them.
type Owner struct {
	Session uint64
	ID      uint64
}

// Compare orders owners by session, then id. It returns -1, 0 or +1.
func (o Owner) Compare(p Owner) int {
	switch {
	case o.Session < p.Session:
		return -1
	case o.Session > p.Session:
		return 1
	case o.ID < p.ID:
		return -1
	case o.ID > p.ID:
		return 1
	}
	return 0
}

func (o Owner) String() string { return fmt.Sprintf("%d/%d", o.Session, o.ID) }

// Range is a closed byte range [Start, End]: both ends are included, as in the
// kernel's struct file_lock. End == MaxOffset means to the end of file.
type Range struct {
	Start, End int64
}

// NewRange converts fcntl(2)'s (l_start, l_len), with l_whence already
// resolved to an absolute start, into a Range, with the kernel's rules:
//
//   - "Specifying 0 for l_len has the special meaning: lock all bytes starting
//     at the location specified by l_whence and l_start through to the end of
//     file, no matter how large the file grows."
//   - "POSIX.1-2001 allows (but does not require) an implementation to support
//     a negative l_len value; if l_len is negative, the interval described by
//     lock covers bytes l_start+l_len up to and including l_start-1." Linux does.
//   - A start (after a negative length) below zero is ErrInvalid; an end past
//     MaxOffset is ErrOverflow.
func NewRange(start, length int64) (Range, error) {
	if start < 0 {
		return Range{}, fmt.Errorf("%w: start %d is negative", ErrInvalid, start)
	}
	switch {
	case length > 0:
		if length-1 > MaxOffset-start {
			return Range{}, fmt.Errorf("%w: start %d length %d", ErrOverflow, start, length)
		}
		return Range{start, start + length - 1}, nil
	case length < 0:
		if start+length < 0 {
			return Range{}, fmt.Errorf("%w: start %d length %d reaches below offset 0", ErrInvalid, start, length)
		}
		return Range{start + length, start - 1}, nil
	}
	return Range{start, MaxOffset}, nil
}

// Whole is the range of the whole file, [0, MaxOffset].
var Whole = Range{0, MaxOffset}

// Validate returns ErrInvalid unless 0 <= Start <= End.
func (r Range) Validate() error {
	if r.Start < 0 || r.End < r.Start {
		return fmt.Errorf("%w: [%d, %d]", ErrInvalid, r.Start, r.End)
	}
	return nil
}

// Len is fcntl's l_len for the range: 0 when it runs to MaxOffset.
func (r Range) Len() int64 {
	if r.End == MaxOffset {
		return 0
	}
	return r.End - r.Start + 1
}

// Overlaps reports whether r and o share at least one byte.
func (r Range) Overlaps(o Range) bool { return r.Start <= o.End && o.Start <= r.End }

func (r Range) String() string {
	if r.End == MaxOffset {
		return fmt.Sprintf("[%d, EOF]", r.Start)
	}
	return fmt.Sprintf("[%d, %d]", r.Start, r.End)
}

// Lock is one POSIX record lock: Owner holds Type over Range. Pid is the
// process id reported to F_GETLK; the package only carries it.
type Lock struct {
	Owner Owner
	Type  Type
	Range
	Pid uint32
}

func (l Lock) String() string {
	return fmt.Sprintf("%s %s %s pid %d", l.Owner, l.Type, l.Range, l.Pid)
}

// Flock is one flock(2) lock: Owner (an open file description) holds Type,
// Read for LOCK_SH or Write for LOCK_EX, over the whole file.
type Flock struct {
	Owner Owner
	Type  Type
}
