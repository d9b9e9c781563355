package rangelock

import (
	"fmt"
	"slices"
	"testing"
)

// modelK is the number of single bytes the model tracks; its byte index
// modelK stands for every offset from modelK up to MaxOffset. The fuzz ops
// use starts and lengths below 64, so no lock edge falls past modelK except
// MaxOffset itself.
const modelK = 130

// modelOwners are the owners of the fuzz ops: two sessions, so that
// Owner.Compare and the kernel's list order disagree.
var modelOwners = []Owner{{2, 1}, {1, 9}, {1, 2}, {2, 0}, {3, 5}}

// model is the naive twin of one inode of a Table: each owner's lock type at
// each byte, and the order in which owners went from holding nothing to
// holding something (the order of their groups in the kernel's list).
type model struct {
	typ  [][modelK + 1]Type // by owner index
	seq  []uint64
	next uint64
}

func newModel() *model {
	return &model{typ: make([][modelK + 1]Type, len(modelOwners)), seq: make([]uint64, len(modelOwners))}
}

// span maps r to the model's byte indexes [lo, hi].
func span(r Range) (lo, hi int) {
	if r.End == MaxOffset {
		return int(r.Start), modelK
	}
	if r.End >= modelK {
		panic(fmt.Sprintf("range %v reaches past the model's bytes", r))
	}
	return int(r.Start), int(r.End)
}

func (m *model) holds(i int) bool {
	for _, t := range m.typ[i] {
		if t != Unlock {
			return true
		}
	}
	return false
}

// conflicts returns the indexes of the owners other than o that hold a lock
// conflicting with typ somewhere in r.
func (m *model) conflicts(o int, typ Type, r Range) []int {
	lo, hi := span(r)
	var out []int
	for p := range m.typ {
		if p == o {
			continue
		}
		for b := lo; b <= hi; b++ {
			if h := m.typ[p][b]; h != Unlock && conflicts(h, typ) {
				out = append(out, p)
				break
			}
		}
	}
	return out
}

// set is F_SETLK: it returns the conflicting owners, or changes o's bytes.
func (m *model) set(o int, typ Type, r Range) []int {
	if typ != Unlock {
		if c := m.conflicts(o, typ, r); len(c) > 0 {
			return c
		}
	}
	had := m.holds(o)
	lo, hi := span(r)
	for b := lo; b <= hi; b++ {
		m.typ[o][b] = typ
	}
	if !had && m.holds(o) {
		m.seq[o] = m.next
		m.next++
	}
	return nil
}

func (m *model) release(o int) { m.typ[o] = [modelK + 1]Type{} }

// runs returns o's locks: the maximal runs of bytes of one type.
func (m *model) runs(o int) []Lock {
	var out []Lock
	row := &m.typ[o]
	for b := 0; b <= modelK; {
		if row[b] == Unlock {
			b++
			continue
		}
		e := b
		for e+1 <= modelK && row[e+1] == row[b] {
			e++
		}
		end := int64(e)
		if e == modelK {
			end = MaxOffset
		}
		out = append(out, Lock{Owner: modelOwners[o], Type: row[b], Range: Range{int64(b), end}, Pid: pidOf(modelOwners[o])})
		b = e + 1
	}
	return out
}

// order returns the indexes of the owners holding anything, in list order.
func (m *model) order() []int {
	var out []int
	for o := range m.typ {
		if m.holds(o) {
			out = append(out, o)
		}
	}
	slices.SortFunc(out, func(a, b int) int { return int(m.seq[a]) - int(m.seq[b]) })
	return out
}

// locks is the kernel's list: groups by seq, each by start.
func (m *model) locks() []Lock {
	var out []Lock
	for _, o := range m.order() {
		out = append(out, m.runs(o)...)
	}
	return out
}

// test is F_GETLK: the first conflicting lock in list order.
func (m *model) test(o int, typ Type, r Range) (Lock, bool) {
	for _, p := range m.order() {
		if p == o {
			continue
		}
		for _, l := range m.runs(p) {
			if l.Overlaps(r) && conflicts(l.Type, typ) {
				return l, true
			}
		}
	}
	return Lock{}, false
}

// fuzzOp is one decoded op.
type fuzzOp struct {
	owner         int
	kind          int // 0..2 Set Read/Write/Unlock, 3..4 Test Read/Write, 5 ReleasePosix
	start, length int64
}

func (op fuzzOp) String() string {
	kinds := []string{"set read", "set write", "set unlock", "test read", "test write", "release"}
	return fmt.Sprintf("%v %s start %d len %d", modelOwners[op.owner], kinds[op.kind], op.start, op.length)
}

// maxFuzzOps bounds a fuzz input. Longer inputs are ignored: the fuzzer
// minimises every new input with a quadratic number of runs, so long ones
// stall it, and 64 ops already reach every state of 5 owners that matters.
const maxFuzzOps = 64

// decodeOps reads three bytes per op: owner and kind, start, length.
func decodeOps(data []byte) []fuzzOp {
	var ops []fuzzOp
	for len(data) >= 3 {
		ops = append(ops, fuzzOp{
			owner:  int(data[0]>>4) % len(modelOwners),
			kind:   int(data[0]&0x0f) % 6,
			start:  int64(data[1] % 64),
			length: int64(data[2] % 64),
		})
		data = data[3:]
	}
	return ops
}

