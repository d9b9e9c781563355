package fsm

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Every byte of a sealed entry is covered: flipping any one of them is
// refused with ErrChecksum naming the index, and nothing is applied.
func TestChecksumRefusesFlippedBytes(t *testing.T) {
	h := mustHarness(t, Options{})
	e := h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("d"), Mode: 0o755}, h.sess, 100, 0)
	_, before := mustDigest(t, h.f)
	for i := range e.Data {
		bad := Entry{Index: e.Index, Term: e.Term, Data: bytes.Clone(e.Data)}
		bad.Data[i] ^= 0x01
		_, err := h.f.ApplyBatch([]Entry{bad})
		if !errors.Is(err, ErrChecksum) && !errors.Is(err, ErrCorruptEntry) {
			t.Fatalf("byte %d flipped: got %v, want a checksum error", i, err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("index %d", e.Index)) {
			t.Fatalf("byte %d flipped: error %q does not name index %d", i, err, e.Index)
		}
	}
	if _, after := mustDigest(t, h.f); after != before {
		t.Fatal("a refused entry changed the state")
	}
	// Unsealed: refused too.
	var env jfspb.LogEntry
	if err := proto.Unmarshal(e.Data, &env); err != nil {
		t.Fatal(err)
	}
	env.Crc32C = 0
	plain, _ := proto.Marshal(&env)
	if _, err := h.f.ApplyBatch([]Entry{{Index: e.Index, Term: e.Term, Data: plain}}); !errors.Is(err, ErrChecksum) {
		t.Fatalf("unsealed entry: got %v, want ErrChecksum", err)
	}
	// The intact entry applies.
	mustOK(t, h.mustApplyEntry(e))
	if e := h.lookupErrno(RootIno, "d"); e != 0 {
		t.Fatalf("lookup d: %v", e)
	}
}

// A checkpoint in the middle of a batch hands the listener a view of the
// state exactly as of its index, whatever follows it in the batch.
func TestCheckpointDigestAtItsIndex(t *testing.T) {
	a := mustHarness(t, Options{})
	b := mustHarness(t, Options{})
	type got struct {
		index uint64
		sum   [32]byte
	}
	var seen []got
	a.f.SetCheckpointListener(func(index uint64, s *Snapshot) {
		defer s.Release()
		sum, err := s.Digest()
		if err != nil {
			t.Errorf("digest: %v", err)
		}
		seen = append(seen, got{index, sum})
	})
	e1 := a.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("x"), Mode: 0o755}, a.sess, 10, 0)
	cp := a.entry(jfspb.CommandType_COMMAND_TYPE_CHECKPOINT, &jfspb.CheckpointRequest{}, 0, 0, 0)
	e3 := a.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("y"), Mode: 0o755}, a.sess, 11, 0)
	rs, err := a.f.ApplyBatch([]Entry{e1, cp, e3})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, rs[0].Resp)
	if r := rs[1].Resp.(*jfspb.CheckpointResponse); r.Index != cp.Index {
		t.Fatalf("checkpoint response %v, want index %d", r, cp.Index)
	}
	mustOK(t, rs[2].Resp)
	if len(seen) != 1 || seen[0].index != cp.Index {
		t.Fatalf("listener saw %v, want one checkpoint at %d", seen, cp.Index)
	}
	// b applies the same entries up to the checkpoint only.
	if _, err := b.f.ApplyBatch([]Entry{e1, cp}); err != nil {
		t.Fatal(err)
	}
	if _, want := mustDigest(t, b.f); seen[0].sum != want {
		t.Fatal("checkpoint digest differs from the state at its index")
	}
	if _, now := mustDigest(t, a.f); now == seen[0].sum {
		t.Fatal("the entry after the checkpoint is in its digest")
	}
}

