package fsm

import (
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
