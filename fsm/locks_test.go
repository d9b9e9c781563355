package fsm

import (
	"fmt"
	"slices"
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

const (
	lkUn = jfspb.LockType_LOCK_TYPE_UNLOCK
	lkRd = jfspb.LockType_LOCK_TYPE_READ
	lkWr = jfspb.LockType_LOCK_TYPE_WRITE
)

func TestPosixLocks(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	setlk := func(sess, owner uint64, typ jfspb.LockType, start, n int64) *jfspb.SetLkResponse {
		h.seq++
		return h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: owner, Type: typ, Start: start, Len: n, Pid: uint32(owner * 10)}, sess, h.seq, 0)).(*jfspb.SetLkResponse)
	}
	getlk := func(sess, owner uint64, typ jfspb.LockType, start, n int64) *jfspb.GetLkResponse {
		return h.f.GetLk(&jfspb.GetLkRequest{Session: sess, Ino: f.Ino, Owner: owner, Type: typ, Start: start, Len: n})
	}

	mustOK(t, setlk(h.sess, 1, lkWr, 0, 10))
	mustOK(t, setlk(h.sess, 2, lkRd, 20, 0))
	for _, tc := range []struct {
		name      string
		sess      uint64
		owner     uint64
		typ       jfspb.LockType
		start, n  int64
		want      syscall.Errno
		conflicts []*jfspb.LockOwner
	}{
		{"write over write", other, 1, lkWr, 5, 1, syscall.EAGAIN, []*jfspb.LockOwner{{Session: h.sess, Owner: 1}}},
		{"write over both", other, 1, lkWr, 0, 0, syscall.EAGAIN, []*jfspb.LockOwner{{Session: h.sess, Owner: 1}, {Session: h.sess, Owner: 2}}},
		{"read over read", other, 1, lkRd, 25, 5, 0, nil},
		{"same owner upgrades", h.sess, 1, lkRd, 0, 5, 0, nil},
		{"negative start", other, 1, lkRd, -1, 5, syscall.EINVAL, nil},
		{"negative length", other, 3, lkRd, 12, -2, 0, nil},
		{"length below zero", other, 1, lkRd, 1, -5, syscall.EINVAL, nil},
		{"overflow", other, 1, lkRd, 1<<62 + 1, 1 << 62, syscall.EOVERFLOW, nil},
		{"bad type", other, 1, jfspb.LockType(7), 0, 1, syscall.EINVAL, nil},
		{"unlock nothing", other, 9, lkUn, 0, 0, 0, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := setlk(tc.sess, tc.owner, tc.typ, tc.start, tc.n)
			mustErrno(t, r, tc.want)
			if len(r.Conflicts) != len(tc.conflicts) {
				t.Fatalf("conflicts %v, want %v", r.Conflicts, tc.conflicts)
			}
			for i := range r.Conflicts {
				if !proto.Equal(r.Conflicts[i], tc.conflicts[i]) {
					t.Fatalf("conflicts %v, want %v", r.Conflicts, tc.conflicts)
				}
			}
		})
	}
	// F_GETLK reports the first conflicting lock, or UNLOCK.
	g := getlk(other, 1, lkWr, 7, 1)
	mustOK(t, g)
	if g.Type != lkWr || g.Start != 5 || g.Len != 5 || g.Pid != 10 || g.Holder.Owner != 1 {
		t.Fatalf("getlk %v", g)
	}
	if g := getlk(h.sess, 1, lkWr, 0, 10); g.Type != lkUn {
		t.Fatalf("own lock conflicts: %v", g)
	}
	mustErrno(t, getlk(other, 1, lkUn, 0, 1), syscall.EINVAL)
	mustErrno(t, h.f.GetLk(&jfspb.GetLkRequest{Ino: 999, Type: lkRd}), syscall.ENOENT)

	// FLUSH drops every lock of the owner.
	mustOK(t, h.do(cReleaseOwn, &jfspb.ReleaseLockOwnerRequest{Ino: f.Ino, Owner: 1}))
	if g := getlk(other, 5, lkWr, 0, 10); g.Type != lkUn {
		t.Fatalf("after release owner: %v", g)
	}
	// Session expiry drops the rest of the session's locks.
	if n := len(h.f.Locks(&jfspb.ListLocksRequest{Session: other}).Locks); n != 2 {
		t.Fatalf("other holds %d locks, want 2", n)
	}
	mustOK(t, h.mustApplyEntry(h.entry(cExpire, &jfspb.ExpireSessionRequest{SessionId: other}, 0, 0, 0)))
	if ls := h.f.Locks(&jfspb.ListLocksRequest{}).Locks; len(ls) != 1 || ls[0].Owner.Owner != 2 {
		t.Fatalf("locks after expiry: %v", ls)
	}
}

