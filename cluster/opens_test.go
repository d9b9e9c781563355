package cluster_test

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// opener is one client session talking to whichever node leads.
type opener struct {
	t   *testing.T
	c   *clustertest.Cluster
	sid uint64
	seq uint64
}

// newOpener registers a session through the API, as a mount does, so that
// the leader arms its TTL timer.
func newOpener(t *testing.T, c *clustertest.Cluster, name string) *opener {
	t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := cluster.NewServer(c.Leader()).Register(ctx, &jfspb.RegisterRequest{Host: "test", MountPoint: "/" + name, ClientId: name})
	if err != nil || r.Errno != 0 {
		t.Fatalf("register %s: %v %v", name, err, r)
	}
	return &opener{t: t, c: c, sid: r.Session}
}

func (o *opener) srv() *cluster.Server { return cluster.NewServer(o.c.Leader()) }

func (o *opener) header() *jfspb.Header {
	o.seq++
	return &jfspb.Header{Session: o.sid, Seq: o.seq, Acked: o.seq - 1, Cred: &jfspb.Cred{}}
}

func ctx30() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 30*time.Second)
}

func (o *opener) mustCreate(name string, fh uint64, data string) uint64 {
	o.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := o.srv().Create(ctx, &jfspb.CreateRequest{Header: o.header(), Parent: 1, Name: []byte(name), Mode: 0o644,
		Flags: uint32(syscall.O_RDWR), Fh: fh})
	if err != nil || r.Errno != 0 {
		o.t.Fatalf("create %s: %v %v", name, err, r)
	}
	w, err := o.srv().Write(ctx, &jfspb.WriteRequest{Header: o.header(), Ino: r.Attr.Ino, Fh: fh, Data: []byte(data)})
	if err != nil || w.Errno != 0 {
		o.t.Fatalf("write %s: %v %v", name, err, w)
	}
	return r.Attr.Ino
}

func (o *opener) open(ino, fh uint64, flags uint32) syscall.Errno {
	o.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := o.srv().Open(ctx, &jfspb.OpenRequest{Header: o.header(), Ino: ino, Flags: flags, Fh: fh})
	if err != nil {
		o.t.Fatalf("open %d: %v", ino, err)
	}
	return syscall.Errno(r.Errno)
}

func (o *opener) mustRelease(ino, fh uint64) {
	o.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := o.srv().Release(ctx, &jfspb.ReleaseRequest{Header: o.header(), Ino: ino, Fh: fh})
	if err != nil || r.Errno != 0 {
		o.t.Fatalf("release %d fh %d: %v %v", ino, fh, err, r)
	}
}

func (o *opener) mustUnlink(name string) {
	o.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := o.srv().Unlink(ctx, &jfspb.UnlinkRequest{Header: o.header(), Parent: 1, Name: []byte(name)})
	if err != nil || r.Errno != 0 {
		o.t.Fatalf("unlink %s: %v %v", name, err, r)
	}
}

func (o *opener) read(ino uint64) (string, syscall.Errno) {
	o.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := o.srv().Read(ctx, &jfspb.ReadRequest{Ino: ino, Size: 100, Cred: &jfspb.Cred{}})
	if err != nil {
		o.t.Fatalf("read %d: %v", ino, err)
	}
	return string(r.Data), syscall.Errno(r.Errno)
}

// openFiles is the leader's count of the session's open files.
func (o *opener) openFiles() uint64 {
	o.t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	r, err := o.srv().ListSessions(ctx, &jfspb.ListSessionsRequest{})
	if err != nil {
		o.t.Fatal(err)
	}
	for _, s := range r.Sessions {
		if s.Id == o.sid {
			return s.OpenFiles
		}
	}
	o.t.Fatalf("session %d not listed", o.sid)
	return 0
}

