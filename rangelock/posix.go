package rangelock

import "slices"

// posixLocks is the POSIX record-lock list of one inode.
//
// Linux keeps an inode's POSIX locks in one list in which each owner's locks
// are contiguous and sorted by start, and an owner's group is appended at the
// tail when the owner takes its first lock. F_GETLK reports the first
// conflicting lock of that list, so the order is observable; seq records it.
type posixLocks struct {
	all     itree // every lock, for conflict search
	owners  map[Owner]*ownerLocks
	nextSeq uint64
}

type ownerLocks struct {
	seq   uint64 // position of the owner's group in the kernel's list
	locks itree  // this owner's locks; they never overlap one another
}

func newPosixLocks() *posixLocks {
	return &posixLocks{owners: make(map[Owner]*ownerLocks)}
}

func (p *posixLocks) empty() bool { return p.all.n == 0 }

// eachConflict calls fn for every lock of another owner that conflicts with
// typ over r, until fn returns false.
func (p *posixLocks) eachConflict(o Owner, typ Type, r Range, fn func(*Lock) bool) {
	p.all.overlapping(r, func(l *Lock) bool {
		if l.Owner == o || !conflicts(l.Type, typ) {
			return true
		}
		return fn(l)
	})
}

// before reports whether a comes before b in the kernel's list order.
func (p *posixLocks) before(a, b *Lock) bool {
	sa, sb := p.owners[a.Owner].seq, p.owners[b.Owner].seq
	if sa != sb {
		return sa < sb
	}
	return a.Start < b.Start
}

// test is F_GETLK: the first conflicting lock in list order.
func (p *posixLocks) test(o Owner, typ Type, r Range) (Lock, bool) {
	var first *Lock
	p.eachConflict(o, typ, r, func(l *Lock) bool {
		if first == nil || p.before(l, first) {
			first = l
		}
		return true
	})
	if first == nil {
		return Lock{}, false
	}
	return *first, true
}

// conflictOwners lists, in list order and once each, the owners whose locks
// conflict with typ over r.
func (p *posixLocks) conflictOwners(o Owner, typ Type, r Range) []Owner {
	var out []Owner
	seen := make(map[Owner]struct{})
	p.eachConflict(o, typ, r, func(l *Lock) bool {
		if _, dup := seen[l.Owner]; !dup {
			seen[l.Owner] = struct{}{}
			out = append(out, l.Owner)
		}
		return true
	})
	slices.SortFunc(out, func(a, b Owner) int {
		sa, sb := p.owners[a].seq, p.owners[b].seq
		switch {
		case sa < sb:
			return -1
		case sa > sb:
			return 1
		}
		return 0
	})
	return out
}

// apply changes o's locks over r to typ, as posix_lock_inode does once no
// conflict stands in the way: locks of the same type that overlap or touch
// merge into one; the part of a lock of another type that r covers is
// replaced, leaving what sticks out on either side; Unlock only removes.
func (p *posixLocks) apply(o Owner, typ Type, r Range, pid uint32) {
	ol := p.owners[o]
	if ol == nil {
		if typ == Unlock {
			return
		}
		ol = &ownerLocks{seq: p.nextSeq}
		p.nextSeq++
		p.owners[o] = ol
	}

	// The owner's locks that overlap r or touch it.
	near := r
	if near.Start > 0 {
		near.Start--
	}
	if near.End < MaxOffset {
		near.End++
	}
	var touched []Lock
	ol.locks.overlapping(near, func(l *Lock) bool {
		touched = append(touched, *l)
		return true
	})

	merged := r
	// The kernel reuses the first lock it merges with, or a copy of the
	// request if it first meets a lock that the request covers whole; the
	// pid comes with it.
	mergedPid, decided := pid, false
	var keep []Lock
	for _, l := range touched {
		if typ != Unlock && l.Type == typ {
			merged.Start = min(merged.Start, l.Start)
			merged.End = max(merged.End, l.End)
			if !decided {
				mergedPid, decided = l.Pid, true
			}
			p.remove(ol, l)
			continue
		}
		if !l.Overlaps(r) {
			continue // merely adjacent, and of another type: untouched
		}
		p.remove(ol, l)
		if l.Start < r.Start {
			left := l
			left.End = r.Start - 1
			keep = append(keep, left)
		}
		if l.End > r.End {
			right := l
			right.Start = r.End + 1
			keep = append(keep, right)
		}
		if l.Start >= r.Start && l.End <= r.End {
			decided = true
		}
	}
	for _, l := range keep {
		p.insert(ol, l)
	}
	if typ != Unlock {
		p.insert(ol, Lock{Owner: o, Type: typ, Range: merged, Pid: mergedPid})
	}
	if ol.locks.n == 0 {
		delete(p.owners, o)
	}
}

func (p *posixLocks) insert(ol *ownerLocks, l Lock) {
	ol.locks.insert(l)
	p.all.insert(l)
}

func (p *posixLocks) remove(ol *ownerLocks, l Lock) {
	ol.locks.remove(l)
	p.all.remove(l)
}

// release drops every lock o holds; it reports whether there was any.
func (p *posixLocks) release(o Owner) bool {
	ol := p.owners[o]
	if ol == nil {
		return false
	}
	ol.locks.each(func(l *Lock) { p.all.remove(*l) })
	delete(p.owners, o)
	return true
}

// list returns every lock in the kernel's list order.
func (p *posixLocks) list() []Lock {
	groups := make([]*ownerLocks, 0, len(p.owners))
	for _, ol := range p.owners {
		groups = append(groups, ol)
	}
	slices.SortFunc(groups, func(a, b *ownerLocks) int {
		switch {
		case a.seq < b.seq:
			return -1
		case a.seq > b.seq:
			return 1
		}
		return 0
	})
	out := make([]Lock, 0, p.all.n)
	for _, ol := range groups {
		ol.locks.each(func(l *Lock) { out = append(out, *l) })
	}
	return out
}
