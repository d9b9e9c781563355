package fsm

import (
	"bytes"
	"path/filepath"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestRootCreationTime: a new file system's root carries the time stamp of
// the first entry applied (not 1970), on every replica alike, once: neither
// later entries, a reopen nor a restore stamp it again.
func TestRootCreationTime(t *testing.T) {
	h := mustHarness(t, Options{})
	created := t0 + 1e9 // the harness's first entry registers its session
	if a := h.mustAttr(RootIno); a.AtimeNs != created || a.MtimeNs != created || a.CtimeNs != created {
		t.Fatalf("root times a=%d m=%d c=%d, want all %d", a.AtimeNs, a.MtimeNs, a.CtimeNs, created)
	}

	// A replica applying the same entries in other batches ends up with
	// the same state.
	r := mustOpen(t, filepath.Join(t.TempDir(), "replica.db"), Options{})
	var entries []Entry
	for _, e := range []struct {
		typ jfspb.CommandType
		req *jfspb.MkdirRequest
	}{{cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("a"), Mode: 0o755}}, {cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("b"), Mode: 0o755}}} {
		h.seq++
		entries = append(entries, h.entry(e.typ, e.req, h.sess, h.seq, 0))
	}
	if _, err := h.f.ApplyBatch(entries); err != nil {
		t.Fatal(err)
	}
	// The replica gets the register entry, the settings entry and the
	// mkdirs in one batch.
	reg := Entry{Index: 1, Term: 1, Data: mustEntryData(t, cRegister, &jfspb.RegisterRequest{Host: "h", ClientId: "client-1"}, created)}
	set := Entry{Index: 2, Term: 1, Data: mustEntryData(t, cSetSettings, &jfspb.SetSettingsRequest{Settings: h.f.InitialSettings(), Initial: true}, created)}
	if _, err := r.ApplyBatch(append([]Entry{reg, set}, entries...)); err != nil {
		t.Fatal(err)
	}
	mustSameDigest(t, h.f, r)
	a := h.mustAttr(RootIno)
	if a.AtimeNs != created || a.MtimeNs != h.now || a.CtimeNs != h.now {
		t.Fatalf("after mkdir: root times a=%d m=%d c=%d, want %d %d %d", a.AtimeNs, a.MtimeNs, a.CtimeNs, created, h.now, h.now)
	}

	// Reopened, or restored into a fresh file, the state is not stamped
	// again.
	h.mustReopen()
	mustOK(t, h.do(cSetXattr, &jfspb.SetXattrRequest{Ino: RootIno + 1, Name: []byte("user.x")}))
	if got := h.mustAttr(RootIno); got.AtimeNs != created {
		t.Fatalf("after reopen: root atime %d, want %d", got.AtimeNs, created)
	}
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	g := mustOpen(t, filepath.Join(t.TempDir(), "restored.db"), Options{})
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	next := h.entry(cSetXattr, &jfspb.SetXattrRequest{Ino: RootIno + 1, Name: []byte("user.y")}, h.sess, h.seq+1, 0)
	h.seq++
	h.mustApplyEntry(next)
	if _, err := g.ApplyBatch([]Entry{next}); err != nil {
		t.Fatal(err)
	}
	mustSameDigest(t, h.f, g)
}

func mustEntryData(t *testing.T, typ jfspb.CommandType, req proto.Message, now int64) []byte {
	t.Helper()
	body, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	data, err := Seal(&jfspb.LogEntry{Type: uint32(typ), TimeNs: now, Body: body})
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// TestTouchAtime: a touch moves the atime only under the relatime rule
// (not later than mtime or ctime, or a day old), and never the ctime; a
// read answers the attributes the reader decides with.
func TestTouchAtime(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, []byte("data"))
	touch := func() *jfspb.TouchAtimeResponse {
		t.Helper()
		r := h.do(cTouchAtime, &jfspb.TouchAtimeRequest{Ino: f.Ino}).(*jfspb.TouchAtimeResponse)
		mustOK(t, r)
		return r
	}
	before := h.mustAttr(f.Ino)
	if r := h.f.Read(&jfspb.ReadRequest{Ino: f.Ino, Size: 10}); r.Attr.GetAtimeNs() != before.AtimeNs || r.Attr.GetMtimeNs() != before.MtimeNs {
		t.Fatalf("read answered attr %v, want %v", r.Attr, before)
	}
	// Written after it was created: the atime is older than the mtime.
	r := touch()
	if !r.Updated || r.Attr.AtimeNs != h.now || r.Attr.CtimeNs != before.CtimeNs || r.Attr.MtimeNs != before.MtimeNs {
		t.Fatalf("first touch: updated %v, attr %v; want atime %d, m/ctime unchanged from %v", r.Updated, r.Attr, h.now, before)
	}
	touched := r.Attr.AtimeNs
	// Read again right after: nothing changes.
	if r := touch(); r.Updated || r.Attr.AtimeNs != touched {
		t.Fatalf("second touch: updated %v, atime %d, want %d", r.Updated, r.Attr.AtimeNs, touched)
	}
	// An hour old, newer than mtime and ctime: still nothing.
	hour, day := int64(3600e9), int64(24*3600e9)
	setTimes := func(atime, mtime, ctime int64) {
		t.Helper()
		mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: f.Ino,
			Valid:   uint32(jfspb.SetAttrMask_SET_ATTR_ATIME | jfspb.SetAttrMask_SET_ATTR_MTIME | jfspb.SetAttrMask_SET_ATTR_CTIME),
			AtimeNs: atime, MtimeNs: mtime, CtimeNs: ctime}))
	}
	setTimes(h.now-hour, h.now-2*hour, h.now-2*hour)
	if r := touch(); r.Updated {
		t.Fatalf("touch of an hour-old atime newer than m/ctime updated it: %v", r.Attr)
	}
	// A day old: updated. (The times were computed one entry before the
	// setattr applied, two before the touch.)
	setTimes(h.now-day, h.now-2*day, h.now-2*day)
	if r := touch(); !r.Updated || r.Attr.AtimeNs != h.now || r.Attr.CtimeNs != h.now-2e9-2*day {
		t.Fatalf("touch of a day-old atime: updated %v, attr %v", r.Updated, r.Attr)
	}
	// Changed since (ctime later than atime): updated.
	mustOK(t, h.do(cSetXattr, &jfspb.SetXattrRequest{Ino: f.Ino, Name: []byte("user.x")}))
	if r := touch(); !r.Updated {
		t.Fatalf("touch after a change did not update: %v", r.Attr)
	}
	mustErrno(t, h.do(cTouchAtime, &jfspb.TouchAtimeRequest{Ino: 999}), syscall.ENOENT)
}
