package fsm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// mustPopulate builds a small tree with data, xattrs and locks.
func mustPopulate(h *harness) {
	h.t.Helper()
	d := h.mustMkdir(RootIno, "dir")
	f := h.mustCreate(d.Ino, "file", true)
	h.mustWrite(f.Ino, 3, []byte("some data across blocks"))
	mustOK(h.t, h.do(cSymlink, &jfspb.SymlinkRequest{Parent: RootIno, Name: []byte("ln"), Target: []byte("dir/file")}))
	mustOK(h.t, h.do(cSetXattr, &jfspb.SetXattrRequest{Ino: f.Ino, Name: []byte("user.k"), Value: []byte("v")}))
	mustOK(h.t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 7, Type: jfspb.LockType_LOCK_TYPE_WRITE, Start: 0, Len: 10, Pid: 70}))
	mustOK(h.t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 8, Type: jfspb.LockType_LOCK_TYPE_READ, Start: 20, Len: 0, Pid: 80}))
	mustOK(h.t, h.do(cFlock, &jfspb.FlockRequest{Ino: f.Ino, Fh: 1, Type: jfspb.LockType_LOCK_TYPE_READ, Pid: 70}))
}

func mustDigest(t testing.TB, f *FSM) (uint64, [32]byte) {
	t.Helper()
	idx, sum, err := f.Digest()
	if err != nil {
		t.Fatalf("Digest: %v", err)
	}
	return idx, sum
}

func TestSnapshotRestore(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 8})
	mustPopulate(h)
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	// Changes after the snapshot are not in it.
	wantIdx, want := mustDigest(t, h.f)
	h.mustMkdir(RootIno, "later")
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		t.Fatal(err)
	}
	snap.Release()
	snap.Release()

	g := mustOpen(t, filepath.Join(t.TempDir(), "other.db"), Options{BlockSize: 8})
	g.mkdirForTest(t)
	if err := g.Restore(&buf); err != nil {
		t.Fatalf("Restore: %v", err)
	}
	gotIdx, got := mustDigest(t, g)
	if gotIdx != wantIdx || got != want || g.AppliedIndex() != wantIdx {
		t.Fatalf("restored digest %d %x, want %d %x", gotIdx, got, wantIdx, want)
	}
	fileIno := h.mustLookup(h.mustLookup(RootIno, "dir").Ino, "file").Ino
	for _, q := range []struct {
		name     string
		from, to proto.Message
	}{
		{"getattr", h.f.GetAttr(&jfspb.GetAttrRequest{Ino: fileIno}), g.GetAttr(&jfspb.GetAttrRequest{Ino: fileIno})},
		{"read", h.f.Read(&jfspb.ReadRequest{Ino: fileIno, Size: 100}), g.Read(&jfspb.ReadRequest{Ino: fileIno, Size: 100})},
		{"readdir", h.f.ReadDir(&jfspb.ReadDirRequest{Ino: RootIno}), g.ReadDir(&jfspb.ReadDirRequest{Ino: RootIno})},
		{"getlk", h.f.GetLk(&jfspb.GetLkRequest{Session: 99, Ino: fileIno, Type: jfspb.LockType_LOCK_TYPE_WRITE, Start: 0, Len: 0}),
			g.GetLk(&jfspb.GetLkRequest{Session: 99, Ino: fileIno, Type: jfspb.LockType_LOCK_TYPE_WRITE, Start: 0, Len: 0})},
		{"locks", h.f.Locks(&jfspb.ListLocksRequest{}), g.Locks(&jfspb.ListLocksRequest{})},
		{"xattr", h.f.ListXattr(&jfspb.ListXattrRequest{Ino: fileIno}), g.ListXattr(&jfspb.ListXattrRequest{Ino: fileIno})},
	} {
		if q.name == "readdir" {
			// "later" was made after the snapshot.
			r := q.from.(*jfspb.ReadDirResponse)
			r.Entries = r.Entries[:len(r.Entries)-1]
		}
		if !proto.Equal(q.from, q.to) {
			t.Errorf("%s: restored %v, want %v", q.name, q.to, q.from)
		}
	}
	// The restored lock table refuses what the original does.
	g2 := &harness{t: t, f: g, index: h.index, now: h.now, sess: h.sess, seq: h.seq}
	mustErrno(t, g2.do(cSetLk, &jfspb.SetLkRequest{Ino: fileIno, Owner: 9, Type: jfspb.LockType_LOCK_TYPE_WRITE, Start: 5, Len: 1}), syscall.EAGAIN)

	if err := g.Restore(bytes.NewReader([]byte("not a bolt file"))); err == nil {
		t.Fatal("restored garbage")
	}
	if _, s := mustDigest(t, g); s != want {
		t.Fatal("failed restore changed the state")
	}
}

// mkdirForTest gives g some state of its own, which Restore must replace.
func (f *FSM) mkdirForTest(t *testing.T) {
	h := &harness{t: t, f: f, now: t0}
	h.sess = h.mustRegister("g")
	h.mustMkdir(RootIno, "stale")
}

func TestDigestSameOnReplicas(t *testing.T) {
	a := mustHarness(t, Options{})
	// b's own options differ: apply must not depend on them.
	b := &harness{t: t, f: mustOpen(t, filepath.Join(t.TempDir(), "b.db"), Options{BlockSize: 8, Capacity: 100, MaxInodes: 3}), now: t0}
	b.sess = b.mustRegister("client-1")
	b.mustSetSettings(a.f.InitialSettings())
	mustPopulate(a)
	mustPopulate(b)
	ia, da := mustDigest(t, a.f)
	ib, db := mustDigest(t, b.f)
	if ia != ib || da != db {
		t.Fatalf("replicas differ: %d %x vs %d %x", ia, da, ib, db)
	}
	a.mustMkdir(RootIno, "x")
	if _, d := mustDigest(t, a.f); d == da {
		t.Fatal("digest did not change")
	}
}

