package fsm

import (
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestExactlyOnce(t *testing.T) {
	h := mustHarness(t, Options{})
	req := &jfspb.CreateRequest{Parent: RootIno, Name: []byte("f"), Mode: 0o644, Fh: 1}
	first := h.mustApplyEntry(h.entry(cCreate, req, h.sess, 1, 0)).(*jfspb.CreateResponse)
	mustOK(t, first)
	inodes := h.f.StatFS(nil).UsedInodes

	// The retry, under a later index, answers the original success.
	again := h.mustApplyEntry(h.entry(cCreate, req, h.sess, 1, 0))
	if !proto.Equal(first, again) {
		t.Fatalf("retry answered %v, want %v", again, first)
	}
	if got := h.f.StatFS(nil).UsedInodes; got != inodes {
		t.Fatalf("retry changed used inodes %d -> %d", inodes, got)
	}
	// A new seq for the same request is a new command: EEXIST.
	mustErrno(t, h.mustApplyEntry(h.entry(cCreate, &jfspb.CreateRequest{Parent: RootIno, Name: []byte("f"), Flags: syscall.O_EXCL}, h.sess, 2, 0)), syscall.EEXIST)
	// A write retried does not write twice (it would be visible as a
	// second open, here as a changed mtime).
	w := &jfspb.WriteRequest{Ino: first.Attr.Ino, Offset: 0, Data: []byte("x")}
	w1 := h.mustApplyEntry(h.entry(cWrite, w, h.sess, 3, 0))
	w2 := h.mustApplyEntry(h.entry(cWrite, w, h.sess, 3, 0))
	if !proto.Equal(w1, w2) || h.mustAttr(first.Attr.Ino).MtimeNs != w1.(*jfspb.WriteResponse).Attr.MtimeNs {
		t.Fatalf("write retried: %v then %v", w1, w2)
	}

	// acked=3 forgets seq 1..3: their retries get EALREADY.
	mustOK(t, h.mustApplyEntry(h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("d")}, h.sess, 4, 3)))
	mustErrno(t, h.mustApplyEntry(h.entry(cCreate, req, h.sess, 1, 3)), syscall.EALREADY)
	mustErrno(t, h.mustApplyEntry(h.entry(cWrite, w, h.sess, 3, 3)), syscall.EALREADY)
	// seq 4 is still remembered.
	r4 := h.mustApplyEntry(h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("d")}, h.sess, 4, 3))
	mustOK(t, r4)
	if err := h.f.view(func(tx *txn) error {
		n := 0
		tx.scan(bucketResult, u64(h.sess), func(k, v []byte) bool { n++; return true })
		if n != 1 {
			t.Errorf("%d stored results, want 1", n)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	// Unknown session and no session: ESTALE, nothing changes.
	mustErrno(t, h.mustApplyEntry(h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("x")}, 12345, 1, 0)), syscall.ESTALE)
	mustErrno(t, h.mustApplyEntry(h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("x")}, 0, 0, 0)), syscall.ESTALE)
	if e := h.lookupErrno(RootIno, "x"); e != syscall.ENOENT {
		t.Fatalf("stale command applied: %v", e)
	}
}

func TestRegister(t *testing.T) {
	h := mustHarness(t, Options{})
	if again := h.mustRegister("client-1"); again != h.sess {
		t.Fatalf("same client id got session %d, want %d", again, h.sess)
	}
	other := h.mustRegister("client-2")
	if other == h.sess {
		t.Fatal("two clients share a session")
	}
	ss := h.f.Sessions()
	if len(ss) != 2 || ss[0].Id != h.sess || ss[1].Id != other || ss[0].ClientId != "client-1" || ss[0].CreatedNs == 0 {
		t.Fatalf("sessions %v", ss)
	}
	mustOK(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: other}, 0, 0, 0)))
	mustErrno(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: other}, 0, 0, 0)), syscall.ENOENT)
	if h.f.Session(other) != nil {
		t.Fatal("expired session still listed")
	}
	// A client that comes back after expiry is fenced off.
	mustErrno(t, h.mustApplyEntry(h.entry(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte("x")}, other, 1, 0)), syscall.ESTALE)
	// Registering again with the same client id gives a new session.
	if s := h.mustRegister("client-2"); s == other {
		t.Fatal("expired session reused")
	}
	mustOK(t, h.mustApplyEntry(h.entry(cClose, &jfspb.CloseSessionRequest{}, h.sess, 0, 0)))
	mustOK(t, h.mustApplyEntry(h.entry(cClose, &jfspb.CloseSessionRequest{}, h.sess, 0, 0)))
	if len(h.f.Sessions()) != 1 {
		t.Fatalf("sessions after close: %v", h.f.Sessions())
	}
}