// mustBeFreed waits, one applied entry at a time, until ino is gone on
// the leader.
func mustBeFreed(t *testing.T, c *clustertest.Cluster, ino uint64) {
	t.Helper()
	ctx, cancel := ctx30()
	defer cancel()
	n := c.Leader()
	for n.FSM().GetAttr(&jfspb.GetAttrRequest{Ino: ino}).Errno != int32(syscall.ENOENT) {
		if err := n.FSM().WaitApplied(ctx, n.FSM().AppliedIndex()+1); err != nil {
			t.Fatalf("inode %d not freed: %v", ino, err)
		}
	}
	if used := n.FSM().StatFS(nil).UsedBytes; used != 0 {
		t.Fatalf("used bytes %d after the only file was freed", used)
	}
}

// TestPlainOpenAndReleaseWriteNoEntry: opening a file for reading, reading
// it and closing it adds nothing to the log; the leader counts the open in
// memory. Before, each open and each release was an entry.
func TestPlainOpenAndReleaseWriteNoEntry(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.IntegrityCheck = -1 })
	o := newOpener(t, c, "a")
	ino := o.mustCreate("f", 1, "hello")
	o.mustRelease(ino, 1)
	n := c.Leader()
	before := n.FSM().AppliedIndex()
	for fh := uint64(10); fh < 15; fh++ {
		if e := o.open(ino, fh, syscall.O_RDONLY); e != 0 {
			t.Fatalf("open: %v", e)
		}
		if got, e := o.read(ino); e != 0 || got != "hello" {
			t.Fatalf("read: %q %v", got, e)
		}
	}
	if got := o.openFiles(); got != 5 {
		t.Fatalf("open files %d, want 5", got)
	}
	for fh := uint64(10); fh < 15; fh++ {
		o.mustRelease(ino, fh)
	}
	if got := o.openFiles(); got != 0 {
		t.Fatalf("open files %d after the closes, want 0", got)
	}
	if after := n.FSM().AppliedIndex(); after != before {
		t.Fatalf("applied index moved from %d to %d for opens, reads and releases", before, after)
	}
	// The checks of the open command still hold.
	if e := o.open(999, 20, syscall.O_RDONLY); e != syscall.ENOENT {
		t.Fatalf("open of a missing inode: %v, want ENOENT", e)
	}
	if e := o.open(1, 21, syscall.O_RDWR); e != syscall.EISDIR {
		t.Fatalf("open of a directory for writing: %v, want EISDIR", e)
	}
	if got := o.openFiles(); got != 0 {
		t.Fatalf("open files %d after failed opens, want 0", got)
	}
	// O_TRUNC is a write: it goes through the log, and its open is in memory.
	if e := o.open(ino, 22, syscall.O_WRONLY|syscall.O_TRUNC); e != 0 {
		t.Fatalf("open O_TRUNC: %v", e)
	}
	if got, _ := o.read(ino); got != "" {
		t.Fatalf("after O_TRUNC the file reads %q", got)
	}
	if got := o.openFiles(); got != 1 {
		t.Fatalf("open files %d after an O_TRUNC open, want 1", got)
	}
}

// TestUnlinkedOpenFileFreedAtLastClose: a file removed while open stays
// readable until its last close, on any session, and is freed then.
func TestUnlinkedOpenFileFreedAtLastClose(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	a, b := newOpener(t, c, "a"), newOpener(t, c, "b")
	ino := a.mustCreate("f", 1, "kept")
	if e := b.open(ino, 1, syscall.O_RDONLY); e != 0 {
		t.Fatalf("open: %v", e)
	}
	a.mustUnlink("f")
	if got, e := a.read(ino); e != 0 || got != "kept" {
		t.Fatalf("read after unlink: %q %v", got, e)
	}
	a.mustRelease(ino, 1)
	if got, e := b.read(ino); e != 0 || got != "kept" {
		t.Fatalf("read after the creator's close: %q %v", got, e)
	}
	b.mustRelease(ino, 1)
	mustBeFreed(t, c, ino)
	if e := b.open(ino, 2, syscall.O_RDONLY); e != syscall.ENOENT {
		t.Fatalf("open of the freed inode: %v, want ENOENT", e)
	}
}

