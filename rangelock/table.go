package rangelock

import (
	"fmt"
	"slices"
)

// Table holds the POSIX record locks and flocks of every inode, and an index
// from session to the inodes where the session holds anything, so that an
// expired session's locks are found without scanning every inode.
//
// A Table is not safe for concurrent use.
type Table struct {
	inodes   map[uint64]*inodeLocks
	sessions map[uint64]map[uint64]int // session -> inode -> owners of the session there
}

type inodeLocks struct {
	posix  *posixLocks
	flocks map[Owner]Type // Read (LOCK_SH) or Write (LOCK_EX)
}

// NewTable returns an empty table.
func NewTable() *Table {
	return &Table{
		inodes:   make(map[uint64]*inodeLocks),
		sessions: make(map[uint64]map[uint64]int),
	}
}

func (t *Table) inode(ino uint64, create bool) *inodeLocks {
	il := t.inodes[ino]
	if il == nil && create {
		il = &inodeLocks{posix: newPosixLocks(), flocks: make(map[Owner]Type)}
		t.inodes[ino] = il
	}
	return il
}

// track counts an owner that appeared (+1) or disappeared (-1) on ino.
func (t *Table) track(ino uint64, o Owner, delta int) {
	m := t.sessions[o.Session]
	if m == nil {
		m = make(map[uint64]int)
		t.sessions[o.Session] = m
	}
	m[ino] += delta
	if m[ino] <= 0 {
		delete(m, ino)
		if len(m) == 0 {
			delete(t.sessions, o.Session)
		}
	}
}

// gc forgets an inode that no longer holds any lock.
func (t *Table) gc(ino uint64, il *inodeLocks) {
	if il.posix.empty() && len(il.flocks) == 0 {
		delete(t.inodes, ino)
	}
}

func checkLock(typ Type, r Range) error {
	if !typ.Valid() {
		return fmt.Errorf("%w: %d", ErrBadType, typ)
	}
	return r.Validate()
}

// Test is F_GETLK: "If the lock could be placed, fcntl() does not actually
// place it, but returns F_UNLCK in the l_type field of lock and leaves the
// other fields of the structure unchanged. If one or more incompatible locks
// would prevent this lock being placed, then fcntl() returns details about one
// of those locks". It returns the first such lock in the kernel's order and
// true, or false when the lock could be placed. typ must be Read or Write.
func (t *Table) Test(ino uint64, o Owner, typ Type, r Range) (Lock, bool, error) {
	if err := checkLock(typ, r); err != nil {
		return Lock{}, false, err
	}
	if typ == Unlock {
		return Lock{}, false, fmt.Errorf("%w: F_GETLK needs a read or write lock type", ErrInvalid)
	}
	il := t.inode(ino, false)
	if il == nil {
		return Lock{}, false, nil
	}
	l, found := il.posix.test(o, typ, r)
	return l, found, nil
}

// Conflicts lists, without changing anything, the owners whose POSIX locks
// keep o from setting typ over r, in the kernel's list order; empty means the
// lock would be granted. Unlock never conflicts.
func (t *Table) Conflicts(ino uint64, o Owner, typ Type, r Range) ([]Owner, error) {
	if err := checkLock(typ, r); err != nil {
		return nil, err
	}
	il := t.inode(ino, false)
	if il == nil || typ == Unlock {
		return nil, nil
	}
	return il.posix.conflictOwners(o, typ, r), nil
}

// Set is F_SETLK with typ Read, Write or Unlock over r. If other owners'
// locks conflict ("If a conflicting lock is held by another process, this
// call returns -1 and sets errno to EACCES or EAGAIN"), nothing changes and
// Set returns those owners, in the kernel's list order. Otherwise it returns
// no owners and o's locks over r become typ, merging with o's adjacent and
// overlapping locks of the same type and splitting o's locks of another type.
// An owner never conflicts with itself. pid is what F_GETLK will report.
func (t *Table) Set(ino uint64, o Owner, typ Type, r Range, pid uint32) ([]Owner, error) {
	if err := checkLock(typ, r); err != nil {
		return nil, err
	}
	il := t.inode(ino, typ != Unlock)
	if il == nil {
		return nil, nil
	}
	if typ != Unlock {
		if c := il.posix.conflictOwners(o, typ, r); len(c) > 0 {
			return c, nil
		}
	}
	_, had := il.posix.owners[o]
	il.posix.apply(o, typ, r, pid)
	_, has := il.posix.owners[o]
	switch {
	case has && !had:
		t.track(ino, o, 1)
	case had && !has:
		t.track(ino, o, -1)
	}
	t.gc(ino, il)
	return nil, nil
}

