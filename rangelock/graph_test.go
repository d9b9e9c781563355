package rangelock

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// chainOwner is the i-th owner of a chain. The ids are scrambled so that the
// chain's first owner is not its smallest one.
func chainOwner(i int) Owner { return Owner{Session: 1, ID: uint64((i*7919 + 13) % 100003)} }

// rotateToMin rotates a cycle to start at its smallest owner, as Cycles
// reports it.
func rotateToMin(c []Owner) []Owner {
	i := slices.Index(c, slices.MinFunc(c, Owner.Compare))
	return append(slices.Clone(c[i:]), c[:i]...)
}

func TestGraphChains(t *testing.T) {
	for _, n := range []int{2, 3, 10, 1000} {
		for _, shuffled := range []bool{false, true} {
			t.Run(fmt.Sprintf("len=%d/shuffled=%v", n, shuffled), func(t *testing.T) {
				owners := make([]Owner, n)
				for i := range owners {
					owners[i] = chainOwner(i)
				}
				// Wait i: owners[i] waits for owners[i+1 mod n]; the last one
				// added closes the cycle.
				order := make([]int, n)
				for i := range order {
					order[i] = i
				}
				if shuffled {
					rand.New(rand.NewPCG(uint64(n), 7)).Shuffle(n, func(i, j int) { order[i], order[j] = order[j], order[i] })
				}
				g := NewGraph()
				for _, w := range order[:n-1] {
					waiter, blocker := owners[w], owners[(w+1)%n]
					if c := g.WouldCycle(waiter, []Owner{blocker}); c != nil {
						t.Fatalf("wait %d: %v -> %v would close cycle %v, but no cycle exists yet", w, waiter, blocker, c)
					}
					mustAdd(t, g, uint64(w), waiter, blocker)
				}
				if got := g.Cycles(); len(got) != 0 {
					t.Fatalf("Cycles() on a chain = %v", got)
				}
				last := order[n-1]
				waiter, blocker := owners[last], owners[(last+1)%n]
				// [waiter, blocker, ..., the owner that waits for waiter].
				want := make([]Owner, n)
				for k := range want {
					want[k] = owners[(last+k)%n]
				}
				if got := g.WouldCycle(waiter, []Owner{blocker}); !slices.Equal(got, want) {
					t.Fatalf("closing wait %v -> %v: WouldCycle = %v, want %v", waiter, blocker, got, want)
				}
				mustAdd(t, g, uint64(last), waiter, blocker)
				cycles := g.Cycles()
				if len(cycles) != 1 || !slices.Equal(cycles[0], rotateToMin(owners)) {
					t.Fatalf("Cycles() = %v, want [%v]", cycles, rotateToMin(owners))
				}
				// Removing any wait of the cycle breaks it.
				victim := uint64(order[n/2])
				if !g.Remove(victim) {
					t.Fatalf("Remove(%d) = false", victim)
				}
				if got := g.Cycles(); len(got) != 0 {
					t.Fatalf("Cycles() after Remove(%d) = %v", victim, got)
				}
				if g.Remove(victim) {
					t.Fatalf("second Remove(%d) = true", victim)
				}
				if got := g.Len(); got != n-1 {
					t.Fatalf("Len() = %d, want %d", got, n-1)
				}
			})
		}
	}
}

func TestGraphSelfWait(t *testing.T) {
	a, b := own(1), own(2)
	g := NewGraph()
	if got := g.WouldCycle(a, []Owner{b, a}); !slices.Equal(got, []Owner{a}) {
		t.Fatalf("WouldCycle(a, [b a]) = %v, want [a]", got)
	}
	mustAdd(t, g, 1, a, b, a)
	if got := g.Cycles(); len(got) != 1 || !slices.Equal(got[0], []Owner{a}) {
		t.Fatalf("Cycles() = %v, want [[a]]", got)
	}
	g.Remove(1)
	if got := g.Cycles(); len(got) != 0 {
		t.Fatalf("Cycles() = %v after Remove", got)
	}
}

func TestGraphQueueOnOneHolder(t *testing.T) {
	const n = 1000
	h, x := own(0), own(n+1)
	g := NewGraph()
	mustAdd(t, g, 0, h, x) // the holder itself waits for an idle owner
	for i := 1; i <= n; i++ {
		w := own(uint64(i))
		if c := g.WouldCycle(w, []Owner{h}); c != nil {
			t.Fatalf("waiter %d: false cycle %v", i, c)
		}
		mustAdd(t, g, uint64(i), w, h)
	}
	if got := g.Cycles(); len(got) != 0 {
		t.Fatalf("Cycles() = %v", got)
	}
	// Only a wait by the holder, or its blocker, for a queued owner closes one.
	if got, want := g.WouldCycle(h, []Owner{own(500)}), []Owner{h, own(500)}; !slices.Equal(got, want) {
		t.Fatalf("WouldCycle(h, [500]) = %v, want %v", got, want)
	}
	if got, want := g.WouldCycle(x, []Owner{own(7)}), []Owner{x, own(7), h}; !slices.Equal(got, want) {
		t.Fatalf("WouldCycle(x, [7]) = %v, want %v", got, want)
	}
}