func TestSustainedInode(t *testing.T) {
	for _, end := range []string{"release", "expire", "close"} {
		t.Run(end, func(t *testing.T) {
			h := mustHarness(t, Options{BlockSize: 8})
			other := h.mustRegister("client-2")
			f := h.mustCreate(RootIno, "f", true) // open in h.sess
			h.mustWrite(f.Ino, 0, []byte("before unlink"))
			inodes := h.f.StatFS(nil).UsedInodes
			mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))

			if e := h.lookupErrno(RootIno, "f"); e != syscall.ENOENT {
				t.Fatalf("lookup after unlink: %v", e)
			}
			a := h.mustAttr(f.Ino)
			if a.Nlink != 0 {
				t.Fatalf("nlink %d", a.Nlink)
			}
			h.mustWrite(f.Ino, 7, []byte("AFTER unlink"))
			mustEqualBytes(t, "sustained data", h.mustRead(f.Ino, 0, 100), []byte("before AFTER unlink"))
			// Another session's open and release do not free it.
			mustOK(t, h.mustApplyEntry(h.entry(cOpen, &jfspb.OpenRequest{Ino: f.Ino}, other, 1, 0)))
			mustOK(t, h.mustApplyEntry(h.entry(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino}, other, 2, 0)))
			mustEqualBytes(t, "still sustained", h.mustRead(f.Ino, 0, 6), []byte("before"))
			if got := h.f.StatFS(nil).UsedInodes; got != inodes {
				t.Fatalf("used inodes %d, want %d while sustained", got, inodes)
			}

			switch end {
			case "release":
				mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino, Fh: 1}))
			case "expire":
				mustOK(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: h.sess}, 0, 0, 0)))
			case "close":
				mustOK(t, h.mustApplyEntry(h.entry(cClose, &jfspb.CloseSessionRequest{}, h.sess, 0, 0)))
			}
			mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: f.Ino}), syscall.ENOENT)
			mustErrno(t, h.f.Read(&jfspb.ReadRequest{Ino: f.Ino, Size: 10}), syscall.ENOENT)
			st := h.f.StatFS(nil)
			if st.UsedInodes != inodes-1 || st.UsedBytes != 0 {
				t.Fatalf("statfs after free: %v", st)
			}
			if err := h.f.view(func(tx *txn) error {
				for _, b := range [][]byte{bucketBlock, bucketOpen, bucketSessOpen, bucketSustained} {
					if tx.hasPrefix(b, nil) {
						t.Errorf("bucket %s not empty", b)
					}
				}
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

func TestRenameOverOpenFileSustains(t *testing.T) {
	h := mustHarness(t, Options{})
	victim := h.mustCreate(RootIno, "victim", true)
	h.mustWrite(victim.Ino, 0, []byte("old"))
	h.mustCreate(RootIno, "new", false)
	mustOK(t, h.do(cRename, &jfspb.RenameRequest{Parent: RootIno, Name: []byte("new"), NewParent: RootIno, NewName: []byte("victim")}))
	mustEqualBytes(t, "replaced but open", h.mustRead(victim.Ino, 0, 10), []byte("old"))
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: victim.Ino, Fh: 1}))
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: victim.Ino}), syscall.ENOENT)
}

