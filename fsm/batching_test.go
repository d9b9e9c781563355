package fsm

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// How raft groups committed entries into ApplyBatch calls differs from
// node to node, and between a node's first apply and its replay after a
// restart; a checkpoint entry splits a batch in two transactions. None of
// it may change the state: these tests apply the same entries in one
// transaction on one replica and in several on another, and compare.

// applySplit applies es to f in one ApplyBatch, and to g one entry at a
// time, and returns the responses of both.
func applySplit(t *testing.T, f, g *FSM, es ...Entry) (one, apart []proto.Message) {
	t.Helper()
	rs, err := f.ApplyBatch(es)
	if err != nil {
		t.Fatal(err)
	}
	for i, e := range es {
		one = append(one, rs[i].Resp)
		r, err := g.ApplyBatch([]Entry{e})
		if err != nil {
			t.Fatal(err)
		}
		apart = append(apart, r[0].Resp)
	}
	return one, apart
}

// TestOrphanFreedInTheTransactionOfItsUnlink: FreeOrphans frees an inode
// whose last name an entry of the same transaction removed, as it does
// when the two are applied apart. (An orphan is listed in sustained with
// an empty value; bolt answered nil for it within the transaction that
// put it, so FreeOrphans skipped it on a replica that applied both at
// once, a restarted node catching up, and freed it on the others.)
func TestOrphanFreedInTheTransactionOfItsUnlink(t *testing.T) {
	h := mustHarness(t, Options{})
	g := h.mustReplica(Options{})
	h.leaderOpens = true
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, []byte("data"))
	h.replicas = nil

	h.seq++
	unlink := h.entry(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}, h.sess, h.seq, 0)
	free := h.entry(cFreeOrphans, &jfspb.FreeOrphansRequest{Inos: []uint64{f.Ino}}, 0, 0, 0)
	one, apart := applySplit(t, h.f, g, unlink, free)
	if n := one[1].(*jfspb.FreeOrphansResponse).GetFreed(); n != 1 {
		t.Errorf("FreeOrphans in the unlink's transaction freed %d, want 1", n)
	}
	if n := apart[1].(*jfspb.FreeOrphansResponse).GetFreed(); n != 1 {
		t.Errorf("FreeOrphans after the unlink's transaction freed %d, want 1", n)
	}
	mustSameDigest(t, h.f, g)
}

// TestEmptyXattrSeenInItsTransaction: an extended attribute set with an
// empty value exists for XATTR_CREATE and XATTR_REPLACE in the same
// transaction as in a later one.
func TestEmptyXattrSeenInItsTransaction(t *testing.T) {
	h := mustHarness(t, Options{})
	g := h.mustReplica(Options{})
	f := h.mustCreate(RootIno, "f", false)
	h.replicas = nil

	var es []Entry
	for _, flags := range []uint32{0, xattrCreate, xattrReplace} {
		h.seq++
		es = append(es, h.entry(cSetXattr, &jfspb.SetXattrRequest{Ino: f.Ino, Name: []byte("user.e"), Flags: flags}, h.sess, h.seq, 0))
	}
	one, apart := applySplit(t, h.f, g, es...)
	for i, want := range []syscall.Errno{0, syscall.EEXIST, 0} {
		mustErrno(t, one[i], want)
		mustErrno(t, apart[i], want)
	}
	mustSameDigest(t, h.f, g)
}

