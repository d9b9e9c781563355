package rangelock

// Wait queues. A blocking lock request (F_SETLKW, flock without LOCK_NB)
// that cannot be granted waits in its inode's queue, in arrival order. The
// state machine keeps the queues; these functions decide, on a Table, what
// happens to them, so every replica decides the same:
//
//   - MustQueue: a new blocking request waits if it conflicts with a held
//     lock or with an earlier waiter (fairness: a writer is not starved by
//     readers that come later);
//   - Grant: after anything that may free a range (unlock, release, a
//     waiter leaving), the waiters that conflict with no held lock and with
//     no earlier waiter still queued are granted, in queue order, on the
//     table.

// Waiter is one queued request.
type Waiter struct {
	ID    uint64 // unique; larger for later arrivals
	Owner Owner  // (session, lock owner) for POSIX, (session, fh) for flock
	Flock bool
	Type  Type  // Read or Write
	Range Range // Whole for a flock
	Pid   uint32
}

// Behind reports whether w may not overtake v, an earlier waiter of the same
// inode: both are of the same kind (POSIX or flock), of different owners,
// over overlapping ranges, and at least one wants to write.
func (w Waiter) Behind(v Waiter) bool {
	if w.Flock != v.Flock || w.Owner == v.Owner {
		return false
	}
	return conflicts(w.Type, v.Type) && w.Range.Overlaps(v.Range)
}

// MustQueue reports whether a new blocking request w on ino must wait:
// it may not overtake a waiter of queue (the inode's, in order), or a held
// lock conflicts with it. It changes nothing. An invalid type or range is
// an error.
func (t *Table) MustQueue(ino uint64, w Waiter, queue []Waiter) (bool, error) {
	for _, v := range queue {
		if w.Behind(v) {
			return true, nil
		}
	}
	c, err := t.waitConflicts(ino, w)
	return len(c) > 0, err
}

func (t *Table) waitConflicts(ino uint64, w Waiter) ([]Owner, error) {
	if w.Flock {
		return t.FlockConflicts(ino, w.Owner, w.Type)
	}
	return t.Conflicts(ino, w.Owner, w.Type, w.Range)
}

// Grant walks ino's queue in order and grants, on t, every waiter that
// conflicts with no held lock and may not be held back by an earlier waiter
// that stays queued. A grant that converts a lock (a flock, or a POSIX read
// lock over the owner's own write lock) can free a waiter it passed, so the
// walk repeats until it grants nothing. It returns the positions in queue of
// the granted waiters, in the order they were granted. A waiter with an
// invalid type or range is never granted.
func (t *Table) Grant(ino uint64, queue []Waiter) []int {
	var granted []int
	done := make([]bool, len(queue))
	for {
		n := len(granted)
		var staying []Waiter
		for i, w := range queue {
			if done[i] {
				continue
			}
			if t.grantable(ino, w, staying) {
				var err error
				if w.Flock {
					_, err = t.Flock(ino, w.Owner, w.Type)
				} else {
					_, err = t.Set(ino, w.Owner, w.Type, w.Range, w.Pid)
				}
				if err == nil {
					done[i] = true
					granted = append(granted, i)
					continue
				}
			}
			staying = append(staying, w)
		}
		if len(granted) == n {
			return granted
		}
	}
}

// grantable reports whether w may be granted now: no earlier waiter of
// staying holds it back and no held lock conflicts.
func (t *Table) grantable(ino uint64, w Waiter, staying []Waiter) bool {
	for _, v := range staying {
		if w.Behind(v) {
			return false
		}
	}
	c, err := t.waitConflicts(ino, w)
	return err == nil && len(c) == 0
}
