package rangelock

import (
	"fmt"
	"testing"
)

var benchSizes = []int{1, 100, 10000}

// benchTable returns a table whose inode 1 holds n write locks of 64 other
// owners: record k covers [10k, 10k+4], leaving [10k+5, 10k+9] free.
func benchTable(b *testing.B, n int) *Table {
	b.Helper()
	tb := NewTable()
	for k := range n {
		o := Owner{Session: 2, ID: uint64(k % 64)}
		if c, err := tb.Set(1, o, Write, Range{int64(10 * k), int64(10*k + 4)}, 1); err != nil || len(c) > 0 {
			b.Fatalf("Set: %v %v", c, err)
		}
	}
	return tb
}

// BenchmarkSetUnlock: F_SETLK then F_UNLCK of a free range next to the others.
func BenchmarkSetUnlock(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			tb := benchTable(b, n)
			o := own(1)
			k := 0
			for b.Loop() {
				r := Range{int64(10*k + 5), int64(10*k + 7)}
				if c, err := tb.Set(1, o, Write, r, 1); err != nil || len(c) > 0 {
					b.Fatalf("Set: %v %v", c, err)
				}
				if _, err := tb.Set(1, o, Unlock, r, 1); err != nil {
					b.Fatal(err)
				}
				if k++; k == n {
					k = 0
				}
			}
		})
	}
}

// BenchmarkTest: F_GETLK over one record and the gap after it.
func BenchmarkTest(b *testing.B) {
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("records=%d", n), func(b *testing.B) {
			tb := benchTable(b, n)
			o := own(1)
			k := 0
			for b.Loop() {
				if _, found, err := tb.Test(1, o, Read, Range{int64(10 * k), int64(10*k + 7)}); err != nil || !found {
					b.Fatalf("Test: %v %v", found, err)
				}
				if k++; k == n {
					k = 0
				}
			}
		})
	}
}

// benchChain returns a graph where owner i waits for owner i+1, for n
// waits, closed into a cycle if closed.
func benchChain(b *testing.B, n int, closed bool) *Graph {
	b.Helper()
	g := NewGraph()
	for i := range n {
		next := own(uint64(i + 1))
		if closed && i == n-1 {
			next = own(0)
		}
		if err := g.Add(uint64(i), own(uint64(i)), []Owner{next}); err != nil {
			b.Fatal(err)
		}
	}
	return g
}

// BenchmarkWouldCycle: a wait for the head of a chain of n waits, by an
// owner outside it, so the check walks the whole chain and finds nothing.
func BenchmarkWouldCycle(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			g := benchChain(b, n, false)
			x := Owner{Session: 3, ID: 1}
			for b.Loop() {
				if c := g.WouldCycle(x, []Owner{own(0)}); c != nil {
					b.Fatalf("cycle %v", c)
				}
			}
		})
	}
}

// BenchmarkCycles: Cycles on a ring of n waits: one component, one cycle.
func BenchmarkCycles(b *testing.B) {
	for _, n := range []int{10, 1000, 10000} {
		b.Run(fmt.Sprintf("waiters=%d", n), func(b *testing.B) {
			g := benchChain(b, n, true)
			for b.Loop() {
				if c := g.Cycles(); len(c) != 1 || len(c[0]) != n {
					b.Fatalf("Cycles() = %d cycles", len(c))
				}
			}
		})
	}
}
