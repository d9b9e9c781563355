package fsm

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestSettingsThroughTheLog(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 4096, MaxInodes: 3})
	set := func(s *jfspb.Settings, initial bool) *jfspb.SetSettingsResponse {
		t.Helper()
		return h.mustApplyEntry(h.entry(cSetSettings, &jfspb.SetSettingsRequest{Settings: s, Initial: initial}, 0, 0, 0)).(*jfspb.SetSettingsResponse)
	}
	if s, ok := h.f.Settings(); !ok || s.BlockSize != 4096 || s.MaxInodes != 3 || s.Capacity != 0 {
		t.Fatalf("settings %v recorded %v, want block 4096, 3 inodes, no capacity", s, ok)
	}
	// A later initial entry (another node's first term, say) changes nothing.
	if r := set(&jfspb.Settings{BlockSize: 8192, Capacity: 10}, true); r.Errno != 0 || r.Settings.BlockSize != 4096 || r.Settings.Capacity != 0 {
		t.Fatalf("second initial settings: %v", r)
	}
	// Root + 2 inodes, then ENOSPC.
	h.mustCreate(RootIno, "a", false)
	f := h.mustCreate(RootIno, "b", false)
	mustErrno(t, h.do(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("c")}), syscall.ENOSPC)
	h.mustWrite(f.Ino, 0, []byte("data"))
	if st := h.f.StatFS(nil); st.TotalInodes != 3 || st.FreeInodes != 0 || st.TotalBytes != 0 || st.BlockSize != 4096 {
		t.Fatalf("statfs %v", st)
	}

	// With data stored the block size cannot change; the limits can.
	mustErrno(t, set(&jfspb.Settings{BlockSize: 8192}, false), syscall.EBUSY)
	mustErrno(t, set(&jfspb.Settings{BlockSize: MaxBlockSize + 1}, false), syscall.EINVAL)
	if r := set(&jfspb.Settings{Capacity: 8 << 10}, false); r.Errno != 0 || r.Settings.BlockSize != 4096 || r.Settings.MaxInodes != 0 {
		t.Fatalf("set capacity: %v", r)
	}
	h.mustMkdir(RootIno, "c") // no inode limit any more
	mustErrno(t, h.do(cWrite, &jfspb.WriteRequest{Ino: f.Ino, Data: make([]byte, 8<<10)}), syscall.ENOSPC)
	if st := h.f.StatFS(nil); st.TotalBytes != 8<<10 || st.FreeBytes != 8<<10-4 || st.TotalInodes != 0 {
		t.Fatalf("statfs %v", st)
	}
	// The settings survive a reopen: they are state, not options.
	h.mustReopen()
	if s, _ := h.f.Settings(); s.Capacity != 8<<10 || s.BlockSize != 4096 {
		t.Fatalf("after reopen: %v", s)
	}
}

// TestSetSettingsValidatesInApply: apply itself refuses block sizes that
// are not powers of two from MinBlockSize to MaxBlockSize (and, for the
// initial settings, a missing or non-power-of-two one), whoever proposed
// them, and a block size change waits until dead blocks are freed too.
func TestSetSettingsValidatesInApply(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 16})
	set := func(s *jfspb.Settings, initial bool) *jfspb.SetSettingsResponse {
		t.Helper()
		return h.mustApplyEntry(h.entry(cSetSettings, &jfspb.SetSettingsRequest{Settings: s, Initial: initial}, 0, 0, 0)).(*jfspb.SetSettingsResponse)
	}
	for _, bs := range []uint32{1, 4095, 3 << 10, 12 << 10, MaxBlockSize + 1, MaxBlockSize * 2} {
		mustErrno(t, set(&jfspb.Settings{BlockSize: bs}, false), syscall.EINVAL)
	}
	for _, bs := range []uint32{0, 3, 100, MaxBlockSize * 2} {
		mustErrno(t, set(&jfspb.Settings{BlockSize: bs}, true), syscall.EINVAL)
	}
	if s, _ := h.f.Settings(); s.BlockSize != 16 {
		t.Fatalf("block size %d after refused changes, want 16", s.BlockSize)
	}
	if r := set(&jfspb.Settings{BlockSize: MinBlockSize}, false); r.Errno != 0 || r.Settings.BlockSize != MinBlockSize {
		t.Fatalf("set %d: %v", MinBlockSize, r)
	}

}

// TestBlockSizeWaitsForPendingFrees: a dead range waiting for FreeData
// holds the block size as stored blocks do, even when no block is left
// stored: a FreeData step stopped inside the range, and the blocks left
// were rewritten and then punched out.
func TestBlockSizeWaitsForPendingFrees(t *testing.T) {
	const bs = MinBlockSize
	h := mustHarness(t, Options{BlockSize: bs})
	set := func(s *jfspb.Settings) *jfspb.SetSettingsResponse {
		t.Helper()
		return h.mustApplyEntry(h.entry(cSetSettings, &jfspb.SetSettingsRequest{Settings: s}, 0, 0, 0)).(*jfspb.SetSettingsResponse)
	}
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, bytes.Repeat([]byte{1}, FreeStep*bs))
	h.mustWrite(f.Ino, FreeStep*bs, bytes.Repeat([]byte{1}, bs))
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 0}))
	// One range counts against the budget: blocks 1023 and 1024 stay dead.
	mustOK(t, h.mustApplyEntry(h.entry(cFreeData, &jfspb.FreeDataRequest{MaxBlocks: FreeStep}, 0, 0, 0)))
	h.mustWrite(f.Ino, (FreeStep-1)*bs, make([]byte, 2*bs))
	mustOK(t, h.fallocate(f.Ino, fallocPunchHole|fallocKeepSize, (FreeStep-1)*bs, 2*bs))
	if n, _ := storedBlocks(t, h.f, f.Ino); n != 0 || !h.f.PendingFrees() {
		t.Fatalf("want no stored block but a pending free; %d blocks stored, pending %v", n, h.f.PendingFrees())
	}
	mustErrno(t, set(&jfspb.Settings{BlockSize: 2 * bs}), syscall.EBUSY)
	h.mustFreeAll()
	if r := set(&jfspb.Settings{BlockSize: 2 * bs}); r.Errno != 0 || r.Settings.BlockSize != 2*bs {
		t.Fatalf("set %d after freeing: %v", 2*bs, r)
	}
}