func TestFlock(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	flock := func(sess, fh uint64, typ jfspb.LockType) *jfspb.FlockResponse {
		h.seq++
		return h.mustApplyEntry(h.entry(cFlock, &jfspb.FlockRequest{Ino: f.Ino, Fh: fh, Type: typ, Pid: 1}, sess, h.seq, 0)).(*jfspb.FlockResponse)
	}
	for _, tc := range []struct {
		name string
		sess uint64
		fh   uint64
		typ  jfspb.LockType
		want syscall.Errno
	}{
		{"sh", h.sess, 1, lkRd, 0},
		{"sh again", other, 1, lkRd, 0},
		{"ex conflicts", other, 2, lkWr, syscall.EAGAIN},
		{"conversion conflicts and drops", other, 1, lkWr, syscall.EAGAIN},
		{"un", h.sess, 1, lkUn, 0},
		{"ex now free", other, 2, lkWr, 0},
		{"sh conflicts", h.sess, 1, lkRd, syscall.EAGAIN},
		{"bad type", h.sess, 1, jfspb.LockType(9), syscall.EINVAL},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := flock(tc.sess, tc.fh, tc.typ)
			mustErrno(t, r, tc.want)
			if tc.want == syscall.EAGAIN && len(r.Conflicts) == 0 {
				t.Fatal("EAGAIN without conflicts")
			}
		})
	}
	// Release with the flock flag drops the handle's flock.
	mustOK(t, h.mustApplyEntry(h.entry(cOpen, &jfspb.OpenRequest{Ino: f.Ino, Fh: 2}, other, 100, 0)))
	mustOK(t, h.mustApplyEntry(h.entry(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino, Fh: 2, ReleaseFlock: true}, other, 101, 0)))
	mustOK(t, flock(h.sess, 1, lkWr))
	mustErrno(t, h.do(cFlock, &jfspb.FlockRequest{Ino: 999, Type: lkRd}), syscall.ENOENT)
	// Unlinking and releasing the file frees its locks.
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 3, Type: lkWr}))
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino, Fh: 1}))
	if ls := h.f.Locks(&jfspb.ListLocksRequest{}).Locks; len(ls) != 0 {
		t.Fatalf("locks of a freed inode: %v", ls)
	}
}

// TestEAGAINNotStored: a lock request answered EAGAIN is evaluated again
// when the leader re-proposes it with the same (session, seq).
func TestEAGAINNotStored(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr}))
	req := &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr, Block: true}
	mustErrno(t, h.mustApplyEntry(h.entry(cSetLk, req, other, 1, 0)), syscall.EAGAIN)
	mustOK(t, h.do(cReleaseOwn, &jfspb.ReleaseLockOwnerRequest{Ino: f.Ino, Owner: 1}))
	mustOK(t, h.mustApplyEntry(h.entry(cSetLk, req, other, 1, 0)))
	// Now granted, the answer is stored.
	mustOK(t, h.mustApplyEntry(h.entry(cSetLk, req, other, 1, 0)))
}

func TestLocksPersist(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	f := h.mustCreate(RootIno, "f", true)
	// Owners in an order that F_GETLK can observe: owner 5 first, then 3.
	h.seq = 10
	for _, r := range []struct {
		sess, owner uint64
		typ         jfspb.LockType
		start, n    int64
	}{
		{other, 5, lkRd, 100, 10},
		{h.sess, 3, lkRd, 0, 0},
		{other, 5, lkRd, 0, 5},
		{h.sess, 4, lkRd, 50, 1},
		{h.sess, 3, lkUn, 40, 20},
	} {
		h.seq++
		mustOK(t, h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: r.owner, Type: r.typ, Start: r.start, Len: r.n, Pid: uint32(r.owner)}, r.sess, h.seq, 0)))
	}
	mustOK(t, h.do(cFlock, &jfspb.FlockRequest{Ino: f.Ino, Fh: 9, Type: lkRd, Pid: 99}))
	before := h.f.Locks(&jfspb.ListLocksRequest{})
	getlk := &jfspb.GetLkRequest{Session: 77, Ino: f.Ino, Type: lkWr, Start: 0, Len: 0}
	g1 := h.f.GetLk(getlk)
	if g1.Holder.Owner != 5 {
		t.Fatalf("first conflicting lock %v, want owner 5's", g1)
	}
	for _, l := range before.Locks {
		if l.SinceNs == 0 {
			t.Fatalf("lock without since: %v", l)
		}
	}
	if strings.Count(before.String(), "LOCK_KIND_POSIX") != 5 {
		t.Fatalf("locks %v", before)
	}
	h.mustReopen()
	if after := h.f.Locks(&jfspb.ListLocksRequest{}); !proto.Equal(before, after) {
		t.Fatalf("locks after reopen %v, want %v", after, before)
	}
	if g2 := h.f.GetLk(getlk); !proto.Equal(g1, g2) {
		t.Fatalf("getlk after reopen %v, want %v", g2, g1)
	}
	mustErrno(t, h.do(cFlock, &jfspb.FlockRequest{Ino: f.Ino, Fh: 1, Type: lkWr}), syscall.EAGAIN)
	mustErrno(t, h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr, Start: 50, Len: 1}, other, 100, 0)), syscall.EAGAIN)
	mustOK(t, h.mustApplyEntry(h.entry(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 1, Type: lkWr, Start: 45, Len: 5}, other, 101, 0)))
}

// TestReleaseDropsListedOwners: a release listing lock owners (the open
// file's OFD owners) drops their POSIX locks on the inode, and only theirs.
func TestReleaseDropsListedOwners(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", true)
	g := h.mustCreate(RootIno, "g", true)
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 7, Type: lkWr, Start: 0, Len: 10}))  // OFD of fh 1
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: f.Ino, Owner: 8, Type: lkWr, Start: 20, Len: 10})) // a process
	mustOK(t, h.do(cSetLk, &jfspb.SetLkRequest{Ino: g.Ino, Owner: 7, Type: lkWr, Start: 0, Len: 10}))  // same id, other inode
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: f.Ino, Fh: 2}))
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: f.Ino, Fh: 1, LockOwners: []uint64{7}}))
	var left []string
	for _, l := range h.f.Locks(&jfspb.ListLocksRequest{}).Locks {
		left = append(left, fmt.Sprintf("%d/%d@%d", l.Ino, l.Owner.GetOwner(), l.Start))
	}
	want := []string{fmt.Sprintf("%d/8@20", f.Ino), fmt.Sprintf("%d/7@0", g.Ino)}
	slices.Sort(left)
	slices.Sort(want)
	if !slices.Equal(left, want) {
		t.Fatalf("locks after the release: %v, want %v", left, want)
	}
}