// TestGraphSharedOwner: threads of one process share a POSIX owner, so one
// owner may wait twice; the edge stays while either wait does.
func TestGraphSharedOwner(t *testing.T) {
	a, b := own(1), own(2)
	g := NewGraph()
	mustAdd(t, g, 1, a, b)
	mustAdd(t, g, 2, a, b)
	if got := g.WaitsOf(a); !slices.Equal(got, []uint64{1, 2}) {
		t.Fatalf("WaitsOf(a) = %v", got)
	}
	g.Remove(1)
	if got, want := g.WouldCycle(b, []Owner{a}), []Owner{b, a}; !slices.Equal(got, want) {
		t.Fatalf("with wait 2 left: WouldCycle(b, [a]) = %v, want %v", got, want)
	}
	if got := g.WaitsOf(a); !slices.Equal(got, []uint64{2}) {
		t.Fatalf("WaitsOf(a) = %v", got)
	}
	g.Remove(2)
	if got := g.WouldCycle(b, []Owner{a}); got != nil {
		t.Fatalf("with no wait left: WouldCycle(b, [a]) = %v", got)
	}
	if got := g.WaitsOf(a); len(got) != 0 {
		t.Fatalf("WaitsOf(a) = %v", got)
	}
	if g.Len() != 0 {
		t.Fatalf("Len() = %d", g.Len())
	}
}

func TestGraphDuplicateWait(t *testing.T) {
	a, b, c := own(1), own(2), own(3)
	g := NewGraph()
	mustAdd(t, g, 1, a, b)
	if err := g.Add(1, c, []Owner{a}); !errors.Is(err, ErrDuplicateWait) {
		t.Fatalf("Add with a used id: %v, want ErrDuplicateWait", err)
	}
	// The refused wait left no edge c -> a behind, so a waiting for c closes
	// nothing.
	if got := g.WouldCycle(a, []Owner{c}); got != nil {
		t.Fatalf("WouldCycle(a, [c]) = %v", got)
	}
	if w, bs, ok := g.Wait(1); !ok || w != a || !slices.Equal(bs, []Owner{b}) {
		t.Fatalf("Wait(1) = %v %v %v", w, bs, ok)
	}
	if g.Len() != 1 || len(g.WaitsOf(c)) != 0 {
		t.Fatalf("Len() = %d, WaitsOf(c) = %v", g.Len(), g.WaitsOf(c))
	}
}

// TestGraphShortest: WouldCycle returns a shortest cycle.
func TestGraphShortest(t *testing.T) {
	x, p1, p2, p3, q := own(1), own(2), own(3), own(4), own(9)
	g := NewGraph()
	mustAdd(t, g, 1, p1, p2)
	mustAdd(t, g, 2, p2, p3)
	mustAdd(t, g, 3, p3, x)
	mustAdd(t, g, 4, q, x)
	if got, want := g.WouldCycle(x, []Owner{p1, q}), []Owner{x, q}; !slices.Equal(got, want) {
		t.Fatalf("WouldCycle = %v, want %v", got, want)
	}
	if got, want := g.WouldCycle(x, []Owner{p1}), []Owner{x, p1, p2, p3}; !slices.Equal(got, want) {
		t.Fatalf("WouldCycle = %v, want %v", got, want)
	}
}

// randomWaits builds a random wait list on a few owners.
func randomWaits(r *rand.Rand, owners, waits int) [][]Owner {
	var out [][]Owner
	for range waits {
		w := []Owner{own(uint64(r.IntN(owners)))}
		for range 1 + r.IntN(3) {
			w = append(w, own(uint64(r.IntN(owners))))
		}
		out = append(out, w)
	}
	return out
}

func TestGraphDeterministic(t *testing.T) {
	for seed := range uint64(50) {
		r := rand.New(rand.NewPCG(seed, 1))
		waits := randomWaits(r, 12, 14)
		var first [][]Owner
		var firstCheck []Owner
		probe := own(uint64(r.IntN(12)))
		for try := range 5 {
			perm := r.Perm(len(waits))
			g := NewGraph()
			for _, i := range perm {
				w := waits[i]
				bs := slices.Clone(w[1:])
				r.Shuffle(len(bs), func(i, j int) { bs[i], bs[j] = bs[j], bs[i] })
				mustAdd(t, g, uint64(i), w[0], bs...)
			}
			got := g.Cycles()
			check := g.WouldCycle(probe, []Owner{own(1), own(2), own(3)})
			if try == 0 {
				first, firstCheck = got, check
				continue
			}
			if fmt.Sprint(got) != fmt.Sprint(first) || !slices.Equal(check, firstCheck) {
				t.Fatalf("seed %d: insertion order %v gives Cycles %v WouldCycle %v, first order gave %v %v", seed, perm, got, check, first, firstCheck)
			}
		}
	}
}