func TestApplyBatchAllOrNothing(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", true)
	before := h.f.AppliedIndex()
	_, sum := mustDigest(t, h.f)
	good := h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("d")}, h.sess, 100, 0)
	lock := h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: jfspb.LockType_LOCK_TYPE_WRITE}, h.sess, 101, 0)
	h.index++
	bad := Entry{Index: h.index, Term: 1, Data: []byte{0xff, 0xff, 0xff}}
	if _, err := h.f.ApplyBatch([]Entry{good, lock, bad}); !errors.Is(err, ErrChecksum) || !bytes.Contains([]byte(err.Error()), fmt.Appendf(nil, "index %d", bad.Index)) {
		t.Fatalf("corrupt entry: %v", err)
	}
	if h.f.AppliedIndex() != before {
		t.Fatalf("applied index moved to %d", h.f.AppliedIndex())
	}
	if _, s := mustDigest(t, h.f); s != sum {
		t.Fatal("a failed batch changed the state")
	}
	if e := h.lookupErrno(RootIno, "d"); e != syscall.ENOENT {
		t.Fatal("a failed batch created d")
	}
	if r := h.f.GetLk(&jfspb.GetLkRequest{Session: 5, Ino: f.Ino, Type: jfspb.LockType_LOCK_TYPE_WRITE}); r.Type != jfspb.LockType_LOCK_TYPE_UNLOCK {
		t.Fatalf("a failed batch left a lock: %v", r)
	}

	// The same entries without the bad one apply together.
	rs, err := h.f.ApplyBatch([]Entry{good, lock})
	if err != nil {
		t.Fatal(err)
	}
	mustOK(t, rs[0].Resp)
	mustOK(t, rs[1].Resp)
	if h.f.AppliedIndex() != lock.Index {
		t.Fatalf("applied %d, want %d", h.f.AppliedIndex(), lock.Index)
	}
	// Replaying applied entries is ignored.
	rs, err = h.f.ApplyBatch([]Entry{good, lock})
	if err != nil || rs[0].Resp != nil || rs[1].Resp != nil {
		t.Fatalf("replay: %v %v", rs, err)
	}
}

func TestApplyBadEntries(t *testing.T) {
	h := mustHarness(t, Options{})
	envelope := func(typ uint32, skippable bool, body []byte) Entry {
		data, _ := Seal(&jfspb.LogEntry{Type: typ, Skippable: skippable, Session: h.sess, Seq: 50, TimeNs: h.now, Body: body})
		h.index++
		return Entry{Index: h.index, Term: 2, Data: data}
	}
	for _, tc := range []struct {
		name string
		e    Entry
		want error
	}{
		{"unknown type", envelope(999, false, nil), ErrUnknownCommand},
		{"unspecified type", envelope(0, false, nil), ErrUnknownCommand},
		{"corrupt body", envelope(uint32(cMkdir), false, []byte{0x0a, 0xff}), ErrCorruptEntry},
		{"no checksum", Entry{Index: h.index + 1, Data: []byte{0x08}}, ErrChecksum},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := h.f.ApplyBatch([]Entry{tc.e})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			t.Log(err)
		})
	}
	h.index = h.f.AppliedIndex()
	skip := envelope(999, true, []byte("whatever"))
	rs, err := h.f.ApplyBatch([]Entry{skip})
	if err != nil || rs[0].Resp != nil {
		t.Fatalf("skippable: %v %v", rs, err)
	}
	if h.f.AppliedIndex() != skip.Index {
		t.Fatal("skipped entry did not advance the applied index")
	}
}

func TestWaitApplied(t *testing.T) {
	h := mustHarness(t, Options{})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if err := h.f.WaitApplied(ctx, h.index+1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("wait: %v", err)
	}
	done := make(chan error)
	target := h.index + 2
	go func() { done <- h.f.WaitApplied(context.Background(), target) }()
	h.mustMkdir(RootIno, "a")
	h.mustMkdir(RootIno, "b")
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if err := h.f.WaitApplied(context.Background(), 1); err != nil {
		t.Fatal(err)
	}
}

// TestConcurrentReads runs reads, snapshots and digests during applies, for
// the race detector.
func TestConcurrentReads(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 16})
	f := h.mustCreate(RootIno, "f", true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				h.f.GetAttr(&jfspb.GetAttrRequest{Ino: f.Ino})
				h.f.Read(&jfspb.ReadRequest{Ino: f.Ino, Size: 64})
				h.f.ReadDir(&jfspb.ReadDirRequest{Ino: RootIno})
				h.f.GetLk(&jfspb.GetLkRequest{Ino: f.Ino, Type: jfspb.LockType_LOCK_TYPE_WRITE})
				h.f.Sessions()
				if s, err := h.f.Snapshot(); err == nil {
					s.WriteTo(&bytes.Buffer{})
					s.Release()
				}
			}
		}()
	}
	for i := range 50 {
		h.mustWrite(f.Ino, int64(i*3), []byte("abcdef"))
		mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: uint64(i), Type: jfspb.LockType_LOCK_TYPE_READ, Start: int64(i), Len: 1}))
		h.mustMkdir(RootIno, fmt.Sprint("d", i))
	}
	close(stop)
	wg.Wait()
}
