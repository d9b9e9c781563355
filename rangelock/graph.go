package rangelock

import (
	"fmt"
	"slices"
)

// Graph is the wait-for graph between lock owners: an edge a -> b means a
// waits for a lock that b holds. A node is whatever identity the caller gives
// an owner (the cluster uses one node per process, even when that process
// reaches the file system through several mounts).
//
// One owner may wait more than once at a time (threads of one process share
// a POSIX owner), so each wait has its own id and the edges are counted: an
// edge lasts while any wait needs it.
//
// Answers are deterministic: searches visit owners and edges in Owner.Compare
// order, so every node of a cluster reports the same cycle. There is no depth
// limit; a search costs time proportional to the edges it reaches.
//
// A Graph is not safe for concurrent use.
type Graph struct {
	waits    map[uint64]wait
	out      map[Owner][]edge   // sorted by to
	byWaiter map[Owner][]uint64 // sorted wait ids
}

type wait struct {
	waiter   Owner
	blockers []Owner
}

type edge struct {
	to Owner
	n  int // waits that need this edge
}

// NewGraph returns an empty graph.
func NewGraph() *Graph {
	return &Graph{
		waits:    make(map[uint64]wait),
		out:      make(map[Owner][]edge),
		byWaiter: make(map[Owner][]uint64),
	}
}

// Len is the number of waits in the graph.
func (g *Graph) Len() int { return len(g.waits) }

// Add records wait id: waiter waits for every owner in blockers. It does not
// check for cycles; call WouldCycle first to refuse a wait that closes one.
func (g *Graph) Add(id uint64, waiter Owner, blockers []Owner) error {
	if _, dup := g.waits[id]; dup {
		return fmt.Errorf("%w: %d", ErrDuplicateWait, id)
	}
	bs := sortedUnique(blockers)
	g.waits[id] = wait{waiter, bs}
	ids := g.byWaiter[waiter]
	i, _ := slices.BinarySearch(ids, id)
	g.byWaiter[waiter] = slices.Insert(ids, i, id)
	for _, b := range bs {
		es := g.out[waiter]
		i, found := slices.BinarySearchFunc(es, b, func(e edge, b Owner) int { return e.to.Compare(b) })
		if found {
			es[i].n++
		} else {
			g.out[waiter] = slices.Insert(es, i, edge{b, 1})
		}
	}
	return nil
}

// Remove deletes wait id and reports whether it was there.
func (g *Graph) Remove(id uint64) bool {
	w, ok := g.waits[id]
	if !ok {
		return false
	}
	delete(g.waits, id)
	ids := g.byWaiter[w.waiter]
	if i, found := slices.BinarySearch(ids, id); found {
		ids = slices.Delete(ids, i, i+1)
	}
	if len(ids) == 0 {
		delete(g.byWaiter, w.waiter)
	} else {
		g.byWaiter[w.waiter] = ids
	}
	es := g.out[w.waiter]
	for _, b := range w.blockers {
		i, found := slices.BinarySearchFunc(es, b, func(e edge, b Owner) int { return e.to.Compare(b) })
		if !found {
			continue
		}
		if es[i].n--; es[i].n == 0 {
			es = slices.Delete(es, i, i+1)
		}
	}
	if len(es) == 0 {
		delete(g.out, w.waiter)
	} else {
		g.out[w.waiter] = es
	}
	return true
}

// Wait returns the waiter and blockers of wait id.
func (g *Graph) Wait(id uint64) (waiter Owner, blockers []Owner, ok bool) {
	w, ok := g.waits[id]
	return w.waiter, slices.Clone(w.blockers), ok
}

// WaitsOf returns the ids of o's waits in increasing order.
func (g *Graph) WaitsOf(o Owner) []uint64 { return slices.Clone(g.byWaiter[o]) }