// A corrupt mark survives a member's address update and goes with its
// removal.
func TestMarkCorrupt(t *testing.T) {
	h := mustHarness(t, Options{})
	apply := func(typ jfspb.CommandType, req proto.Message) proto.Message {
		return h.mustApplyEntry(h.entry(typ, req, 0, 0, 0))
	}
	member := jfspb.CommandType_COMMAND_TYPE_SET_MEMBER
	mustOK(t, apply(member, &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "n2", Address: "a:1", ApiAddr: "b:1"}}))
	mustOK(t, apply(jfspb.CommandType_COMMAND_TYPE_MARK_CORRUPT, &jfspb.MarkCorruptRequest{NodeId: "n2", Index: 7, Reason: "digest differs"}))
	mustOK(t, apply(member, &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "n2", Address: "a:2", ApiAddr: "b:2"}}))
	m := h.f.Member("n2")
	if m.GetAddress() != "a:2" || !strings.Contains(m.GetCorrupt(), "index 7") {
		t.Fatalf("member after update: %v", m)
	}
	mustOK(t, apply(member, &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "n2"}, Remove: true}))
	mustOK(t, apply(member, &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "n2", Address: "a:3"}}))
	if m := h.f.Member("n2"); m.GetCorrupt() != "" {
		t.Fatalf("mark survived removal: %v", m)
	}
	if r := apply(jfspb.CommandType_COMMAND_TYPE_MARK_CORRUPT, &jfspb.MarkCorruptRequest{}); errnoOf(r.(jfspb.Errno)) != syscall.EINVAL {
		t.Fatalf("mark without node id: %v", r)
	}
}

// A snapshot that is a bolt file of this format but whose lock table does
// not load is refused, and the FSM keeps serving and applying its old state.
func TestRestoreFailureKeepsServing(t *testing.T) {
	h := mustHarness(t, Options{})
	h.mustCreate(RootIno, "keep", false)

	// A snapshot of another FSM, with a damaged plock record.
	other := mustHarness(t, Options{})
	other.f.Close()
	db, err := bolt.Open(other.path, 0o600, nil)
	if err != nil {
		t.Fatal(err)
	}
	err = db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketPlock).Put(u64(99), []byte{1, 2, 3}) })
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	stream, err := os.Open(other.path)
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	if err := h.f.Restore(stream); !errors.Is(err, ErrBadSnapshot) {
		t.Fatalf("Restore of a bad snapshot: %v, want ErrBadSnapshot", err)
	}
	if e := h.lookupErrno(RootIno, "keep"); e != 0 {
		t.Fatalf("old state lost: lookup keep: %v", e)
	}
	h.mustCreate(RootIno, "after", false) // apply still works
}

// A damaged state file is refused at Open with one clear error, never a
// crash: truncated, torn (size not a multiple of the page size), or with
// both meta pages overwritten.
func TestOpenDamagedStateFile(t *testing.T) {
	h := mustHarness(t, Options{})
	for i := range 200 {
		h.mustCreate(RootIno, fmt.Sprintf("file-%03d-%s", i, strings.Repeat("x", 100)), false)
	}
	h.f.Close()
	good, err := os.ReadFile(h.path)
	if err != nil {
		t.Fatal(err)
	}
	page := os.Getpagesize()
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
		reason string
	}{
		{"truncated", func(b []byte) []byte { return b[:len(b)/2/page*page] }, "truncated"},
		{"torn", func(b []byte) []byte { return b[:len(b)-100] }, "not a multiple of the page size"},
		{"both meta pages", func(b []byte) []byte {
			b[16+20] ^= 0xff
			b[page+16+20] ^= 0xff
			return b
		}, "both meta pages are invalid"},
		{"page headers", func(b []byte) []byte {
			for p := 2 * page; p < len(b); p += page {
				b[p+8] ^= 0xff // the page's flags: its type
			}
			return b
		}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "fsm.db")
			if err := os.WriteFile(path, tc.damage(bytes.Clone(good)), 0o600); err != nil {
				t.Fatal(err)
			}
			// Closed cleanly, damaged afterwards: refused, at every start.
			if err := os.WriteFile(CleanMarker(path), nil, 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path, Options{})
			if err == nil {
				f.Close()
				t.Fatal("Open accepted a damaged file")
			}
			msg := err.Error()
			if !errors.Is(err, ErrDamaged) || !strings.HasPrefix(msg, "fsm.db is damaged: ") ||
				!strings.Contains(msg, tc.reason) || !strings.Contains(msg, "remove it to rebuild") || strings.Contains(msg, "\n") {
				t.Fatalf("error %q: want one line naming fsm.db, %q and the remedy", msg, tc.reason)
			}
			t.Log(msg)
		})
	}
}

