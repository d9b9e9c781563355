package fsm

import (
	"bytes"
	"path/filepath"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Short names for the command types.
const (
	cRegister    = jfspb.CommandType_COMMAND_TYPE_REGISTER
	cClose       = jfspb.CommandType_COMMAND_TYPE_CLOSE_SESSION
	cExpire      = jfspb.CommandType_COMMAND_TYPE_EXPIRE_SESSION
	cSetAttr     = jfspb.CommandType_COMMAND_TYPE_SETATTR
	cMknod       = jfspb.CommandType_COMMAND_TYPE_MKNOD
	cMkdir       = jfspb.CommandType_COMMAND_TYPE_MKDIR
	cCreate      = jfspb.CommandType_COMMAND_TYPE_CREATE
	cUnlink      = jfspb.CommandType_COMMAND_TYPE_UNLINK
	cRmdir       = jfspb.CommandType_COMMAND_TYPE_RMDIR
	cRename      = jfspb.CommandType_COMMAND_TYPE_RENAME
	cLink        = jfspb.CommandType_COMMAND_TYPE_LINK
	cSymlink     = jfspb.CommandType_COMMAND_TYPE_SYMLINK
	cOpen        = jfspb.CommandType_COMMAND_TYPE_OPEN
	cRelease     = jfspb.CommandType_COMMAND_TYPE_RELEASE
	cWrite       = jfspb.CommandType_COMMAND_TYPE_WRITE
	cSetXattr    = jfspb.CommandType_COMMAND_TYPE_SETXATTR
	cRemoveXattr = jfspb.CommandType_COMMAND_TYPE_REMOVEXATTR
	cSetLk       = jfspb.CommandType_COMMAND_TYPE_SETLK
	cFlock       = jfspb.CommandType_COMMAND_TYPE_FLOCK
	cReleaseOwn  = jfspb.CommandType_COMMAND_TYPE_RELEASE_LOCK_OWNER
	cSetSettings = jfspb.CommandType_COMMAND_TYPE_SET_SETTINGS
	cFreeData    = jfspb.CommandType_COMMAND_TYPE_FREE_DATA
	cTouchAtime  = jfspb.CommandType_COMMAND_TYPE_TOUCH_ATIME
)

// harness drives an FSM with hand-built log entries: increasing indexes,
// a clock that ticks one second per entry, and one registered session.
type harness struct {
	t     testing.TB
	f     *FSM
	path  string
	opts  Options
	index uint64
	now   int64
	sess  uint64
	seq   uint64
	// replicas apply every entry h applies.
	replicas []*FSM
	// leaderOpens marks the entries as proposed by a leader that keeps
	// open files in memory (LogEntry.leader_opens).
	leaderOpens bool
}

const t0 = int64(1_700_000_000_000_000_000)

func mustHarness(t testing.TB, opts Options) *harness {
	t.Helper()
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "state.db"), opts: opts, now: t0}
	h.f = mustOpen(t, h.path, opts)
	h.sess = h.mustRegister("client-1")
	h.mustSetSettings(h.f.InitialSettings())
	return h
}

// mustSetSettings applies the SetSettings entry that the first leader of a
// new cluster proposes, with settings s.
func (h *harness) mustSetSettings(s *jfspb.Settings) {
	h.t.Helper()
	mustOK(h.t, h.mustApplyEntry(h.entry(cSetSettings, &jfspb.SetSettingsRequest{Settings: s, Initial: true}, 0, 0, 0)))
}

