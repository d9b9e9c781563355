package fsm

import (
	"bytes"
	"fmt"
	"runtime"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// storedBlocks counts the stored blocks of ino and the bytes they hold.
func storedBlocks(t *testing.T, f *FSM, ino uint64) (n int, size uint64) {
	t.Helper()
	if err := f.view(func(tx *txn) error {
		tx.scan(bucketBlock, u64(ino), func(_, v []byte) bool {
			n++
			size += uint64(len(v))
			return true
		})
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return n, size
}

// mustFreeAll applies FreeData until nothing is left, checking each step
// stays within FreeStep, and returns how many steps it took.
func (h *harness) mustFreeAll() int {
	h.t.Helper()
	for steps := 1; ; steps++ {
		r := h.mustApplyEntry(h.entry(cFreeData, &jfspb.FreeDataRequest{}, 0, 0, 0)).(*jfspb.FreeDataResponse)
		mustOK(h.t, r)
		if r.FreedBlocks > FreeStep {
			h.t.Fatalf("one FreeData deleted %d blocks, more than %d", r.FreedBlocks, FreeStep)
		}
		if !r.More {
			if h.f.PendingFrees() {
				h.t.Fatal("FreeData answered no more, but frees are pending")
			}
			return steps
		}
		if steps > 100 {
			h.t.Fatal("FreeData does not finish")
		}
	}
}

func mustSameDigest(t *testing.T, a, b *FSM) {
	t.Helper()
	ia, da := mustDigest(t, a)
	ib, db := mustDigest(t, b)
	if ia != ib || da != db {
		t.Fatalf("replicas differ: %d %x vs %d %x", ia, da, ib, db)
	}
}

// TestBigTruncateFreesInSteps: truncating a file of many blocks deletes at
// most one step's worth in its own apply; the cut data never shows again,
// not after extending the file nor around a new write into the cut range;
// FreeData commands free the rest in bounded steps; the accounting of
// stored bytes ends where it would have; replicas stay equal throughout.
func TestBigTruncateFreesInSteps(t *testing.T) {
	const bs = 16
	h := mustHarness(t, Options{BlockSize: bs})
	g := h.mustReplica(Options{BlockSize: 4096})
	f := h.mustCreate(RootIno, "big", false)
	const nblocks = 3*FreeStep + 100
	data := make([]byte, nblocks*bs)
	for i := range data {
		data[i] = byte(i%250) + 1
	}
	h.mustWrite(f.Ino, 0, data)
	if n, _ := storedBlocks(t, h.f, f.Ino); n != nblocks {
		t.Fatalf("%d blocks stored, want %d", n, nblocks)
	}

	setSize := func(size uint64) {
		t.Helper()
		mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: size}))
	}
	setSize(40) // inside block 2
	if n, _ := storedBlocks(t, h.f, f.Ino); nblocks-n > FreeStep {
		t.Fatalf("the truncate deleted %d blocks in one apply, more than %d", nblocks-n, FreeStep)
	}
	if a := h.mustAttr(f.Ino); a.Size != 40 {
		t.Fatalf("size %d after truncate, want 40", a.Size)
	}
	mustEqualBytes(t, "truncated", h.mustRead(f.Ino, 0, len(data)), data[:40])

	// Extending again reads zeros past 40, and a write into the cut range
	// shows only itself.
	setSize(uint64(len(data)))
	want := append(bytes.Clone(data[:40]), make([]byte, len(data)-40)...)
	mustEqualBytes(t, "extended", h.mustRead(f.Ino, 0, len(data)), want)
	h.mustWrite(f.Ino, 1000*bs+3, []byte("new"))
	copy(want[1000*bs+3:], "new")
	mustEqualBytes(t, "written into the cut range", h.mustRead(f.Ino, 0, len(data)), want)
	mustEqualBytes(t, "around the new write", h.mustRead(f.Ino, 1000*bs-bs, 3*bs), want[1000*bs-bs:1000*bs+2*bs])
	mustSameDigest(t, h.f, g)

	if steps := h.mustFreeAll(); steps < 3 {
		t.Errorf("freed %d dead blocks in %d steps, want at least 3 of at most %d", nblocks, steps, FreeStep)
	}
	// Left: blocks 0, 1, 2 (40 bytes) and block 1000 (6 bytes).
	n, stored := storedBlocks(t, h.f, f.Ino)
	if n != 4 || stored != 46 {
		t.Errorf("%d blocks of %d bytes left, want 4 of 46", n, stored)
	}
	if st := h.f.StatFS(nil); st.UsedBytes != stored {
		t.Errorf("used bytes %d, stored %d", st.UsedBytes, stored)
	}
	if a := h.mustAttr(f.Ino); a.Blocks != 1 {
		t.Errorf("attr blocks %d, want 1 (46 bytes)", a.Blocks)
	}
	mustEqualBytes(t, "after freeing", h.mustRead(f.Ino, 0, len(data)), want)
	mustSameDigest(t, h.f, g)

	// Removing a big file: the same, and nothing is left.
	h.mustWrite(f.Ino, 0, data)
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("big")}))
	if n, _ := storedBlocks(t, h.f, f.Ino); n < nblocks-FreeStep {
		t.Fatalf("the unlink deleted %d blocks in one apply, more than %d", nblocks-n, FreeStep)
	}
	h.mustFreeAll()
	if n, _ := storedBlocks(t, h.f, f.Ino); n != 0 {
		t.Errorf("%d blocks left of the removed file", n)
	}
	if st := h.f.StatFS(nil); st.UsedBytes != 0 {
		t.Errorf("used bytes %d after removing the only file", st.UsedBytes)
	}
	mustSameDigest(t, h.f, g)
}

