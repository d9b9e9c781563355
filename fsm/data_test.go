package fsm

import (
	"bytes"
	"math/rand/v2"
	"slices"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestWriteRead(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 16})
	f := h.mustCreate(RootIno, "f", false)

	// Sparse: a write far past the end leaves a hole of zeros.
	h.mustWrite(f.Ino, 40, []byte("tail"))
	want := append(make([]byte, 40), "tail"...)
	mustEqualBytes(t, "sparse", h.mustRead(f.Ino, 0, 100), want)
	if a := h.mustAttr(f.Ino); a.Size != 44 || a.MtimeNs != h.now || a.CtimeNs != h.now {
		t.Fatalf("attr after write %v", a)
	}

	// Across block boundaries, then overwrite in the middle.
	data := []byte("0123456789abcdefghijklmnopqrstuvwxyzABCDEF")
	h.mustWrite(f.Ino, 5, data)
	want = append(want, make([]byte, 5+len(data)-len(want))...)
	copy(want[5:], data)
	mustEqualBytes(t, "across blocks", h.mustRead(f.Ino, 0, 100), want)
	h.mustWrite(f.Ino, 14, []byte("MIDDLE"))
	copy(want[14:], "MIDDLE")
	mustEqualBytes(t, "overwrite", h.mustRead(f.Ino, 0, 100), want)
	mustEqualBytes(t, "partial read", h.mustRead(f.Ino, 13, 8), want[13:21])
	mustEqualBytes(t, "read past end", h.mustRead(f.Ino, 100, 8), nil)

	// Truncate down into a block, then up: the cut bytes read as zeros.
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 20}))
	mustEqualBytes(t, "truncated", h.mustRead(f.Ino, 0, 100), want[:20])
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 50}))
	want = append(want[:20:20], make([]byte, 30)...)
	mustEqualBytes(t, "truncated up", h.mustRead(f.Ino, 0, 100), want)
	if a := h.mustAttr(f.Ino); a.Blocks != 1 {
		t.Fatalf("blocks %d, want 1 (20 stored bytes)", a.Blocks)
	}
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 0}))
	if st := h.f.StatFS(nil); st.UsedBytes != 0 {
		t.Fatalf("used bytes %d after truncate to 0", st.UsedBytes)
	}
}

func TestWriteErrnos(t *testing.T) {
	h := mustHarness(t, Options{Capacity: 1 << 20})
	f := h.mustCreate(RootIno, "f", false)
	d := h.mustMkdir(RootIno, "d")
	fifo := h.do(cMknod, &jfspb.MknodRequest{Parent: RootIno, Name: []byte("p"), Mode: syscall.S_IFIFO | 0o600}).(*jfspb.MknodResponse).Attr
	for _, tc := range []struct {
		name string
		ino  uint64
		off  int64
		n    int
		want syscall.Errno
	}{
		{"missing", 999, 0, 1, syscall.ENOENT},
		{"dir", d.Ino, 0, 1, syscall.EISDIR},
		{"fifo", fifo.Ino, 0, 1, syscall.EINVAL},
		{"negative offset", f.Ino, -1, 1, syscall.EINVAL},
		{"too big", f.Ino, 0, MaxWrite + 1, syscall.EFBIG},
		{"past max size", f.Ino, maxFileSize, 1, syscall.EFBIG},
		{"past capacity", f.Ino, 0, 1 << 20, syscall.ENOSPC},
		{"empty", f.Ino, 0, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustErrno(t, h.do(cWrite, &jfspb.WriteRequest{Ino: tc.ino, Offset: tc.off, Data: make([]byte, tc.n)}), tc.want)
		})
	}
	mustErrno(t, h.f.Read(&jfspb.ReadRequest{Ino: d.Ino, Size: 1}), syscall.EISDIR)
	mustErrno(t, h.f.Read(&jfspb.ReadRequest{Ino: 999, Size: 1}), syscall.ENOENT)
	mustErrno(t, h.f.Read(&jfspb.ReadRequest{Ino: f.Ino, Offset: -1, Size: 1}), syscall.EINVAL)
}

