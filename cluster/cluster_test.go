package cluster_test

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

func mustPropose[R proto.Message](t *testing.T, n *cluster.Node, typ jfspb.CommandType, h *jfspb.Header, req proto.Message) R {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	resp, err := n.Propose(ctx, typ, h, req)
	if err != nil {
		t.Fatalf("propose %v on %s: %v", typ, n.ID(), err)
	}
	r, ok := resp.(R)
	if !ok {
		t.Fatalf("propose %v: response %T", typ, resp)
	}
	return r
}

func mustRegister(t *testing.T, n *cluster.Node, name string) uint64 {
	t.Helper()
	r := mustPropose[*jfspb.RegisterResponse](t, n, jfspb.CommandType_COMMAND_TYPE_REGISTER, nil,
		&jfspb.RegisterRequest{Host: "test", MountPoint: "/" + name, ClientId: name})
	if r.Errno != 0 || r.Session == 0 {
		t.Fatalf("register: errno %d session %d", r.Errno, r.Session)
	}
	return r.Session
}

func mustLookup(t *testing.T, n *cluster.Node, parent uint64, name string) *jfspb.LookupResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := n.ReadIndex(ctx); err != nil {
		t.Fatalf("read index on %s: %v", n.ID(), err)
	}
	return n.FSM().Lookup(&jfspb.LookupRequest{Parent: parent, Name: []byte(name)})
}

func mkdir(session, seq uint64, name string) (*jfspb.Header, *jfspb.MkdirRequest) {
	h := &jfspb.Header{Session: session, Seq: seq, Acked: seq - 1}
	return h, &jfspb.MkdirRequest{Header: h, Parent: 1, Name: []byte(name), Mode: 0o755}
}

// TestLeaderLoss: the leader stops; the others elect a new one, which has
// every acknowledged write and takes new ones.
func TestLeaderLoss(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	sess := mustRegister(t, leader, "a")
	for i := uint64(1); i <= 20; i++ {
		h, req := mkdir(sess, i, fmt.Sprintf("d%d", i))
		if r := mustPropose[*jfspb.MkdirResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req); r.Errno != 0 {
			t.Fatalf("mkdir d%d: errno %d", i, r.Errno)
		}
	}
	old := leader.ID()
	c.Stop(old)
	start := time.Now()
	leader = c.Leader()
	t.Logf("new leader %s after %v", leader.ID(), time.Since(start))
	if leader.ID() == old {
		t.Fatalf("stopped node %s still leads", old)
	}
	for i := 1; i <= 20; i++ {
		if r := mustLookup(t, leader, 1, fmt.Sprintf("d%d", i)); r.Errno != 0 {
			t.Fatalf("d%d lost after failover: errno %d", i, r.Errno)
		}
	}
	h, req := mkdir(sess, 21, "after")
	if r := mustPropose[*jfspb.MkdirResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req); r.Errno != 0 {
		t.Fatalf("mkdir after failover: errno %d", r.Errno)
	}
	// The old leader comes back as a follower and catches up.
	c.Restart(old)
	c.WaitApplied(leader.FSM().AppliedIndex())
	mustSameDigests(t, c)
}