// TestOrphanOfExpiredSessionFreed: a session that dies holding an unlinked
// file open leaves it until the session expires; then it is freed.
func TestOrphanOfExpiredSessionFreed(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.SessionTTL = time.Second })
	a := newOpener(t, c, "a")
	ino := a.mustCreate("f", 1, "data")
	a.mustUnlink("f")
	if got, e := a.read(ino); e != 0 || got != "data" {
		t.Fatalf("read after unlink: %q %v", got, e)
	}
	// No heartbeat: the session expires, and its orphan goes.
	mustBeFreed(t, c, ino)
	if c.Leader().FSM().Session(a.sid) != nil {
		t.Fatal("the orphan was freed while its session lived")
	}
}

// TestNewLeaderKeepsReportedOpens: after a leader change, an unlinked file
// that a session still has open stays readable; the new leader learns of
// the open from the session's report (asked for in the heartbeat's answer)
// and frees the file once it is closed.
func TestNewLeaderKeepsReportedOpens(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	a, b := newOpener(t, c, "a"), newOpener(t, c, "b")
	ino := a.mustCreate("f", 1, "survives")
	a.mustUnlink("f")

	old := c.Leader().ID()
	c.Stop(old)
	leader := c.Leader()
	if leader.ID() == old {
		t.Fatal("the stopped node still leads")
	}
	report := func(o *opener, handles ...*jfspb.OpenHandle) {
		t.Helper()
		ctx, cancel := ctx30()
		defer cancel()
		s := cluster.NewServer(leader)
		hb, err := s.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: o.sid})
		if err != nil || hb.Errno != 0 || !hb.ReportOpens {
			t.Fatalf("heartbeat of %d at the new leader: %v %v (report_opens false?)", o.sid, err, hb)
		}
		r, err := s.ReportOpens(ctx, &jfspb.ReportOpensRequest{Session: o.sid, Handles: handles})
		if err != nil || r.Errno != 0 {
			t.Fatalf("report of %d: %v %v", o.sid, err, r)
		}
		hb, err = s.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: o.sid})
		if err != nil || hb.ReportOpens {
			t.Fatalf("heartbeat after the report still asks for one: %v %v", err, hb)
		}
	}
	report(b)
	report(a, &jfspb.OpenHandle{Fh: 1, Ino: ino})
	if got := a.openFiles(); got != 1 {
		t.Fatalf("open files of a at the new leader: %d, want 1", got)
	}
	if got, e := a.read(ino); e != 0 || got != "survives" {
		t.Fatalf("read after the leader change: %q %v", got, e)
	}
	a.mustRelease(ino, 1)
	mustBeFreed(t, c, ino)
}

// TestUnlinkOfUnusedFileFreesAtOnce: removing a file that nobody has open
// frees it in the removal's own entry (the leader's FreeHint), so it costs
// one entry as before; one that is open becomes an orphan instead.
func TestUnlinkOfUnusedFileFreesAtOnce(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.IntegrityCheck = -1 })
	o := newOpener(t, c, "a")
	ino := o.mustCreate("f", 1, "data")
	o.mustRelease(ino, 1)
	n := c.Leader()
	before := n.FSM().AppliedIndex()
	o.mustUnlink("f")
	if e := n.FSM().GetAttr(&jfspb.GetAttrRequest{Ino: ino}).Errno; e != int32(syscall.ENOENT) {
		t.Fatalf("getattr right after the unlink of an unused file: errno %d, want ENOENT", e)
	}
	if after := n.FSM().AppliedIndex(); after != before+1 {
		t.Fatalf("applied index moved from %d to %d for one unlink", before, after)
	}

	open := o.mustCreate("g", 2, "data")
	o.mustUnlink("g")
	if got, e := o.read(open); e != 0 || got != "data" {
		t.Fatalf("read of the open unlinked file: %q %v", got, e)
	}
	o.mustRelease(open, 2)
	mustBeFreed(t, c, open)
}