// A page damaged while the FSM runs makes a read fail with EIO (and Digest
// with an error) instead of crashing the process.
func TestReadOfDamagedPageIsEIO(t *testing.T) {
	h := mustHarness(t, Options{})
	var attrs []*jfspb.Attr
	for i := range 200 {
		attrs = append(attrs, h.mustCreate(RootIno, fmt.Sprintf("file-%03d-%s", i, strings.Repeat("x", 100)), false))
	}
	fh, err := os.OpenFile(h.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := fh.Stat()
	if err != nil {
		t.Fatal(err)
	}
	page := int64(os.Getpagesize())
	for p := 2 * page; p < fi.Size(); p += page {
		if _, err := fh.WriteAt([]byte{0xfe, 0xff}, p+8); err != nil { // the page's type
			t.Fatal(err)
		}
	}
	fh.Close()
	failed := 0
	for _, a := range attrs {
		if r := h.f.GetAttr(&jfspb.GetAttrRequest{Ino: a.Ino}); r.Errno == int32(syscall.EIO) {
			failed++
		}
	}
	if failed == 0 {
		t.Fatal("no read saw the damage")
	}
	if _, _, err := h.f.Digest(); !errors.Is(err, ErrDamaged) {
		t.Fatalf("Digest of a damaged state: %v, want ErrDamaged", err)
	}
}

// An existing cluster's log starts with entries written before entries
// were sealed. They apply until the first sealed entry; after it an entry
// without a checksum is refused, also on a replica restored from a snapshot
// taken after it. A wrong checksum is refused before sealing too, and an
// old entry whose last bytes merely look like a checksum field is accepted.
func TestUnsealedEntriesOnlyBeforeTheFirstSealed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	f := mustOpen(t, path, Options{})
	var index uint64
	old := func(typ jfspb.CommandType, req proto.Message, sess, seq uint64) Entry {
		t.Helper()
		body, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		index++
		data, err := proto.Marshal(&jfspb.LogEntry{Type: uint32(typ), Session: sess, Seq: seq, TimeNs: t0 + int64(index)*1e9, Body: body})
		if err != nil {
			t.Fatal(err)
		}
		return Entry{Index: index, Term: 1, Data: data}
	}
	sealed := func(typ jfspb.CommandType, req proto.Message, sess, seq uint64) Entry {
		t.Helper()
		e := old(typ, req, sess, seq)
		var env jfspb.LogEntry
		if err := proto.Unmarshal(e.Data, &env); err != nil {
			t.Fatal(err)
		}
		data, err := Seal(&env)
		if err != nil {
			t.Fatal(err)
		}
		e.Data = data
		return e
	}
	apply := func(f *FSM, es ...Entry) ([]Result, error) {
		t.Helper()
		return f.ApplyBatch(es)
	}
	mkdir := func(name string) *jfspb.MkdirRequest {
		return &jfspb.MkdirRequest{Parent: RootIno, Name: []byte(name), Mode: 0o755}
	}

	reg := old(cRegister, &jfspb.RegisterRequest{Host: "h", ClientId: "c"}, 0, 0)
	rs, err := apply(f, reg)
	if err != nil {
		t.Fatalf("old register: %v", err)
	}
	sess := rs[0].Resp.(*jfspb.RegisterResponse).Session
	// An old entry whose body ends with the bytes of a checksum field.
	tricky := mkdir("a")
	tricky.Mode = 0 // so that the name is the last thing in the body
	tricky.Name = append(append([]byte("a"), checksumField...), 1, 2, 3, 4)
	tail := old(cMkdir, tricky, sess, 1)
	if !bytes.Equal(tail.Data[len(tail.Data)-checksumLen:][:len(checksumField)], checksumField) {
		t.Fatal("the entry does not end like a sealed one")
	}
	if _, err := apply(f, tail, old(cMkdir, mkdir("b"), sess, 2)); err != nil {
		t.Fatalf("old entries: %v", err)
	}
	// A wrong checksum is refused even before sealing.
	bad := sealed(cMkdir, mkdir("x"), sess, 3)
	bad.Data[len(bad.Data)-1] ^= 0xff
	if _, err := apply(f, bad); !errors.Is(err, ErrChecksum) {
		t.Fatalf("wrong checksum before sealing: got %v, want ErrChecksum", err)
	}
	index--
	if _, err := apply(f, sealed(cMkdir, mkdir("c"), sess, 3), sealed(cMkdir, mkdir("d"), sess, 4)); err != nil {
		t.Fatalf("sealed entries after old ones: %v", err)
	}
	for _, name := range []string{string(tricky.Name), "b", "c", "d"} {
		if e := errnoOf(f.Lookup(&jfspb.LookupRequest{Parent: RootIno, Name: []byte(name)})); e != 0 {
			t.Fatalf("lookup %q: %v", name, e)
		}
	}

	// A replica restored from a snapshot knows the log is sealed.
	g := mustOpen(t, filepath.Join(t.TempDir(), "replica.db"), Options{})
	snap, err := f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	_, err = snap.WriteTo(&buf)
	snap.Release()
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Restore(&buf); err != nil {
		t.Fatal(err)
	}
	late := old(cMkdir, mkdir("e"), sess, 5)
	for name, fsm := range map[string]*FSM{"node": f, "restored replica": g} {
		if _, err := apply(fsm, late); !errors.Is(err, ErrChecksum) {
			t.Fatalf("%s: old entry after sealed ones: got %v, want ErrChecksum", name, err)
		}
	}
	if e := errnoOf(f.Lookup(&jfspb.LookupRequest{Parent: RootIno, Name: []byte("e")})); e != syscall.ENOENT {
		t.Fatalf("the refused entry applied: lookup e: %v", e)
	}
}