// TestFallocateOverDeadBlocks: blocks cut off by a big truncate and not yet
// freed must never show their old bytes again, whether the range is
// allocated, zeroed or punched afterwards.
func TestFallocateOverDeadBlocks(t *testing.T) {
	const bs = 16
	for _, mode := range []uint32{0, fallocKeepSize, fallocZeroRange, fallocPunchHole | fallocKeepSize} {
		t.Run(fmt.Sprintf("mode%#x", mode), func(t *testing.T) {
			h := mustHarness(t, Options{BlockSize: bs})
			f := h.mustCreate(RootIno, "big", false)
			const nblocks = FreeStep + 100
			data := bytes.Repeat([]byte{0xAB}, nblocks*bs)
			h.mustWrite(f.Ino, 0, data)
			size := func(s uint64) {
				t.Helper()
				mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: s}))
			}
			size(5)            // the blocks from 1 on are dead, not yet freed
			size(nblocks * bs) // and the file reaches over them again
			mustOK(t, h.fallocate(f.Ino, mode, 3*bs+4, 20*bs))
			want := append(bytes.Clone(data[:5]), make([]byte, len(data)-5)...)
			mustEqualBytes(t, "after fallocate", h.mustRead(f.Ino, 0, len(data)), want)
			h.mustFreeAll()
			mustEqualBytes(t, "after freeing", h.mustRead(f.Ino, 0, len(data)), want)
			// Left: block 0 (5 bytes) and, unless punched, the allocated
			// range as stored zeros: blocks 3 to 22 whole, 4 bytes of 23.
			wantStored := uint64(5)
			if mode&fallocPunchHole == 0 {
				wantStored += 20*bs + 4
			}
			_, stored := storedBlocks(t, h.f, f.Ino)
			if used := h.f.StatFS(nil).UsedBytes; stored != wantStored || used != wantStored {
				t.Errorf("stored %d bytes, statfs says %d used, want %d", stored, used, wantStored)
			}
		})
	}
}

// TestBigPunchHoleFreesInSteps: punching a hole over many blocks deletes at
// most one step's worth in its own apply and reads only the two blocks it
// partly covers; the punched range reads as zeros, the bytes around it
// stay, a write into it shows only itself, FreeData frees the rest, a
// second hole next to the first and a truncate over both merge with it,
// and replicas stay equal throughout.
func TestBigPunchHoleFreesInSteps(t *testing.T) {
	const bs = 16
	h := mustHarness(t, Options{BlockSize: bs})
	g := h.mustReplica(Options{BlockSize: 4096})
	f := h.mustCreate(RootIno, "big", false)
	const nblocks = 3*FreeStep + 100
	data := make([]byte, nblocks*bs)
	for i := range data {
		data[i] = byte(i%250) + 1
	}
	h.mustWrite(f.Ino, 0, data)
	want := bytes.Clone(data)

	lo, hi := int64(2*bs+5), int64((nblocks-2)*bs+7)
	mustOK(t, h.fallocate(f.Ino, fallocPunchHole|fallocKeepSize, lo, hi-lo))
	clear(want[lo:hi])
	if n, _ := storedBlocks(t, h.f, f.Ino); nblocks-n > FreeStep {
		t.Fatalf("the punch deleted %d blocks in one apply, more than %d", nblocks-n, FreeStep)
	}
	if a := h.mustAttr(f.Ino); a.Size != uint64(len(data)) {
		t.Fatalf("size %d after punch, want %d", a.Size, len(data))
	}
	mustEqualBytes(t, "punched", h.mustRead(f.Ino, 0, len(data)), want)
	mustEqualBytes(t, "left edge", h.mustRead(f.Ino, 0, 4*bs), want[:4*bs])
	mustEqualBytes(t, "right edge", h.mustRead(f.Ino, (nblocks-4)*bs, 4*bs), want[(nblocks-4)*bs:])

	h.mustWrite(f.Ino, 1000*bs+3, []byte("new"))
	copy(want[1000*bs+3:], "new")
	mustEqualBytes(t, "written into the hole", h.mustRead(f.Ino, 999*bs, 3*bs), want[999*bs:1002*bs])
	mustSameDigest(t, h.f, g)

	h.mustFreeAll()
	// Left: blocks 0 and 1 whole, 5 bytes of block 2, 6 bytes of block
	// 1000, block nblocks-2 with its first 7 bytes zeroed, block nblocks-1.
	wantStored := uint64(2*bs + 5 + 6 + 2*bs)
	n, stored := storedBlocks(t, h.f, f.Ino)
	if n != 6 || stored != wantStored {
		t.Errorf("%d blocks of %d bytes left, want 6 of %d", n, stored, wantStored)
	}
	if st := h.f.StatFS(nil); st.UsedBytes != stored {
		t.Errorf("used bytes %d, stored %d", st.UsedBytes, stored)
	}
	if a := h.mustAttr(f.Ino); a.Blocks != (wantStored+511)/512 {
		t.Errorf("attr blocks %d, want %d", a.Blocks, (wantStored+511)/512)
	}
	mustEqualBytes(t, "after freeing", h.mustRead(f.Ino, 0, len(data)), want)
	mustSameDigest(t, h.f, g)

	// Two big holes side by side, then a truncate into the first: the
	// dead ranges merge and everything past the new end goes.
	h.mustWrite(f.Ino, 0, data)
	want = bytes.Clone(data)
	mustOK(t, h.fallocate(f.Ino, fallocPunchHole|fallocKeepSize, 0, (FreeStep+10)*bs))
	mustOK(t, h.fallocate(f.Ino, fallocPunchHole|fallocKeepSize, (FreeStep+10)*bs, (FreeStep+10)*bs))
	clear(want[:2*(FreeStep+10)*bs])
	mustEqualBytes(t, "two holes", h.mustRead(f.Ino, 0, len(data)), want)
	if rs := deadRangesOf(t, h.f, f.Ino); len(rs) != 1 || rs[0] != (blockRange{0, 2 * (FreeStep + 10)}) {
		t.Errorf("dead ranges %v, want one [0, %d)", rs, 2*(FreeStep+10))
	}
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 100 * bs}))
	mustEqualBytes(t, "truncated", h.mustRead(f.Ino, 0, len(data)), make([]byte, 100*bs))
	h.mustFreeAll()
	if n, _ := storedBlocks(t, h.f, f.Ino); n != 0 {
		t.Errorf("%d blocks left, want none", n)
	}
	if st := h.f.StatFS(nil); st.UsedBytes != 0 {
		t.Errorf("used bytes %d, want 0", st.UsedBytes)
	}
	mustSameDigest(t, h.f, g)
}

