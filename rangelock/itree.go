package rangelock

// itree is an interval tree of locks: a treap keyed by (Start, Owner), each
// node carrying the largest End in its subtree, so that the locks overlapping
// a range are found in O(log n + k) for k answers.
//
// The treap's priorities are a hash of the key, not random numbers, so that
// the shape (and so the cost) is the same on every node of the cluster and
// the package stays free of math/rand. Keys are unique: one owner never holds
// two locks starting at the same offset, because its locks never overlap.
type itree struct {
	root *tnode
	n    int
}

type tnode struct {
	lk          Lock
	prio        uint64
	maxEnd      int64
	left, right *tnode
}

func keyLess(a, b *Lock) bool {
	if a.Start != b.Start {
		return a.Start < b.Start
	}
	return a.Owner.Compare(b.Owner) < 0
}

// priority mixes the key with splitmix64's finaliser.
func priority(l *Lock) uint64 {
	x := uint64(l.Start) ^ l.Owner.Session*0x9e3779b97f4a7c15 ^ l.Owner.ID*0xc2b2ae3d27d4eb4f
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

func (n *tnode) fix() {
	m := n.lk.End
	if n.left != nil && n.left.maxEnd > m {
		m = n.left.maxEnd
	}
	if n.right != nil && n.right.maxEnd > m {
		m = n.right.maxEnd
	}
	n.maxEnd = m
}

// split divides t into the nodes whose key is less than k and the rest.
func split(t *tnode, k *Lock) (lt, ge *tnode) {
	if t == nil {
		return nil, nil
	}
	if keyLess(&t.lk, k) {
		t.right, ge = split(t.right, k)
		t.fix()
		return t, ge
	}
	lt, t.left = split(t.left, k)
	t.fix()
	return lt, t
}

// merge joins a and b, every key of a being less than every key of b.
func merge(a, b *tnode) *tnode {
	switch {
	case a == nil:
		return b
	case b == nil:
		return a
	case a.prio > b.prio:
		a.right = merge(a.right, b)
		a.fix()
		return a
	default:
		b.left = merge(a, b.left)
		b.fix()
		return b
	}
}

func (t *itree) insert(l Lock) {
	n := &tnode{lk: l, prio: priority(&l), maxEnd: l.End}
	lt, ge := split(t.root, &l)
	t.root = merge(merge(lt, n), ge)
	t.n++
}

// remove deletes the lock with l's key and reports whether it was there.
func (t *itree) remove(l Lock) bool {
	lt, ge := split(t.root, &l)
	var found bool
	if ge != nil {
		// The smallest key of ge is l's key if l is present.
		var min *tnode
		min, ge = popMin(ge)
		if min.lk.Start == l.Start && min.lk.Owner == l.Owner {
			found = true
		} else {
			ge = merge(min, ge)
		}
	}
	t.root = merge(lt, ge)
	if found {
		t.n--
	}
	return found
}

// popMin removes the smallest node of a non-empty treap.
func popMin(t *tnode) (min, rest *tnode) {
	if t.left == nil {
		rest = t.right
		t.right = nil
		t.fix()
		return t, rest
	}
	min, t.left = popMin(t.left)
	t.fix()
	return min, t
}

// overlapping calls fn, in key order, for every lock that shares a byte with
// r, until fn returns false.
func (t *itree) overlapping(r Range, fn func(*Lock) bool) {
	visitOverlap(t.root, r, fn)
}

func visitOverlap(n *tnode, r Range, fn func(*Lock) bool) bool {
	for n != nil && n.maxEnd >= r.Start {
		if !visitOverlap(n.left, r, fn) {
			return false
		}
		if n.lk.Start > r.End {
			// Everything to the right starts later still.
			return true
		}
		if n.lk.End >= r.Start && !fn(&n.lk) {
			return false
		}
		n = n.right
	}
	return true
}

// each calls fn for every lock in key order.
func (t *itree) each(fn func(*Lock)) {
	var walk func(*tnode)
	walk = func(n *tnode) {
		for n != nil {
			walk(n.left)
			fn(&n.lk)
			n = n.right
		}
	}
	walk(t.root)
}
