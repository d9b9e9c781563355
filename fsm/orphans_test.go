package fsm

import (
	"slices"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

const cFreeOrphans = jfspb.CommandType_COMMAND_TYPE_FREE_ORPHANS

// TestLeaderOpensOrphans: under entries of a leader that keeps open files
// in memory, Create and Open record no open but tell the open listener;
// the last name's removal keeps the inode as an orphan, whatever the
// replicated open table says; Release never answers EBADF; and only
// FreeOrphans frees the orphan, with its data. The replicas agree.
func TestLeaderOpensOrphans(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 8})
	g := h.mustReplica(Options{})
	type open struct{ session, fh, ino uint64 }
	var heard []open
	h.f.SetOpenListener(func(s, fh, ino uint64) { heard = append(heard, open{s, fh, ino}) })
	h.leaderOpens = true

	f := h.mustCreate(RootIno, "f", true)
	h.mustWrite(f.Ino, 0, []byte("some data"))
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: f.Ino, Fh: 7}))
	want := []open{{h.sess, 1, f.Ino}, {h.sess, 7, f.Ino}}
	if !slices.Equal(heard, want) {
		t.Fatalf("open listener heard %v, want %v", heard, want)
	}
	if err := h.f.view(func(tx *txn) error {
		if tx.isOpen(f.Ino) {
			t.Error("an open of a leaderOpens entry is in the replicated table")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino, Fh: 7})) // not EBADF

	inodes := h.f.StatFS(nil).UsedInodes
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	if got := h.f.Orphans(10); !slices.Equal(got, []uint64{f.Ino}) {
		t.Fatalf("orphans after unlink: %v", got)
	}
	mustEqualBytes(t, "orphan data", h.mustRead(f.Ino, 0, 100), []byte("some data"))
	if got := h.f.StatFS(nil).UsedInodes; got != inodes {
		t.Fatalf("used inodes %d after unlink, want %d: the orphan is kept", got, inodes)
	}
	// Ending the session does not free it either: another session may have
	// it open in the leader's memory.
	mustOK(t, h.mustApplyEntry(h.entry(cClose, &jfspb.CloseSessionRequest{}, h.sess, 0, 0)))
	mustEqualBytes(t, "orphan data after the session ended", h.mustRead(f.Ino, 0, 4), []byte("some"))

	r := h.mustApplyEntry(h.entry(cFreeOrphans, &jfspb.FreeOrphansRequest{Inos: []uint64{f.Ino, 999}}, 0, 0, 0)).(*jfspb.FreeOrphansResponse)
	if r.Freed != 1 {
		t.Fatalf("FreeOrphans freed %d, want 1", r.Freed)
	}
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: f.Ino}), syscall.ENOENT)
	if st := h.f.StatFS(nil); st.UsedInodes != inodes-1 || st.UsedBytes != 0 {
		t.Fatalf("statfs after FreeOrphans: %v", st)
	}
	if got := h.f.Orphans(10); len(got) != 0 {
		t.Fatalf("orphans left: %v", got)
	}
	mustSameDigest(t, h.f, g)
}

// TestFreeOrphansSkips: FreeOrphans leaves alone an inode that has a name
// (an O_TMPFILE file linked since the leader listed it), and an orphan
// that an older version's entry still has open in the replicated table;
// that one is freed once its last replicated open ends and a FreeOrphans
// lists it again.
func TestFreeOrphansSkips(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 8})
	// An older version's open, then the file's removal by this version.
	old := h.mustCreate(RootIno, "old", true)
	h.leaderOpens = true
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("old")}))

	tmp := h.do(cCreate, &jfspb.CreateRequest{Parent: RootIno, Mode: 0o644, Fh: 2, Tmpfile: true}).(*jfspb.CreateResponse)
	mustOK(t, tmp)
	if got := h.f.Orphans(10); !slices.Equal(got, []uint64{tmp.Attr.Ino}) {
		t.Fatalf("orphans: %v, want only the O_TMPFILE file (the other is open in the replicated table)", got)
	}
	mustOK(t, h.do(cLink, &jfspb.LinkRequest{Ino: tmp.Attr.Ino, NewParent: RootIno, NewName: []byte("named")}))

	r := h.mustApplyEntry(h.entry(cFreeOrphans, &jfspb.FreeOrphansRequest{Inos: []uint64{old.Ino, tmp.Attr.Ino}}, 0, 0, 0)).(*jfspb.FreeOrphansResponse)
	if r.Freed != 0 {
		t.Fatalf("FreeOrphans freed %d, want 0", r.Freed)
	}
	h.mustAttr(old.Ino)
	h.mustLookup(RootIno, "named")

	// The older open ends: the inode stays an orphan for FreeOrphans.
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: old.Ino, Fh: 1}))
	if got := h.f.Orphans(10); !slices.Equal(got, []uint64{old.Ino}) {
		t.Fatalf("orphans after the replicated close: %v", got)
	}
	r = h.mustApplyEntry(h.entry(cFreeOrphans, &jfspb.FreeOrphansRequest{Inos: []uint64{old.Ino}}, 0, 0, 0)).(*jfspb.FreeOrphansResponse)
	if r.Freed != 1 {
		t.Fatalf("FreeOrphans freed %d, want 1", r.Freed)
	}
}