// randLog builds a random log of n entries or a few more, as a leader
// that keeps open files in memory proposes them: creates, opens, writes,
// truncates, POSIX locks, flocks, releases, unlinks with and without a
// FreeHint, renames, FreeOrphans, SessionsAlive, expired sessions,
// retries and acknowledgements, and checkpoints, from a few sessions. The
// entries are applied as they are built, so that later ones name real
// inodes.
func randLog(t *testing.T, seed uint64, n int) []Entry {
	r := rand.New(rand.NewPCG(seed, 1))
	h := &harness{t: t, path: filepath.Join(t.TempDir(), "gen.db"), now: t0, leaderOpens: true}
	h.f = mustOpen(t, h.path, Options{})
	var log []Entry
	apply := func(e Entry) proto.Message {
		log = append(log, e)
		return h.mustApplyEntry(e)
	}
	type sess struct{ id, seq, acked uint64 }
	var sessions []*sess
	register := func() {
		resp := apply(h.entry(cRegister, &jfspb.RegisterRequest{Host: "h", ClientId: fmt.Sprint("c", len(log))}, 0, 0, 0)).(*jfspb.RegisterResponse)
		sessions = append(sessions, &sess{id: resp.Session})
	}
	apply(h.entry(cSetSettings, &jfspb.SetSettingsRequest{Settings: &jfspb.Settings{BlockSize: 4096}, Initial: true}, 0, 0, 0))
	for range 3 {
		register()
	}
	var inos []uint64
	names := func() []byte { return []byte(fmt.Sprint("f", r.IntN(12))) }
	pick := func() uint64 {
		if len(inos) == 0 {
			return RootIno + 1
		}
		return inos[r.IntN(len(inos))]
	}
	do := func(typ jfspb.CommandType, req proto.Message) proto.Message {
		s := sessions[r.IntN(len(sessions))]
		seq := s.seq + 1
		if r.IntN(20) == 0 && s.seq > s.acked {
			seq = s.acked + 1 + uint64(r.IntN(int(s.seq-s.acked))) // a retry
		} else {
			s.seq = seq
		}
		if r.IntN(4) == 0 && s.seq > s.acked+2 {
			s.acked += uint64(r.IntN(int(s.seq - s.acked - 1)))
		}
		return apply(h.entry(typ, req, s.id, seq, s.acked))
	}
	for len(log) < n {
		switch r.IntN(23) {
		case 0, 1:
			resp := do(cCreate, &jfspb.CreateRequest{Parent: RootIno, Name: names(), Mode: 0o644, Fh: uint64(r.IntN(4) + 1)})
			if c, ok := resp.(*jfspb.CreateResponse); ok && c.Attr != nil {
				inos = append(inos, c.Attr.Ino)
			}
		case 2:
			do(cOpen, &jfspb.OpenRequest{Ino: pick(), Fh: uint64(r.IntN(4) + 1), Flags: 2})
		case 3, 4:
			do(cWrite, &jfspb.WriteRequest{Ino: pick(), Offset: int64(r.IntN(10000)), Data: make([]byte, r.IntN(6000)+1)})
		case 5, 6:
			typ := []jfspb.LockType{jfspb.LockType_LOCK_TYPE_UNLOCK, jfspb.LockType_LOCK_TYPE_READ, jfspb.LockType_LOCK_TYPE_WRITE}[r.IntN(3)]
			do(cSetLk, &jfspb.SetLkRequest{Ino: pick(), Owner: uint64(r.IntN(3) + 1), Type: typ, Start: int64(r.IntN(20)), Len: int64(r.IntN(10)), Pid: uint32(r.IntN(100))})
		case 7:
			typ := []jfspb.LockType{jfspb.LockType_LOCK_TYPE_UNLOCK, jfspb.LockType_LOCK_TYPE_READ, jfspb.LockType_LOCK_TYPE_WRITE}[r.IntN(3)]
			do(cFlock, &jfspb.FlockRequest{Ino: pick(), Fh: uint64(r.IntN(4) + 1), Type: typ, Pid: uint32(r.IntN(100))})
		case 8:
			do(cRelease, &jfspb.ReleaseRequest{Ino: pick(), Fh: uint64(r.IntN(4) + 1), ReleaseFlock: r.IntN(2) == 0, LockOwners: []uint64{uint64(r.IntN(3) + 1)}})
		case 9:
			do(cReleaseOwn, &jfspb.ReleaseLockOwnerRequest{Ino: pick(), Owner: uint64(r.IntN(3) + 1)})
		case 10, 11:
			var hint *jfspb.FreeHint
			if r.IntN(3) > 0 {
				hint = &jfspb.FreeHint{Ino: pick(), UnopenedSince: h.index - uint64(r.IntN(int(min(h.index, 30))))}
			}
			do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: names(), FreeHint: hint})
		case 12:
			do(cRename, &jfspb.RenameRequest{Parent: RootIno, Name: names(), NewParent: RootIno, NewName: names()})
		case 13:
			var list []uint64
			for range r.IntN(4) {
				list = append(list, pick())
			}
			apply(h.entry(jfspb.CommandType_COMMAND_TYPE_FREE_ORPHANS, &jfspb.FreeOrphansRequest{Inos: list}, 0, 0, 0))
		case 14:
			var ids []uint64
			for _, s := range sessions {
				ids = append(ids, s.id)
			}
			apply(h.entry(jfspb.CommandType_COMMAND_TYPE_SESSIONS_ALIVE, &jfspb.SessionsAliveRequest{Sessions: ids}, 0, 0, 0))
		case 15:
			if r.IntN(4) == 0 && len(sessions) > 1 {
				i := r.IntN(len(sessions))
				apply(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: sessions[i].id}, 0, 0, 0))
				sessions = append(sessions[:i], sessions[i+1:]...)
				register()
			}
			do(cSetAttr, &jfspb.SetAttrRequest{Ino: pick(), Valid: 8, Size: uint64(r.IntN(9000))})
		case 16:
			apply(h.entry(jfspb.CommandType_COMMAND_TYPE_CHECKPOINT, &jfspb.CheckpointRequest{}, 0, 0, 0))
		case 17:
			do(cLink, &jfspb.LinkRequest{Ino: pick(), NewParent: RootIno, NewName: names()})
		case 18:
			if r.IntN(2) == 0 {
				do(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: names(), Mode: 0o755})
			} else {
				do(cRmdir, &jfspb.RmdirRequest{Parent: RootIno, Name: names()})
			}
		case 19:
			var value []byte
			if r.IntN(2) == 0 {
				value = []byte("v")
			}
			flags := []uint32{0, xattrCreate, xattrReplace}[r.IntN(3)]
			do(cSetXattr, &jfspb.SetXattrRequest{Ino: pick(), Name: []byte(fmt.Sprint("user.x", r.IntN(2))), Value: value, Flags: flags})
		case 20:
			do(cRemoveXattr, &jfspb.RemoveXattrRequest{Ino: pick(), Name: []byte(fmt.Sprint("user.x", r.IntN(2)))})
		case 21:
			mode := []uint32{0, fallocKeepSize, fallocPunchHole | fallocKeepSize, fallocZeroRange}[r.IntN(4)]
			do(jfspb.CommandType_COMMAND_TYPE_FALLOCATE, &jfspb.FallocateRequest{Ino: pick(), Offset: int64(r.IntN(20000)), Length: int64(r.IntN(20000) + 1), Mode: mode})
		case 22:
			if r.IntN(4) == 0 {
				do(cWrite, &jfspb.WriteRequest{Ino: pick(), Offset: int64(r.IntN(4096)), Data: make([]byte, 4096*(FreeStep+10))})
			} else {
				apply(h.entry(cFreeData, &jfspb.FreeDataRequest{MaxBlocks: uint32(r.IntN(50) + 1)}, 0, 0, 0))
			}
		}
	}
	return log
}