func mustOpen(t testing.TB, path string, opts Options) *FSM {
	t.Helper()
	f, err := Open(path, opts)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// entry builds the next log entry.
func (h *harness) entry(typ jfspb.CommandType, req proto.Message, sess, seq, acked uint64) Entry {
	h.t.Helper()
	body, err := proto.Marshal(req)
	if err != nil {
		h.t.Fatalf("marshal: %v", err)
	}
	h.index++
	h.now += 1e9
	data, err := Seal(&jfspb.LogEntry{
		Type: uint32(typ), Session: sess, Seq: seq, Acked: acked, TimeNs: h.now, Body: body,
		LeaderOpens: h.leaderOpens,
	})
	if err != nil {
		h.t.Fatalf("marshal: %v", err)
	}
	return Entry{Index: h.index, Term: 1, Data: data}
}

func (h *harness) mustApplyEntry(e Entry) proto.Message {
	h.t.Helper()
	rs, err := h.f.ApplyBatch([]Entry{e})
	if err != nil {
		h.t.Fatalf("ApplyBatch(index %d): %v", e.Index, err)
	}
	for _, r := range h.replicas {
		if _, err := r.ApplyBatch([]Entry{e}); err != nil {
			h.t.Fatalf("replica: ApplyBatch(index %d): %v", e.Index, err)
		}
	}
	return rs[0].Resp
}

// mustReplica returns a replica of h's state, opened with opts, to which
// every later entry is applied as well.
func (h *harness) mustReplica(opts Options) *FSM {
	h.t.Helper()
	g := mustOpen(h.t, filepath.Join(h.t.TempDir(), "replica.db"), opts)
	snap, err := h.f.Snapshot()
	if err != nil {
		h.t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	if _, err := snap.WriteTo(&buf); err != nil {
		h.t.Fatal(err)
	}
	if err := g.Restore(&buf); err != nil {
		h.t.Fatal(err)
	}
	h.replicas = append(h.replicas, g)
	return g
}

// do applies req in the harness session with the next seq.
func (h *harness) do(typ jfspb.CommandType, req proto.Message) proto.Message {
	h.t.Helper()
	h.seq++
	return h.mustApplyEntry(h.entry(typ, req, h.sess, h.seq, 0))
}

func (h *harness) mustRegister(clientID string) uint64 {
	h.t.Helper()
	r := h.mustApplyEntry(h.entry(cRegister, &jfspb.RegisterRequest{Host: "h", ClientId: clientID}, 0, 0, 0)).(*jfspb.RegisterResponse)
	if r.Errno != 0 || r.Session == 0 {
		h.t.Fatalf("register: %v", r)
	}
	return r.Session
}

// mustErrnoOf returns the errno of a response message.
func mustErrnoOf(t testing.TB, m proto.Message) syscall.Errno {
	t.Helper()
	r, ok := m.(jfspb.Errno)
	if !ok {
		t.Fatalf("%T is not a response with an errno", m)
	}
	return errnoOf(r)
}

func mustOK(t testing.TB, m proto.Message) {
	t.Helper()
	if e := mustErrnoOf(t, m); e != 0 {
		t.Fatalf("%T: errno %v (%d)", m, e, int(e))
	}
}

func mustErrno(t testing.TB, m proto.Message, want syscall.Errno) {
	t.Helper()
	if got := mustErrnoOf(t, m); got != want {
		t.Fatalf("%T: errno %v (%d), want %v (%d)", m, got, int(got), want, int(want))
	}
}

func (h *harness) mustMkdir(parent uint64, name string) *jfspb.Attr {
	h.t.Helper()
	r := h.do(cMkdir, &jfspb.MkdirRequest{Parent: parent, Name: []byte(name), Mode: 0o755}).(*jfspb.MkdirResponse)
	mustOK(h.t, r)
	return r.Attr
}

// mustCreate creates and opens a file, then releases it unless keepOpen.
func (h *harness) mustCreate(parent uint64, name string, keepOpen bool) *jfspb.Attr {
	h.t.Helper()
	r := h.do(cCreate, &jfspb.CreateRequest{Parent: parent, Name: []byte(name), Mode: 0o644, Fh: 1}).(*jfspb.CreateResponse)
	mustOK(h.t, r)
	if !keepOpen {
		mustOK(h.t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: r.Attr.Ino, Fh: 1}))
	}
	return r.Attr
}

func (h *harness) mustWrite(ino uint64, off int64, data []byte) {
	h.t.Helper()
	r := h.do(cWrite, &jfspb.WriteRequest{Ino: ino, Offset: off, Data: data}).(*jfspb.WriteResponse)
	mustOK(h.t, r)
	if int(r.Written) != len(data) {
		h.t.Fatalf("wrote %d of %d", r.Written, len(data))
	}
}

func (h *harness) mustRead(ino uint64, off int64, n int) []byte {
	h.t.Helper()
	r := h.f.Read(&jfspb.ReadRequest{Ino: ino, Offset: off, Size: uint32(n)})
	mustOK(h.t, r)
	return r.Data
}

func (h *harness) mustAttr(ino uint64) *jfspb.Attr {
	h.t.Helper()
	r := h.f.GetAttr(&jfspb.GetAttrRequest{Ino: ino})
	mustOK(h.t, r)
	return r.Attr
}

func (h *harness) mustLookup(parent uint64, name string) *jfspb.Attr {
	h.t.Helper()
	r := h.f.Lookup(&jfspb.LookupRequest{Parent: parent, Name: []byte(name)})
	mustOK(h.t, r)
	return r.Attr
}

func (h *harness) lookupErrno(parent uint64, name string) syscall.Errno {
	return errnoOf(h.f.Lookup(&jfspb.LookupRequest{Parent: parent, Name: []byte(name)}))
}

func mustEqualBytes(t testing.TB, what string, got, want []byte) {
	t.Helper()
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: got %d bytes %q, want %d bytes %q", what, len(got), trunc(got), len(want), trunc(want))
	}
}

func trunc(b []byte) []byte {
	if len(b) > 64 {
		return b[:64]
	}
	return b
}

// mustReopen closes the FSM and opens the same file again.
func (h *harness) mustReopen() {
	h.t.Helper()
	if err := h.f.Close(); err != nil {
		h.t.Fatalf("Close: %v", err)
	}
	h.f = mustOpen(h.t, h.path, h.opts)
}