// TestLeaderOpensRmdirKeepsOrphanDir: a directory removed under a
// leaderOpens entry is kept as an orphan (it may be open on a mount the
// state machine cannot see) that lists nothing and takes no new entries,
// until FreeOrphans.
func TestLeaderOpensRmdirKeepsOrphanDir(t *testing.T) {
	h := mustHarness(t, Options{})
	h.leaderOpens = true
	d := h.mustMkdir(RootIno, "d")
	mustOK(t, h.do(cRmdir, &jfspb.RmdirRequest{Parent: RootIno, Name: []byte("d")}))
	if a := h.mustAttr(d.Ino); a.Nlink != 0 {
		t.Fatalf("nlink of the removed directory: %d", a.Nlink)
	}
	mustErrno(t, h.do(cMkdir, &jfspb.MkdirRequest{Parent: d.Ino, Name: []byte("x"), Mode: 0o755}), syscall.ENOENT)
	h.mustApplyEntry(h.entry(cFreeOrphans, &jfspb.FreeOrphansRequest{Inos: []uint64{d.Ino}}, 0, 0, 0))
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: d.Ino}), syscall.ENOENT)
}

// TestCheckOpen: the read-only check of an in-memory open answers as the
// Open command does, and ESTALE for a session that is not live.
func TestCheckOpen(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	d := h.mustMkdir(RootIno, "d")
	for _, c := range []struct {
		sess  uint64
		ino   uint64
		flags uint32
		want  syscall.Errno
	}{
		{h.sess, f.Ino, syscall.O_RDONLY, 0},
		{h.sess, f.Ino, syscall.O_RDWR, 0},
		{h.sess, d.Ino, syscall.O_RDONLY, 0},
		{h.sess, d.Ino, syscall.O_WRONLY, syscall.EISDIR},
		{h.sess, 999, syscall.O_RDONLY, syscall.ENOENT},
		{12345, f.Ino, syscall.O_RDONLY, syscall.ESTALE},
	} {
		r := h.f.CheckOpen(c.sess, &jfspb.OpenRequest{Ino: c.ino, Flags: c.flags})
		if got := syscall.Errno(r.Errno); got != c.want {
			t.Errorf("CheckOpen(session %d, ino %d, flags %#x) = %v, want %v", c.sess, c.ino, c.flags, got, c.want)
		}
		if c.want == 0 && r.Attr.GetIno() != c.ino {
			t.Errorf("CheckOpen(ino %d) answered attributes of %d", c.ino, r.Attr.GetIno())
		}
	}
}

// TestFreeHint: a removal whose FreeHint names the inode frees it at once,
// unless an open of it was logged after the hint's index (a Create of the
// existing name, an O_TRUNC open) or the hint names another inode.
func TestFreeHint(t *testing.T) {
	h := mustHarness(t, Options{BlockSize: 8})
	h.leaderOpens = true
	unlink := func(name string, hint *jfspb.FreeHint) {
		t.Helper()
		mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte(name), FreeHint: hint}))
	}
	a := h.mustCreate(RootIno, "a", false)
	h.mustWrite(a.Ino, 0, []byte("data"))
	unlink("a", &jfspb.FreeHint{Ino: a.Ino, UnopenedSince: h.index})
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: a.Ino}), syscall.ENOENT)

	b := h.mustCreate(RootIno, "b", false)
	unlink("b", &jfspb.FreeHint{Ino: b.Ino + 100, UnopenedSince: h.index})
	h.mustAttr(b.Ino) // another inode's hint: an orphan

	c := h.mustCreate(RootIno, "c", false)
	since := h.index
	// Opened again by name after the hint was taken: the hint is stale.
	mustOK(t, h.do(cCreate, &jfspb.CreateRequest{Parent: RootIno, Name: []byte("c"), Mode: 0o644, Fh: 3}))
	unlink("c", &jfspb.FreeHint{Ino: c.Ino, UnopenedSince: since})
	h.mustAttr(c.Ino)

	d := h.mustCreate(RootIno, "d", false)
	since = h.index
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: d.Ino, Flags: syscall.O_WRONLY | syscall.O_TRUNC, Fh: 4}))
	unlink("d", &jfspb.FreeHint{Ino: d.Ino, UnopenedSince: since})
	h.mustAttr(d.Ino)
	// A hint taken after that open frees the next one at once.
	e := h.mustCreate(RootIno, "e", false)
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: e.Ino, Flags: syscall.O_WRONLY | syscall.O_TRUNC, Fh: 5}))
	unlink("e", &jfspb.FreeHint{Ino: e.Ino, UnopenedSince: h.index})
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: e.Ino}), syscall.ENOENT)

	if got := h.f.Orphans(10); !slices.Equal(got, []uint64{b.Ino, c.Ino, d.Ino}) {
		t.Fatalf("orphans %v, want [%d %d %d]", got, b.Ino, c.Ino, d.Ino)
	}
}