// replayRun is a replica that keeps the digest of every checkpoint it
// applies, and may be closed and reopened between batches as a restarted
// node is.
type replayRun struct {
	t    *testing.T
	f    *FSM
	path string
	sums map[uint64][32]byte
}

func newReplayRun(t *testing.T) *replayRun {
	r := &replayRun{t: t, path: filepath.Join(t.TempDir(), "r.db"), sums: map[uint64][32]byte{}}
	r.open()
	return r
}

func (r *replayRun) open() {
	f, err := Open(r.path, Options{})
	if err != nil {
		r.t.Fatal(err)
	}
	f.SetCheckpointListener(func(index uint64, s *Snapshot) {
		defer s.Release()
		sum, err := s.Digest()
		if err != nil {
			panic(err)
		}
		r.sums[index] = sum
	})
	r.f = f
}

func (r *replayRun) apply(es []Entry) {
	if _, err := r.f.ApplyBatch(es); err != nil {
		r.t.Fatal(err)
	}
}

// TestReplayRandomLog: random logs applied in batches of up to 40 entries
// on one replica, and of up to 3 with a close and reopen now and then on
// another, give the same digest at every checkpoint and at the end.
func TestReplayRandomLog(t *testing.T) {
	for seed := range uint64(20) {
		log := randLog(t, seed, 600)
		r := rand.New(rand.NewPCG(seed, 2))
		a := newReplayRun(t)
		for i := 0; i < len(log); {
			j := min(len(log), i+1+r.IntN(40))
			a.apply(log[i:j])
			i = j
		}
		b := newReplayRun(t)
		for i := 0; i < len(log); {
			j := min(len(log), i+1+r.IntN(3))
			b.apply(log[i:j])
			i = j
			if r.IntN(8) == 0 {
				if err := b.f.Close(); err != nil {
					t.Fatal(err)
				}
				b.open()
			}
		}
		bad := 0
		for idx, s := range a.sums {
			if b.sums[idx] != s {
				bad++
				if bad < 3 {
					t.Errorf("seed %d: checkpoint %d differs", seed, idx)
				}
			}
		}
		_, da := mustDigest(t, a.f)
		_, db := mustDigest(t, b.f)
		if da != db {
			t.Errorf("seed %d: final digests differ", seed)
		}
		a.f.Close()
		b.f.Close()
	}
}