// WouldCycle reports whether waiter waiting for blockers would close a cycle.
// It returns the cycle as the owners along it, starting with waiter:
// [waiter, b, ..., x] where waiter would wait for b, and x waits for waiter.
// It returns nil when the wait closes no cycle. The cycle is a shortest one.
func (g *Graph) WouldCycle(waiter Owner, blockers []Owner) []Owner {
	start := sortedUnique(blockers)
	parent := make(map[Owner]Owner, len(start))
	queue := make([]Owner, 0, len(start))
	for _, b := range start {
		if b == waiter {
			return []Owner{waiter}
		}
		parent[b] = waiter
		queue = append(queue, b)
	}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, e := range g.out[cur] {
			if e.to == waiter {
				return pathTo(parent, waiter, cur)
			}
			if _, seen := parent[e.to]; !seen {
				parent[e.to] = cur
				queue = append(queue, e.to)
			}
		}
	}
	return nil
}

// pathTo returns [root, ..., last] by following parent links back from last.
func pathTo(parent map[Owner]Owner, root, last Owner) []Owner {
	var rev []Owner
	for o := last; o != root; o = parent[o] {
		rev = append(rev, o)
	}
	rev = append(rev, root)
	slices.Reverse(rev)
	return rev
}

// Cycles returns one cycle from every strongly connected component of the
// graph that has one, for a background detector: each cycle starts at its
// smallest owner and follows edges back to it; the cycles are ordered by
// their first owner. Breaking one wait of each cycle and searching again
// eventually leaves no cycle.
func (g *Graph) Cycles() [][]Owner {
	nodes := make([]Owner, 0, len(g.out))
	for o := range g.out {
		nodes = append(nodes, o)
	}
	slices.SortFunc(nodes, Owner.Compare)

	// Tarjan's strongly connected components.
	index := make(map[Owner]int, len(nodes))
	low := make(map[Owner]int, len(nodes))
	onStack := make(map[Owner]bool, len(nodes))
	var stack []Owner
	var cycles [][]Owner
	var visit func(v Owner)
	visit = func(v Owner) {
		index[v] = len(index)
		low[v] = index[v]
		stack = append(stack, v)
		onStack[v] = true
		for _, e := range g.out[v] {
			if _, seen := index[e.to]; !seen {
				visit(e.to)
				low[v] = min(low[v], low[e.to])
			} else if onStack[e.to] {
				low[v] = min(low[v], index[e.to])
			}
		}
		if low[v] != index[v] {
			return
		}
		var comp []Owner
		for {
			w := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			onStack[w] = false
			comp = append(comp, w)
			if w == v {
				break
			}
		}
		if c := g.cycleIn(comp); c != nil {
			cycles = append(cycles, c)
		}
	}
	for _, v := range nodes {
		if _, seen := index[v]; !seen {
			visit(v)
		}
	}
	slices.SortFunc(cycles, func(a, b []Owner) int { return a[0].Compare(b[0]) })
	return cycles
}

// cycleIn returns a shortest cycle through the smallest owner of the strongly
// connected component comp, or nil if comp is a single owner without a
// self-loop.
func (g *Graph) cycleIn(comp []Owner) []Owner {
	in := make(map[Owner]bool, len(comp))
	for _, o := range comp {
		in[o] = true
	}
	root := slices.MinFunc(comp, Owner.Compare)
	parent := map[Owner]Owner{}
	queue := []Owner{root}
	for len(queue) > 0 {
		cur := queue[0]
		queue = queue[1:]
		for _, e := range g.out[cur] {
			if e.to == root {
				if cur == root {
					return []Owner{root}
				}
				return pathTo(parent, root, cur)
			}
			if _, seen := parent[e.to]; !seen && in[e.to] {
				parent[e.to] = cur
				queue = append(queue, e.to)
			}
		}
	}
	return nil
}

func sortedUnique(os []Owner) []Owner {
	out := slices.Clone(os)
	slices.SortFunc(out, Owner.Compare)
	return slices.Compact(out)
}