// TestDataModel compares random writes, truncates and reads with a plain
// []byte model.
func TestDataModel(t *testing.T) {
	for _, bs := range []int{1, 8, 64, 4096} { // block sizes are powers of two
		h := mustHarness(t, Options{BlockSize: bs})
		f := h.mustCreate(RootIno, "f", false)
		rng := rand.New(rand.NewPCG(uint64(bs), 42))
		var model []byte
		for i := range 300 {
			switch op := rng.IntN(10); {
			case op < 6:
				off := rng.IntN(3 * 4096)
				data := make([]byte, rng.IntN(2*bs+300))
				for j := range data {
					data[j] = byte(rng.IntN(255) + 1)
				}
				h.mustWrite(f.Ino, int64(off), data)
				if len(data) == 0 {
					break // changes nothing, not even the size
				}
				if end := off + len(data); end > len(model) {
					model = append(model, make([]byte, end-len(model))...)
				}
				copy(model[off:], data)
			case op < 8:
				size := rng.IntN(3 * 4096)
				mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: uint64(size)}))
				if size < len(model) {
					model = model[:size]
				} else {
					model = append(model, make([]byte, size-len(model))...)
				}
			default:
				off, n := rng.IntN(len(model)+10), rng.IntN(5000)
				got := h.mustRead(f.Ino, int64(off), n)
				var want []byte
				if off < len(model) {
					want = model[off:min(len(model), off+n)]
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("block size %d step %d: read(%d, %d) differs from the model", bs, i, off, n)
				}
			}
			if a := h.mustAttr(f.Ino); a.Size != uint64(len(model)) {
				t.Fatalf("block size %d step %d: size %d, model %d", bs, i, a.Size, len(model))
			}
		}
		mustEqualBytes(t, "whole file", h.mustRead(f.Ino, 0, len(model)+1), model)
		if st := h.f.StatFS(nil); st.UsedBytes > uint64(len(model)) {
			t.Fatalf("block size %d: %d bytes used for a %d-byte file", bs, st.UsedBytes, len(model))
		}
	}
}

func TestSetAttr(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	d := h.mustMkdir(RootIno, "d")
	fifo := h.do(cMknod, &jfspb.MknodRequest{Parent: RootIno, Name: []byte("p"), Mode: syscall.S_IFIFO | 0o600}).(*jfspb.MknodResponse).Attr
	set := func(req *jfspb.SetAttrRequest) *jfspb.SetAttrResponse {
		return h.do(cSetAttr, req).(*jfspb.SetAttrResponse)
	}
	const (
		mMode     = uint32(jfspb.SetAttrMask_SET_ATTR_MODE)
		mUID      = uint32(jfspb.SetAttrMask_SET_ATTR_UID)
		mGID      = uint32(jfspb.SetAttrMask_SET_ATTR_GID)
		mSize     = uint32(jfspb.SetAttrMask_SET_ATTR_SIZE)
		mAtime    = uint32(jfspb.SetAttrMask_SET_ATTR_ATIME)
		mMtime    = uint32(jfspb.SetAttrMask_SET_ATTR_MTIME)
		mAtimeNow = uint32(jfspb.SetAttrMask_SET_ATTR_ATIME_NOW)
		mMtimeNow = uint32(jfspb.SetAttrMask_SET_ATTR_MTIME_NOW)
		mCtime    = uint32(jfspb.SetAttrMask_SET_ATTR_CTIME)
	)
	r := set(&jfspb.SetAttrRequest{Ino: f.Ino, Valid: mMode | mUID | mGID, Mode: syscall.S_IFDIR | 0o4711, Uid: 10, Gid: 20})
	mustOK(t, r)
	if a := r.Attr; a.Mode != syscall.S_IFREG|0o4711 || a.Uid != 10 || a.Gid != 20 || a.CtimeNs != h.now {
		t.Fatalf("chmod/chown: %v", a)
	}
	r = set(&jfspb.SetAttrRequest{Ino: f.Ino, Valid: mAtime | mMtime, AtimeNs: 111, MtimeNs: 222})
	mustOK(t, r)
	if a := r.Attr; a.AtimeNs != 111 || a.MtimeNs != 222 || a.CtimeNs != h.now {
		t.Fatalf("utimes: %v", a)
	}
	r = set(&jfspb.SetAttrRequest{Ino: f.Ino, Valid: mAtimeNow | mMtimeNow})
	mustOK(t, r)
	if a := r.Attr; a.AtimeNs != h.now || a.MtimeNs != h.now {
		t.Fatalf("utimes now: %v", a)
	}
	r = set(&jfspb.SetAttrRequest{Ino: f.Ino, Valid: mCtime | mSize, CtimeNs: 5, Size: 10})
	mustOK(t, r)
	if a := r.Attr; a.CtimeNs != 5 || a.Size != 10 {
		t.Fatalf("ctime and size: %v", a)
	}
	mustErrno(t, set(&jfspb.SetAttrRequest{Ino: 999, Valid: mMode}), syscall.ENOENT)
	mustErrno(t, set(&jfspb.SetAttrRequest{Ino: d.Ino, Valid: mSize}), syscall.EISDIR)
	mustErrno(t, set(&jfspb.SetAttrRequest{Ino: fifo.Ino, Valid: mSize}), syscall.EINVAL)
	mustErrno(t, set(&jfspb.SetAttrRequest{Ino: f.Ino, Valid: 1 << 20}), syscall.EINVAL)
	mustErrno(t, set(&jfspb.SetAttrRequest{Ino: f.Ino, Valid: mSize, Size: 1 << 63}), syscall.EFBIG)
}