// TestAckedSeqsForgetAboveAcked: while seq 1 (a blocked lock request, say)
// holds acked at 0, results acknowledged one by one are forgotten, the
// others are kept for retries, and seq 1 itself is never forgotten that way.
func TestAckedSeqsForgetAboveAcked(t *testing.T) {
	h := mustHarness(t, Options{})
	apply := func(seq uint64, acks []uint64, req *jfspb.MkdirRequest) proto.Message {
		t.Helper()
		body, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		h.index++
		h.now += 1e9
		data, err := Seal(&jfspb.LogEntry{Type: uint32(cMkdir), Session: h.sess, Seq: seq, TimeNs: h.now, Body: body, AckedSeqs: acks})
		if err != nil {
			t.Fatal(err)
		}
		return h.mustApplyEntry(Entry{Index: h.index, Term: 1, Data: data})
	}
	mkdir := func(name string) *jfspb.MkdirRequest {
		return &jfspb.MkdirRequest{Parent: RootIno, Name: []byte(name), Mode: 0o755}
	}
	mustOK(t, apply(1, nil, mkdir("a")))
	mustOK(t, apply(2, nil, mkdir("b")))
	mustOK(t, apply(3, []uint64{2}, mkdir("c")))
	mustOK(t, apply(4, []uint64{3, 4}, mkdir("d"))) // its own seq is not forgotten
	if n := h.f.StoredResults(h.sess); n != 2 {
		t.Errorf("%d stored results, want 2 (seqs 1 and 4)", n)
	}
	// Retries of the kept ones get their stored results, not EEXIST.
	mustOK(t, apply(1, nil, mkdir("a")))
	mustOK(t, apply(4, nil, mkdir("d")))
}

// TestLateDuplicateOfAckedSeqAnswersEALREADY: a request above acked whose
// result the client acknowledged one by one must not be applied again when
// a late copy of it arrives (an append would land twice): the copy answers
// EALREADY. Once acked passes it, the marker goes and the answer stays.
func TestLateDuplicateOfAckedSeqAnswersEALREADY(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "log", false)
	apply := func(seq, acked uint64, acks []uint64) proto.Message {
		t.Helper()
		body, err := proto.Marshal(&jfspb.WriteRequest{Ino: f.Ino, Data: []byte("x"), Append: true})
		if err != nil {
			t.Fatal(err)
		}
		h.index++
		h.now += 1e9
		data, err := Seal(&jfspb.LogEntry{Type: uint32(cWrite), Session: h.sess, Seq: seq, Acked: acked, TimeNs: h.now, Body: body, AckedSeqs: acks})
		if err != nil {
			t.Fatal(err)
		}
		return h.mustApplyEntry(Entry{Index: h.index, Term: 1, Data: data})
	}
	rawResults := func() int {
		t.Helper()
		n := 0
		if err := h.f.view(func(tx *txn) error {
			tx.scan(bucketResult, u64(h.sess), func(_, _ []byte) bool { n++; return true })
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		return n
	}
	mustOK(t, apply(100, 49, nil))
	mustOK(t, apply(101, 49, []uint64{100}))
	if n := h.f.StoredResults(h.sess); n != 1 {
		t.Errorf("%d stored results, want 1 (seq 101)", n)
	}
	mustErrno(t, apply(100, 49, nil), syscall.EALREADY)
	if a := h.mustAttr(f.Ino); a.Size != 2 {
		t.Fatalf("size %d after two appends and a late copy of the first, want 2", a.Size)
	}
	// A retry of 101 still gets its stored response.
	mustOK(t, apply(101, 49, []uint64{100}))
	mustOK(t, apply(102, 101, nil))
	if n := rawResults(); n != 1 {
		t.Errorf("%d entries kept for the session, want 1 (seq 102; the marker of 100 gone)", n)
	}
	mustErrno(t, apply(100, 101, nil), syscall.EALREADY)
	if a := h.mustAttr(f.Ino); a.Size != 3 {
		t.Fatalf("size %d after three appends, want 3", a.Size)
	}
}

// TestSessionIdentity: a session records the identity that registered it,
// and a client id already in use answers with its session only to the same
// identity; another gets a session of its own.
func TestSessionIdentity(t *testing.T) {
	h := mustHarness(t, Options{})
	reg := func(identity string) uint64 {
		r := h.mustApplyEntry(h.entry(cRegister, &jfspb.RegisterRequest{Host: "h", ClientId: "same", Identity: identity}, 0, 0, 0)).(*jfspb.RegisterResponse)
		mustOK(t, r)
		return r.Session
	}
	alice := reg("client/alice")
	if got := h.f.Session(alice).GetIdentity(); got != "client/alice" {
		t.Fatalf("session records identity %q", got)
	}
	if again := reg("client/alice"); again != alice {
		t.Fatalf("alice's retried register got session %d, want %d", again, alice)
	}
	if bob := reg("client/bob"); bob == alice || h.f.Session(bob).GetIdentity() != "client/bob" {
		t.Fatalf("bob registering alice's client id got session %d (alice's is %d)", bob, alice)
	}
}