// deadRangesOf returns the dead ranges of ino.
func deadRangesOf(t *testing.T, f *FSM, ino uint64) []blockRange {
	t.Helper()
	var rs []blockRange
	if err := f.view(func(tx *txn) error {
		rs = tx.deadRanges(ino)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return rs
}

// TestFreeingLargeBlocksBoundedInBytes: with 4 MiB blocks, a truncate of
// more than FreeStepBytes of data does not delete it in its own apply, no
// step deletes more than FreeStepBytes, and neither the truncate nor a
// FreeData step copies the block data it deletes (it only needs lengths).
func TestFreeingLargeBlocksBoundedInBytes(t *testing.T) {
	const bs = MaxBlockSize
	h := mustHarness(t, Options{BlockSize: bs})
	f := h.mustCreate(RootIno, "big", false)
	const nblocks = FreeStepBytes/bs + 4
	block := bytes.Repeat([]byte{7}, bs)
	for i := range nblocks {
		h.mustWrite(f.Ino, int64(i)*bs, block)
	}
	// allocated runs apply and returns the bytes the process allocated
	// meanwhile.
	allocated := func(apply func()) uint64 {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		apply()
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	// Bolt itself rewrites the leaf pages around a cut (a leaf holds up to
	// two 4 MiB values), but copying the deleted data would pass this.
	const copyLimit = FreeStepBytes / 2
	if a := allocated(func() {
		mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 0}))
	}); a > copyLimit {
		t.Errorf("the truncate allocated %d bytes", a)
	}
	if _, stored := storedBlocks(t, h.f, f.Ino); nblocks*bs-stored > FreeStepBytes {
		t.Fatalf("the truncate deleted %d bytes in one apply, more than %d", nblocks*bs-stored, FreeStepBytes)
	}
	for steps := 1; h.f.PendingFrees(); steps++ {
		if steps > nblocks {
			t.Fatal("FreeData does not finish")
		}
		_, before := storedBlocks(t, h.f, f.Ino)
		if a := allocated(func() {
			mustOK(t, h.mustApplyEntry(h.entry(cFreeData, &jfspb.FreeDataRequest{}, 0, 0, 0)))
		}); a > copyLimit {
			t.Errorf("FreeData step %d allocated %d bytes", steps, a)
		}
		if _, after := storedBlocks(t, h.f, f.Ino); before-after > FreeStepBytes {
			t.Errorf("FreeData step %d deleted %d bytes, more than %d", steps, before-after, FreeStepBytes)
		}
	}
	if n, _ := storedBlocks(t, h.f, f.Ino); n != 0 {
		t.Errorf("%d blocks left", n)
	}
	if st := h.f.StatFS(nil); st.UsedBytes != 0 {
		t.Errorf("used bytes %d, want 0", st.UsedBytes)
	}
}