// encodeOps is decodeOps' inverse, for seeds.
func encodeOps(ops ...fuzzOp) []byte {
	var b []byte
	for _, op := range ops {
		b = append(b, byte(op.owner<<4|op.kind), byte(op.start), byte(op.length))
	}
	return b
}

func FuzzTableAgainstModel(f *testing.F) {
	op := func(owner, kind int, start, length int64) fuzzOp { return fuzzOp{owner, kind, start, length} }
	const sr, sw, su, tr, tw, rel = 0, 1, 2, 3, 4, 5
	f.Add([]byte{})
	// Merge, split, and unlock in the middle by one owner.
	f.Add(encodeOps(op(0, sr, 0, 10), op(0, sr, 5, 10), op(0, sw, 3, 4), op(0, su, 8, 2), op(1, tw, 0, 0)))
	// Readers share, a writer is refused, F_GETLK order across groups.
	f.Add(encodeOps(op(1, sr, 40, 10), op(0, sr, 0, 50), op(2, sw, 0, 0), op(2, tw, 0, 0), op(2, tr, 0, 0), op(3, tw, 45, 1)))
	// An owner leaves and comes back at the end of the list.
	f.Add(encodeOps(op(0, sw, 10, 5), op(1, sw, 20, 5), op(0, rel, 0, 0), op(0, sw, 0, 5), op(2, tw, 0, 0), op(1, su, 0, 0), op(2, tw, 0, 0)))
	// To-EOF locks and touching ranges of both types.
	f.Add(encodeOps(op(3, sr, 60, 0), op(3, sw, 30, 30), op(3, sr, 29, 1), op(4, tr, 63, 63), op(3, sw, 0, 0), op(4, tw, 0, 1)))
	// Every owner, interleaved, with upgrades in place.
	f.Add(encodeOps(op(0, sr, 0, 8), op(1, sr, 4, 8), op(2, sr, 8, 8), op(3, sr, 12, 8), op(4, sr, 16, 8),
		op(2, sw, 8, 8), op(2, tw, 0, 0), op(1, su, 0, 0), op(2, sw, 4, 12), op(4, tr, 0, 0)))

	f.Fuzz(checkAgainstModel)
}

// checkAgainstModel plays the ops data encodes on a Table and on the model,
// and checks every answer and the whole lock list after every op.
func checkAgainstModel(t *testing.T, data []byte) {
	const ino = 7
	if len(data) > 3*maxFuzzOps {
		return
	}
	tb := NewTable()
	m := newModel()
	ops := decodeOps(data)
	for i, op := range ops {
		o := modelOwners[op.owner]
		r, err := NewRange(op.start, op.length)
		if err != nil {
			t.Fatalf("op %d %v: NewRange: %v", i, op, err)
		}
		switch {
		case op.kind <= 2:
			typ := Type(op.kind + 1)
			if op.kind == 2 {
				typ = Unlock
			}
			got, err := tb.Set(ino, o, typ, r, pidOf(o))
			if err != nil {
				t.Fatalf("op %d %v: Set: %v", i, op, err)
			}
			want := m.set(op.owner, typ, r)
			if !sameOwnerSet(got, want) {
				t.Fatalf("op %d %v: Set conflicts %v, model %v\nops: %v", i, op, got, want, ops[:i+1])
			}
		case op.kind <= 4:
			typ := Type(op.kind - 2)
			got, found, err := tb.Test(ino, o, typ, r)
			if err != nil {
				t.Fatalf("op %d %v: Test: %v", i, op, err)
			}
			want, wfound := m.test(op.owner, typ, r)
			if found != wfound || got != want {
				t.Fatalf("op %d %v: Test = %v %v, model %v %v\nops: %v", i, op, got, found, want, wfound, ops[:i+1])
			}
		default:
			got := tb.ReleasePosix(ino, o)
			want := m.holds(op.owner)
			m.release(op.owner)
			if got != want {
				t.Fatalf("op %d %v: ReleasePosix = %v, model %v", i, op, got, want)
			}
		}
		locks := tb.Locks(ino)
		if want := m.locks(); !slices.Equal(locks, want) {
			t.Fatalf("op %d %v: Locks\n got %v\nwant %v\nops: %v", i, op, locks, want, ops[:i+1])
		}
		if empty := len(tb.Inodes()) == 0; empty != (len(locks) == 0) {
			t.Fatalf("op %d %v: Inodes() = %v with %d locks", i, op, tb.Inodes(), len(locks))
		}
		mustReplay(t, ino, locks)
	}
}

// sameOwnerSet reports whether got names exactly the model's owners.
func sameOwnerSet(got []Owner, want []int) bool {
	if len(got) != len(want) {
		return false
	}
	for _, i := range want {
		if !slices.Contains(got, modelOwners[i]) {
			return false
		}
	}
	return true
}

// mustReplay sets locks in order on a fresh Table, as the state machine
// rebuilds a table from a snapshot, and checks it ends with the same list.
func mustReplay(t *testing.T, ino uint64, locks []Lock) {
	t.Helper()
	tb := NewTable()
	for _, l := range locks {
		if c, err := tb.Set(ino, l.Owner, l.Type, l.Range, l.Pid); err != nil || len(c) > 0 {
			t.Fatalf("replaying %v: conflicts %v, error %v", l, c, err)
		}
	}
	if got := tb.Locks(ino); !slices.Equal(got, locks) {
		t.Fatalf("replay gives\n%v\nwant\n%v", got, locks)
	}
}