func TestStatFS(t *testing.T) {
	h := mustHarness(t, Options{Capacity: 1 << 30, MaxInodes: 4, BlockSize: 4096})
	st := h.f.StatFS(nil)
	mustOK(t, st)
	if st.TotalBytes != 1<<30 || st.UsedBytes != 0 || st.FreeBytes != 1<<30 || st.UsedInodes != 1 || st.FreeInodes != 3 || st.BlockSize != 4096 || st.NameMax != 255 {
		t.Fatalf("fresh statfs %v", st)
	}
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, make([]byte, 5000))
	st = h.f.StatFS(nil)
	if st.UsedBytes != 5000 || st.FreeBytes != 1<<30-5000 || st.UsedInodes != 2 {
		t.Fatalf("statfs %v", st)
	}
	h.mustMkdir(RootIno, "a")
	h.mustMkdir(RootIno, "b")
	mustErrno(t, h.do(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("c")}), syscall.ENOSPC)
}

func TestOpenRelease(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	d := h.mustMkdir(RootIno, "d")
	mustErrno(t, h.do(cOpen, &jfspb.OpenRequest{Ino: 999}), syscall.ENOENT)
	mustErrno(t, h.do(cOpen, &jfspb.OpenRequest{Ino: d.Ino, Flags: syscall.O_RDWR}), syscall.EISDIR)
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: d.Ino}))
	mustErrno(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino}), syscall.EBADF)
	h.mustWrite(f.Ino, 0, []byte("abc"))
	r := h.do(cOpen, &jfspb.OpenRequest{Ino: f.Ino, Flags: syscall.O_WRONLY | syscall.O_TRUNC}).(*jfspb.OpenResponse)
	mustOK(t, r)
	if r.Attr.Size != 0 {
		t.Fatalf("O_TRUNC left size %d", r.Attr.Size)
	}
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino}))
	mustErrno(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino}), syscall.EBADF)
}

const cReleaseBatch = jfspb.CommandType_COMMAND_TYPE_RELEASE_BATCH

// TestReleaseBatch: a batch applies each release as a single release would,
// answering each errno in order; an empty or oversized batch is EINVAL and
// releases nothing.
func TestReleaseBatch(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	g := h.mustCreate(RootIno, "g", false)
	for range 2 {
		mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: f.Ino}))
	}
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: g.Ino}))
	mustErrno(t, h.do(cReleaseBatch, &jfspb.ReleaseBatchRequest{}), syscall.EINVAL)
	big := &jfspb.ReleaseBatchRequest{}
	for range MaxReleaseBatch + 1 {
		big.Releases = append(big.Releases, &jfspb.ReleaseRequest{Ino: f.Ino})
	}
	mustErrno(t, h.do(cReleaseBatch, big), syscall.EINVAL)

	r := h.do(cReleaseBatch, &jfspb.ReleaseBatchRequest{Releases: []*jfspb.ReleaseRequest{
		{Ino: f.Ino}, {Ino: g.Ino}, {Ino: f.Ino}, {Ino: g.Ino}, {Ino: 999},
	}}).(*jfspb.ReleaseBatchResponse)
	mustOK(t, r)
	want := []int32{0, 0, 0, int32(syscall.EBADF), int32(syscall.EBADF)}
	if !slices.Equal(r.Errnos, want) {
		t.Fatalf("errnos %v, want %v", r.Errnos, want)
	}
	mustErrno(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino}), syscall.EBADF)
}
