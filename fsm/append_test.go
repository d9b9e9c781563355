package fsm

import (
	"bytes"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

const cFallocate = jfspb.CommandType_COMMAND_TYPE_FALLOCATE

// mustAppend appends data to ino in session sess with sequence number seq
// and returns the response.
func (h *harness) mustAppend(sess, seq, ino uint64, staleOff int64, data []byte) *jfspb.WriteResponse {
	h.t.Helper()
	r := h.mustApplyEntry(h.entry(cWrite, &jfspb.WriteRequest{Ino: ino, Offset: staleOff, Data: data, Append: true}, sess, seq, 0)).(*jfspb.WriteResponse)
	mustOK(h.t, r)
	if int(r.Written) != len(data) {
		h.t.Fatalf("appended %d of %d", r.Written, len(data))
	}
	return r
}

// TestAppendAtApplyTimeSize checks that an append lands at the size the
// file has when the command is applied, whatever offset the client
// believed in, so that appends from two sessions interleave whole and none
// overwrites another.
func TestAppendAtApplyTimeSize(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 16})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "log", false)

	var want []byte
	seq := map[uint64]uint64{}
	for i, step := range []struct {
		sess uint64
		line string
	}{
		{h.sess, "one from the first\n"},
		{other, "one from the second, which thought the file was empty\n"},
		{h.sess, "two from the first\n"},
		{h.sess, "three\n"},
		{other, "two from the second\n"},
	} {
		seq[step.sess]++
		// Every client sends offset 0: a stale size, as a kernel that
		// cached it would.
		r := h.mustAppend(step.sess, seq[step.sess]+100, f.Ino, 0, []byte(step.line))
		if r.Offset != int64(len(want)) {
			t.Fatalf("append %d went to %d, want %d (the size)", i, r.Offset, len(want))
		}
		want = append(want, step.line...)
		if r.Attr.Size != uint64(len(want)) {
			t.Fatalf("append %d: size %d, want %d", i, r.Attr.Size, len(want))
		}
	}
	mustEqualBytes(t, "appended lines", h.mustRead(f.Ino, 0, 1000), want)

	// An append after a truncate goes to the new end, and a negative offset
	// does not matter to an append.
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 5}))
	r := h.mustAppend(h.sess, 200, f.Ino, -7, []byte("END"))
	if r.Offset != 5 {
		t.Fatalf("append after truncate went to %d, want 5", r.Offset)
	}
	mustEqualBytes(t, "after truncate", h.mustRead(f.Ino, 0, 1000), append(want[:5:5], "END"...))

	// A plain write reports its own offset.
	w := h.do(cWrite, &jfspb.WriteRequest{Ino: f.Ino, Offset: 2, Data: []byte("x")}).(*jfspb.WriteResponse)
	if w.Errno != 0 || w.Offset != 2 {
		t.Fatalf("plain write answered %v", w)
	}
}

// TestAppendRetryOnce checks that an append retried with the same
// (session, seq), as a client does across a leader failover, is not
// applied twice.
func TestAppendRetryOnce(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "log", false)
	req := &jfspb.WriteRequest{Ino: f.Ino, Data: []byte("once\n"), Append: true}
	first := h.mustApplyEntry(h.entry(cWrite, req, h.sess, 50, 0)).(*jfspb.WriteResponse)
	again := h.mustApplyEntry(h.entry(cWrite, req, h.sess, 50, 0)).(*jfspb.WriteResponse)
	if first.Errno != 0 || again.Errno != 0 || again.Offset != first.Offset {
		t.Fatalf("first %v, retry %v", first, again)
	}
	mustEqualBytes(t, "after a retried append", h.mustRead(f.Ino, 0, 100), []byte("once\n"))
}

func TestAppendErrnos(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	d := h.mustMkdir(RootIno, "d")
	mustErrno(t, h.do(cWrite, &jfspb.WriteRequest{Ino: 999, Data: []byte("x"), Append: true}), syscall.ENOENT)
	mustErrno(t, h.do(cWrite, &jfspb.WriteRequest{Ino: d.Ino, Data: []byte("x"), Append: true}), syscall.EISDIR)
	mustErrno(t, h.do(cWrite, &jfspb.WriteRequest{Ino: f.Ino, Data: make([]byte, MaxWrite+1), Append: true}), syscall.EFBIG)
	// At the largest size, appending one more byte is EFBIG and changes
	// nothing.
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: maxFileSize}))
	mustErrno(t, h.do(cWrite, &jfspb.WriteRequest{Ino: f.Ino, Data: []byte("x"), Append: true}), syscall.EFBIG)
	if a := h.mustAttr(f.Ino); a.Size != maxFileSize || a.Blocks != 0 {
		t.Fatalf("attr after a refused append: %v", a)
	}
}