// ReleasePosix drops every POSIX lock o holds on ino, as close(2) of any
// descriptor of the file does: "If a process closes any file descriptor
// referring to a file, then all of the process's locks on that file are
// released". It reports whether o held any.
func (t *Table) ReleasePosix(ino uint64, o Owner) bool {
	il := t.inode(ino, false)
	if il == nil || !il.posix.release(o) {
		return false
	}
	t.track(ino, o, -1)
	t.gc(ino, il)
	return true
}

// Locks returns ino's POSIX locks in the kernel's list order: owners in the
// order they took their first lock, each owner's locks by start.
func (t *Table) Locks(ino uint64) []Lock {
	il := t.inode(ino, false)
	if il == nil {
		return nil
	}
	return il.posix.list()
}

// Flock is flock(2) for the open file description o: typ Read is LOCK_SH,
// Write is LOCK_EX, Unlock is LOCK_UN. It follows Linux exactly:
//
//   - asking again for the type o already holds is granted and changes nothing;
//   - "A call to flock() may block if an incompatible lock is held by another
//     process", and incompatible means another owner holds LOCK_EX, or
//     LOCK_EX is asked while another owner holds any lock;
//   - "Converting a lock (shared to exclusive, or vice versa) is not
//     guaranteed to be atomic: the existing lock is first removed, and then a
//     new lock is established." On Linux a conversion that conflicts has
//     therefore dropped o's old lock when it returns.
//
// On conflict it returns the owners in the way, ordered by Owner.Compare.
func (t *Table) Flock(ino uint64, o Owner, typ Type) ([]Owner, error) {
	if !typ.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadType, typ)
	}
	il := t.inode(ino, typ != Unlock)
	if il == nil {
		return nil, nil
	}
	held, had := il.flocks[o]
	if had && held == typ {
		return nil, nil
	}
	if had {
		delete(il.flocks, o)
		t.track(ino, o, -1)
	}
	if typ == Unlock {
		t.gc(ino, il)
		return nil, nil
	}
	if c := il.flockConflicts(o, typ); len(c) > 0 {
		t.gc(ino, il)
		return c, nil
	}
	il.flocks[o] = typ
	t.track(ino, o, 1)
	return nil, nil
}

// FlockConflicts lists, without changing anything, the owners whose flocks
// keep o from holding typ on ino, ordered by Owner.Compare.
func (t *Table) FlockConflicts(ino uint64, o Owner, typ Type) ([]Owner, error) {
	if !typ.Valid() {
		return nil, fmt.Errorf("%w: %d", ErrBadType, typ)
	}
	il := t.inode(ino, false)
	if il == nil || typ == Unlock {
		return nil, nil
	}
	return il.flockConflicts(o, typ), nil
}

func (il *inodeLocks) flockConflicts(o Owner, typ Type) []Owner {
	var out []Owner
	for h, ht := range il.flocks {
		if h != o && conflicts(ht, typ) {
			out = append(out, h)
		}
	}
	slices.SortFunc(out, Owner.Compare)
	return out
}

// Flocks returns ino's flocks ordered by owner.
func (t *Table) Flocks(ino uint64) []Flock {
	il := t.inode(ino, false)
	if il == nil {
		return nil
	}
	out := make([]Flock, 0, len(il.flocks))
	for o, typ := range il.flocks {
		out = append(out, Flock{o, typ})
	}
	slices.SortFunc(out, func(a, b Flock) int { return a.Owner.Compare(b.Owner) })
	return out
}

// ReleaseSession drops every POSIX lock and flock held by owners of session,
// as the expiry of a client's session does, and returns the inodes where it
// dropped anything, in increasing order, so that their waiters can be woken.
func (t *Table) ReleaseSession(session uint64) []uint64 {
	m := t.sessions[session]
	inos := make([]uint64, 0, len(m))
	for ino := range m {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	for _, ino := range inos {
		il := t.inodes[ino]
		var owners []Owner
		for o := range il.posix.owners {
			if o.Session == session {
				owners = append(owners, o)
			}
		}
		for _, o := range owners {
			il.posix.release(o)
		}
		for o := range il.flocks {
			if o.Session == session {
				delete(il.flocks, o)
			}
		}
		t.gc(ino, il)
	}
	delete(t.sessions, session)
	return inos
}

// Inodes returns, in increasing order, the inodes that hold any lock.
func (t *Table) Inodes() []uint64 {
	out := make([]uint64, 0, len(t.inodes))
	for ino := range t.inodes {
		out = append(out, ino)
	}
	slices.Sort(out)
	return out
}