// TestGraphAgainstReachability checks WouldCycle and Cycles on random graphs
// against a naive search.
func TestGraphAgainstReachability(t *testing.T) {
	for seed := range uint64(300) {
		r := rand.New(rand.NewPCG(seed, 2))
		const owners = 8
		g := NewGraph()
		edges := map[[2]Owner]int{}
		for i, w := range randomWaits(r, owners, r.IntN(12)) {
			mustAdd(t, g, uint64(i), w[0], w[1:]...)
			for _, b := range sortedUnique(w[1:]) {
				edges[[2]Owner{w[0], b}]++
			}
		}
		// Remove a few waits.
		for i := range 3 {
			if w, bs, ok := g.Wait(uint64(i * 3)); ok && g.Remove(uint64(i*3)) {
				for _, b := range sortedUnique(bs) {
					if edges[[2]Owner{w, b}]--; edges[[2]Owner{w, b}] == 0 {
						delete(edges, [2]Owner{w, b})
					}
				}
			}
		}
		// dist[a][b]: the fewest edges from a to b, 0 if unreachable.
		var dist [owners][owners]int
		for e := range edges {
			dist[e[0].ID][e[1].ID] = 1
		}
		for k := range owners {
			for i := range owners {
				for j := range owners {
					if dist[i][k] > 0 && dist[k][j] > 0 && (dist[i][j] == 0 || dist[i][k]+dist[k][j] < dist[i][j]) {
						dist[i][j] = dist[i][k] + dist[k][j]
					}
				}
			}
		}
		validCycle := func(c []Owner) bool {
			for i, o := range c {
				if edges[[2]Owner{o, c[(i+1)%len(c)]}] == 0 {
					return false
				}
			}
			return true
		}
		for range 10 {
			w := own(uint64(r.IntN(owners)))
			var bs []Owner
			for range 1 + r.IntN(3) {
				bs = append(bs, own(uint64(r.IntN(owners))))
			}
			shortest := 0 // the cycle's length, 0 for none
			for _, b := range bs {
				n := 0
				switch {
				case b == w:
					n = 1
				case dist[b.ID][w.ID] > 0:
					n = 1 + dist[b.ID][w.ID]
				}
				if n > 0 && (shortest == 0 || n < shortest) {
					shortest = n
				}
			}
			got := g.WouldCycle(w, bs)
			if len(got) != shortest {
				t.Fatalf("seed %d: WouldCycle(%v, %v) = %v, want a cycle of %d (edges %v)", seed, w, bs, got, shortest, edges)
			}
			if got != nil {
				if got[0] != w || (len(got) > 1 && !slices.Contains(bs, got[1])) {
					t.Fatalf("seed %d: WouldCycle(%v, %v) = %v does not start with the wait", seed, w, bs, got)
				}
				edges[[2]Owner{w, got[(1)%len(got)]}]++ // the wait being checked
				ok := validCycle(got)
				if edges[[2]Owner{w, got[1%len(got)]}]--; edges[[2]Owner{w, got[1%len(got)]}] == 0 {
					delete(edges, [2]Owner{w, got[1%len(got)]})
				}
				if !ok {
					t.Fatalf("seed %d: WouldCycle = %v is not a cycle (edges %v)", seed, got, edges)
				}
			}
		}
		// Cycles: one per strongly connected component with a cycle, through
		// its smallest owner, shortest among such.
		cyclic := map[uint64]bool{} // owners on some cycle
		for i := range owners {
			cyclic[uint64(i)] = dist[i][i] > 0
		}
		seen := map[Owner]bool{}
		cycles := g.Cycles()
		for k, c := range cycles {
			if !validCycle(c) || len(c) != dist[c[0].ID][c[0].ID] {
				t.Fatalf("seed %d: Cycles()[%d] = %v is not a shortest cycle through %v (edges %v)", seed, k, c, c[0], edges)
			}
			for _, o := range c {
				if o.Compare(c[0]) < 0 {
					t.Fatalf("seed %d: cycle %v does not start at its smallest owner", seed, c)
				}
			}
			if k > 0 && cycles[k-1][0].Compare(c[0]) >= 0 {
				t.Fatalf("seed %d: cycles out of order: %v", seed, cycles)
			}
			// Its component: owners on a cycle with c[0].
			for i := range owners {
				if i == int(c[0].ID) || (dist[c[0].ID][i] > 0 && dist[i][c[0].ID] > 0) {
					if seen[own(uint64(i))] {
						t.Fatalf("seed %d: two cycles from one component: %v", seed, cycles)
					}
					seen[own(uint64(i))] = true
				}
			}
		}
		for i := range owners {
			if cyclic[uint64(i)] && !seen[own(uint64(i))] {
				t.Fatalf("seed %d: owner %d is on a cycle but Cycles() = %v (edges %v)", seed, i, cycles, edges)
			}
		}
	}
}