// TestExactlyOnceAcrossLeaderChange: a create that committed, retried with
// the same (session, seq) at a new leader, returns the original result
// instead of EEXIST and creates nothing twice.
func TestExactlyOnceAcrossLeaderChange(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	sess := mustRegister(t, leader, "a")
	h := &jfspb.Header{Session: sess, Seq: 1}
	req := &jfspb.CreateRequest{Header: h, Parent: 1, Name: []byte("f"), Mode: 0o644, Flags: uint32(syscall.O_CREAT | syscall.O_EXCL | syscall.O_RDWR), Fh: 7}
	first := mustPropose[*jfspb.CreateResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_CREATE, h, req)
	if first.Errno != 0 {
		t.Fatalf("create: errno %d", first.Errno)
	}
	c.Stop(leader.ID())
	leader = c.Leader()
	again := mustPropose[*jfspb.CreateResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_CREATE, h, req)
	if !proto.Equal(first, again) {
		t.Fatalf("retried create answered %v, first answer was %v", again, first)
	}
	// A new request (new seq) for the same name does fail with EEXIST.
	h2 := &jfspb.Header{Session: sess, Seq: 2, Acked: 1}
	req2 := proto.Clone(req).(*jfspb.CreateRequest)
	req2.Header = h2
	if r := mustPropose[*jfspb.CreateResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_CREATE, h2, req2); r.Errno != int32(syscall.EEXIST) {
		t.Fatalf("second create with O_EXCL: errno %d, want EEXIST", r.Errno)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := leader.ReadIndex(ctx); err != nil {
		t.Fatal(err)
	}
	dir := leader.FSM().ReadDir(&jfspb.ReadDirRequest{Ino: 1})
	if len(dir.Entries) != 1 {
		t.Fatalf("root has %d entries, want 1", len(dir.Entries))
	}
}

// TestFollowerCatchUpBySnapshot: a follower that was down while the leader
// wrote on and compacted its log catches up from a snapshot.
func TestFollowerCatchUpBySnapshot(t *testing.T) {
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) {
		cfg.SnapshotThreshold = 64
		cfg.TrailingLogs = 16
		cfg.SnapshotInterval = 50 * time.Millisecond
	})
	leader := c.Leader()
	var follower string
	for _, id := range c.IDs() {
		if id != leader.ID() {
			follower = id
			break
		}
	}
	c.Stop(follower)
	sess := mustRegister(t, leader, "a")
	for i := uint64(1); i <= 300; i++ {
		h, req := mkdir(sess, i, fmt.Sprintf("d%d", i))
		mustPropose[*jfspb.MkdirResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req)
	}
	if err := leader.Raft().Snapshot().Error(); err != nil {
		t.Fatalf("snapshot: %v", err)
	}
	t.Logf("leader snapshot at %s", leader.Raft().Stats()["last_snapshot_index"])
	c.Restart(follower)
	c.WaitApplied(leader.FSM().AppliedIndex())
	mustSameDigests(t, c)
	n := c.Node(follower)
	// The log it missed was compacted away: only a snapshot could bring it
	// up to date. Raft records the installed snapshot just after it has
	// restored the state machine, so give it a moment.
	deadline := time.Now().Add(30 * time.Second)
	for n.Raft().Stats()["last_snapshot_index"] == "0" {
		if time.Now().After(deadline) {
			t.Fatal("follower caught up without installing a snapshot (last_snapshot_index 0)")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if r := n.FSM().Lookup(&jfspb.LookupRequest{Parent: 1, Name: []byte("d300")}); r.Errno != 0 {
		t.Fatalf("follower lacks d300: errno %d", r.Errno)
	}
}

// TestPartitionedLeaderServesNoReads: once the majority has moved on to a
// new leader that took a write, the old leader, cut off, serves no read: it
// cannot confirm its leadership. (Right at the cut it may still confirm it
// with a heartbeat already in flight, which is safe: no other leader can
// exist yet.)
func TestPartitionedLeaderServesNoReads(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	old := c.Leader()
	c.Partition(old.ID())
	// The majority side elects a leader and takes writes.
	var leader *cluster.Node
	deadline := time.Now().Add(30 * time.Second)
	for leader == nil && time.Now().Before(deadline) {
		for _, id := range c.IDs() {
			if n := c.Node(id); id != old.ID() && n.IsLeader() {
				leader = n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	if leader == nil {
		t.Fatal("majority elected no leader")
	}
	sess := mustRegister(t, leader, "b")
	h, req := mkdir(sess, 1, "x")
	mustPropose[*jfspb.MkdirResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := old.ReadIndex(ctx); !errors.Is(err, cluster.ErrNotLeader) {
		t.Fatalf("isolated old leader ReadIndex: %v, want ErrNotLeader", err)
	}
	c.Heal()
	c.WaitApplied(leader.FSM().AppliedIndex())
	mustSameDigests(t, c)
}

func mustSameDigests(t *testing.T, c *clustertest.Cluster) {
	t.Helper()
	var want [32]byte
	var wantID string
	var wantIdx uint64
	for _, id := range c.IDs() {
		n := c.Node(id)
		if n == nil {
			continue
		}
		idx, d, err := n.FSM().Digest()
		if err != nil {
			t.Fatalf("digest %s: %v", id, err)
		}
		if wantID == "" {
			want, wantID, wantIdx = d, id, idx
			continue
		}
		if idx != wantIdx {
			t.Fatalf("%s applied %d, %s applied %d", id, idx, wantID, wantIdx)
		}
		if d != want {
			t.Fatalf("state of %s differs from %s at index %d", id, wantID, idx)
		}
	}
}
