package cluster_test

import (
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
	"github.com/jfs-dev/jfs/fsm"
)

func mustFail(t *testing.T, n *cluster.Node, want string) {
	t.Helper()
	select {
	case <-n.Failed():
	case <-time.After(30 * time.Second):
		t.Fatalf("node %s did not fail", n.ID())
	}
	if err := n.Err(); err == nil || !strings.Contains(err.Error(), want) {
		t.Fatalf("node %s failed with %v, want an error containing %q", n.ID(), err, want)
	}
}

// A log entry whose bytes do not match its checksum is never applied: the
// node stops loudly, naming the index, instead of crashing or going on.
func TestCorruptEntryFailsNode(t *testing.T) {
	c := clustertest.NewCluster(t, 1)
	n := c.Leader()
	sess := mustRegister(t, n, "a")
	before := n.FSM().AppliedIndex()
	good, err := fsm.Seal(&jfspb.LogEntry{Type: uint32(jfspb.CommandType_COMMAND_TYPE_MKDIR), Session: sess, Seq: 1})
	if err != nil {
		t.Fatal(err)
	}
	good[0] ^= 0x40
	f := n.Raft().Apply(good, 10*time.Second)
	if err := f.Error(); err != nil {
		t.Fatal(err)
	}
	resp, ok := f.Response().(error)
	if !ok || !errors.Is(resp, fsm.ErrChecksum) {
		t.Fatalf("apply answered %v, want a checksum error", f.Response())
	}
	mustFail(t, n, "index "+itoa(f.Index()))
	if got := n.FSM().AppliedIndex(); got != before {
		t.Fatalf("applied index moved from %d to %d", before, got)
	}
	// Nothing after it is applied either.
	h, req := mkdir(sess, 2, "after")
	if _, err := n.Propose(t.Context(), jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req); err == nil {
		t.Fatal("a command after the corrupt entry was applied")
	}
	if got := n.FSM().AppliedIndex(); got != before {
		t.Fatalf("applied index moved from %d to %d after the failure", before, got)
	}
	// No snapshot may claim the failed entries as applied.
	if err := n.Raft().Snapshot().Error(); err == nil {
		t.Fatal("raft took a snapshot after apply failed")
	}
}

func itoa(v uint64) string {
	var b []byte
	for {
		b = append([]byte{byte('0' + v%10)}, b...)
		if v /= 10; v == 0 {
			return string(b)
		}
	}
}

// A node that raft shuts down by itself (here: a leader that removed
// itself from the cluster) reports it, so that its process exits instead
// of serving nothing forever.
func TestRaftShutdownFailsNode(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	if err := leader.Raft().RemoveServer(raft.ServerID(leader.ID()), 0, 10*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	mustFail(t, leader, "raft has shut down")
	for _, id := range c.IDs() {
		if n := c.Node(id); n != leader {
			select {
			case <-n.Failed():
				t.Fatalf("%s failed too: %v", id, n.Err())
			default:
			}
		}
	}
}

// An API server whose listener breaks fails the node instead of leaving it
// running without an API.
func TestServeFailureFailsNode(t *testing.T) {
	c := clustertest.NewCluster(t, 1)
	n := c.Leader()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := cluster.Serve(n, lis)
	defer g.Stop()
	lis.Close()
	mustFail(t, n, "api server")
}

// A node marked corrupt that is elected anyway (its vote not yet taken)
// hands leadership over instead of leading.
func TestCorruptNodeHandsLeadershipOver(t *testing.T) {
	testCorruptHandsOver(t, 0)
}

// A corrupt leader whose transfers fail keeps trying until one succeeds,
// instead of leading for good, never ready.
func TestCorruptNodeRetriesHandOver(t *testing.T) {
	testCorruptHandsOver(t, 3)
}

func testCorruptHandsOver(t *testing.T, failures int) {
	failed, restore := cluster.FailTransfers(failures)
	t.Cleanup(restore) // after the cluster has stopped
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	var other *cluster.Node
	for _, id := range c.IDs() {
		if id != leader.ID() {
			other = c.Node(id)
			break
		}
	}
	mustPropose[*jfspb.MarkCorruptResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_MARK_CORRUPT, nil,
		&jfspb.MarkCorruptRequest{NodeId: other.ID(), Index: 1, Reason: "test"})
	c.WaitApplied(leader.FSM().AppliedIndex())
	// The mark is read from the state just after the apply.
	for deadline := time.Now().Add(30 * time.Second); other.Corrupt() == ""; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("%s does not know it is marked", other.ID())
		}
	}
	cf := leader.Raft().GetConfiguration()
	if err := cf.Error(); err != nil {
		t.Fatal(err)
	}
	var addr raft.ServerAddress
	for _, s := range cf.Configuration().Servers {
		if string(s.ID) == other.ID() {
			addr = s.Address
		}
	}
	if err := leader.TransferLeadership(raft.ServerID(other.ID()), addr).Error(); err != nil {
		t.Fatalf("transfer to %s: %v", other.ID(), err)
	}
	// other wins the election and hands over at once.
	deadline := time.Now().Add(30 * time.Second)
	for {
		if l := c.Leader(); l.ID() != other.ID() && !other.IsLeader() {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the corrupt %s still leads", other.ID())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if got := failed(); got != failures {
		t.Fatalf("%d transfers were refused, want %d", got, failures)
	}
}