// Restore does not wait for the snapshots still open on the old state: raft
// may hold one while its main goroutine waits for the Restore of an
// InstallSnapshot, and a node restarted after a kill hung there for good
// (TestCrashLoopKeepsAcknowledgedWrites). The open snapshot goes on reading
// the state it was taken from.
func TestRestoreWithSnapshotOpen(t *testing.T) {
	h := mustHarness(t, Options{})
	h.mustCreate(RootIno, "old", false)
	// The stream to restore: a state with "new" only.
	src := mustHarness(t, Options{})
	src.mustCreate(RootIno, "new", false)
	snap, err := src.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var stream bytes.Buffer
	if _, err := snap.WriteTo(&stream); err != nil {
		t.Fatal(err)
	}
	snap.Release()

	open, err := h.f.Snapshot() // held across the Restore, as raft may
	if err != nil {
		t.Fatal(err)
	}
	defer open.Release()
	done := make(chan error, 1)
	go func() { done <- h.f.Restore(&stream) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Restore: %v", err)
		}
	case <-time.After(30 * time.Second):
		open.Release() // lets the old code's Restore finish
		<-done
		t.Fatal("Restore waited for a snapshot of the old state to be released")
	}
	if e := h.lookupErrno(RootIno, "new"); e != 0 {
		t.Fatalf("after Restore, lookup new: %v", e)
	}
	if e := h.lookupErrno(RootIno, "old"); e != syscall.ENOENT {
		t.Fatalf("after Restore, lookup old: %v, want ENOENT", e)
	}
	// The snapshot still reads the old state, whole.
	var old bytes.Buffer
	if _, err := open.WriteTo(&old); err != nil {
		t.Fatalf("the open snapshot after Restore: %v", err)
	}
	open.Release()
	h.mustCreate(RootIno, "after", false) // apply goes on
}