// fallocate applies a Fallocate command in the harness session.
func (h *harness) fallocate(ino uint64, mode uint32, off, length int64) *jfspb.FallocateResponse {
	h.t.Helper()
	return h.do(cFallocate, &jfspb.FallocateRequest{Ino: ino, Mode: mode, Offset: off, Length: length}).(*jfspb.FallocateResponse)
}

// pattern returns n bytes none of which is zero.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// TestFallocateModes checks each supported mode on 16-byte blocks: the data
// read back, the size, and the bytes stored (blocks and used bytes).
func TestFallocateModes(t *testing.T) {
	const (
		keep  = fallocKeepSize
		punch = fallocPunchHole | fallocKeepSize
		zero  = fallocZeroRange
	)
	zeroed := func(b []byte, lo, hi int) []byte {
		b = bytes.Clone(b)
		clear(b[lo:hi])
		return b
	}
	for _, tc := range []struct {
		name        string
		setup       func(h *harness, ino uint64) // the file before
		mode        uint32
		off, length int64
		want        []byte // the file after
		stored      uint64 // bytes stored after
		mtime       bool   // whether mtime moves
	}{
		{name: "allocate extends an empty file with stored zeros",
			mode: 0, off: 4, length: 30, want: make([]byte, 34), stored: 34, mtime: true},
		{name: "allocate inside the data changes nothing",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 0, pattern(40)) },
			mode:  0, off: 3, length: 20, want: pattern(40), stored: 40},
		{name: "allocate fills holes and extends",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 40, []byte("xy")) },
			mode:  0, off: 0, length: 50, want: append(append(make([]byte, 40), "xy"...), make([]byte, 8)...), stored: 50, mtime: true},
		{name: "keep size fills holes below the size only",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 40, []byte("xy")) },
			mode:  keep, off: 0, length: 100, want: append(make([]byte, 40), "xy"...), stored: 42},
		{name: "keep size past the end stores nothing",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 0, pattern(10)) },
			mode:  keep, off: 20, length: 100, want: pattern(10), stored: 10},
		{name: "punch frees whole blocks, trims a block it ends and zeroes inside one",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 0, pattern(48)) },
			mode:  punch, off: 10, length: 30, want: zeroed(pattern(48), 10, 40), stored: 26, mtime: true},
		{name: "punch to past the end trims the last block and keeps the size",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 0, pattern(48)) },
			mode:  punch, off: 40, length: 100, want: zeroed(pattern(48), 40, 48), stored: 40, mtime: true},
		{name: "punch everything",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 0, pattern(48)) },
			mode:  punch, off: 0, length: 48, want: make([]byte, 48), stored: 0, mtime: true},
		{name: "punch a hole in a hole",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 60, []byte("z")) },
			mode:  punch, off: 0, length: 40, want: append(make([]byte, 60), 'z'), stored: 13, mtime: true},
		{name: "zero range zeroes, stores and extends",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 0, pattern(48)) },
			mode:  zero, off: 20, length: 40, want: append(zeroed(pattern(48), 20, 48), make([]byte, 12)...), stored: 60, mtime: true},
		{name: "zero range keeping the size",
			setup: func(h *harness, ino uint64) { h.mustWrite(ino, 30, pattern(18)) },
			mode:  zero | keep, off: 0, length: 100, want: make([]byte, 48), stored: 48, mtime: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustHarness(t, Options{BlockSize: 16})
			f := h.mustCreate(RootIno, "f", false)
			if tc.setup != nil {
				tc.setup(h, f.Ino)
			}
			before := h.mustAttr(f.Ino)
			r := h.fallocate(f.Ino, tc.mode, tc.off, tc.length)
			mustOK(t, r)
			a := h.mustAttr(f.Ino)
			if a.Size != uint64(len(tc.want)) || r.Attr.Size != a.Size {
				t.Fatalf("size %d (answered %d), want %d", a.Size, r.Attr.Size, len(tc.want))
			}
			mustEqualBytes(t, "data", h.mustRead(f.Ino, 0, 1000), tc.want)
			if used := h.f.StatFS(nil).UsedBytes; used != tc.stored {
				t.Fatalf("stored %d bytes, want %d", used, tc.stored)
			}
			if wantBlocks := (tc.stored + 511) / 512; a.Blocks != wantBlocks {
				t.Fatalf("blocks %d, want %d", a.Blocks, wantBlocks)
			}
			if a.CtimeNs != h.now {
				t.Fatalf("ctime not stamped")
			}
			if moved := a.MtimeNs != before.MtimeNs; moved != tc.mtime {
				t.Fatalf("mtime moved: %v, want %v", moved, tc.mtime)
			}
			// What is stored survives a restart of the state machine.
			h.mustReopen()
			mustEqualBytes(t, "data after reopen", h.mustRead(f.Ino, 0, 1000), tc.want)
		})
	}
}

// TestFallocateThenWrite checks that allocated and punched ranges behave as
// data afterwards: a write into them is read back, and truncating frees
// what was allocated.
func TestFallocateThenWrite(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 16})
	f := h.mustCreate(RootIno, "f", false)
	mustOK(t, h.fallocate(f.Ino, 0, 0, 64))
	h.mustWrite(f.Ino, 10, []byte("hello"))
	want := make([]byte, 64)
	copy(want[10:], "hello")
	mustEqualBytes(t, "write into allocated", h.mustRead(f.Ino, 0, 100), want)
	mustOK(t, h.fallocate(f.Ino, fallocPunchHole|fallocKeepSize, 8, 4))
	copy(want[8:12], []byte{0, 0, 0, 0})
	mustEqualBytes(t, "punched", h.mustRead(f.Ino, 0, 100), want)
	if used := h.f.StatFS(nil).UsedBytes; used != 64 {
		t.Fatalf("stored %d bytes, want 64", used)
	}
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 0}))
	if used := h.f.StatFS(nil).UsedBytes; used != 0 {
		t.Fatalf("stored %d bytes after truncating to 0", used)
	}
}

func TestFallocateErrnos(t *testing.T) {
	h := mustHarness(t, Options{Capacity: 1 << 20})
	f := h.mustCreate(RootIno, "f", false)
	d := h.mustMkdir(RootIno, "d")
	fifo := h.do(cMknod, &jfspb.MknodRequest{Parent: RootIno, Name: []byte("p"), Mode: syscall.S_IFIFO | 0o600}).(*jfspb.MknodResponse).Attr
	for _, tc := range []struct {
		name        string
		ino         uint64
		mode        uint32
		off, length int64
		want        syscall.Errno
	}{
		{"missing", 999, 0, 0, 1, syscall.ENOENT},
		{"dir", d.Ino, 0, 0, 1, syscall.EISDIR},
		{"fifo", fifo.Ino, 0, 0, 1, syscall.ENODEV},
		{"zero length", f.Ino, 0, 0, 0, syscall.EINVAL},
		{"negative offset", f.Ino, 0, -1, 1, syscall.EINVAL},
		{"punch without keep size", f.Ino, fallocPunchHole, 0, 1, syscall.EOPNOTSUPP},
		{"collapse range", f.Ino, 0x08, 0, 16, syscall.EOPNOTSUPP},
		{"insert range", f.Ino, 0x20, 0, 16, syscall.EOPNOTSUPP},
		{"unshare range", f.Ino, 0x40, 0, 16, syscall.EOPNOTSUPP},
		{"past max size", f.Ino, 0, maxFileSize, 1, syscall.EFBIG},
		{"more than one command stores", f.Ino, 0, 0, MaxFallocate + 1, syscall.EFBIG},
		{"past capacity", f.Ino, 0, 0, 1 << 20, syscall.ENOSPC},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustErrno(t, h.fallocate(tc.ino, tc.mode, tc.off, tc.length), tc.want)
		})
	}
	if a := h.mustAttr(f.Ino); a.Size != 0 || a.Blocks != 0 {
		t.Fatalf("refused commands changed the file: %v", a)
	}
}
