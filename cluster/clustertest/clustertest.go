// Package clustertest runs a jfs cluster inside one test process, on
// raft.InmemTransport, with hooks to partition nodes, stop and restart them.
// Each node keeps its raft log, snapshots and state machine on disk in a
// temporary directory, so a restarted node comes back with its state.
package clustertest

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
)

// Cluster is a set of in-process nodes.
type Cluster struct {
	t     testing.TB
	mu    sync.Mutex
	ids   []string
	dirs  map[string]string
	addrs map[string]raft.ServerAddress
	trans map[string]*raft.InmemTransport
	nodes map[string]*cluster.Node // nil while stopped
	cut   map[[2]string]bool       // links cut by Partition
	tune  func(*cluster.Config)
	delay atomic.Int64 // nanoseconds every AppendEntries RPC waits (DelayAppends)
	skews map[string]*atomic.Int64
	Rand  *rand.Rand // seeded; tests draw their random choices from it
	Seed  uint64
}

// Option changes every node's configuration before it starts.
type Option func(*cluster.Config)

// Fast is the timing used unless an Option says otherwise: elections within
// one to two seconds, still fast for tests, and a leader lease long enough
// that a leader on a loaded machine under the race detector (goroutines
// starved for hundreds of milliseconds) does not step down by itself.
func Fast(c *cluster.Config) {
	c.HeartbeatTimeout = time.Second
	c.ElectionTimeout = time.Second
	c.LeaderLeaseTimeout = 500 * time.Millisecond
	c.CommitTimeout = 5 * time.Millisecond
}

// Defaults undoes Fast: the nodes run with the raft timings a real jfsd
// uses (cluster.DefaultHeartbeatTimeout and its kin).
func Defaults(c *cluster.Config) {
	c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout = 0, 0, 0
}

// NewCluster starts n nodes (n1..nN) bootstrapped as one cluster and stops
// them when the test ends. The random seed comes from the test name so that a
// failure replays; it is logged.
func NewCluster(t testing.TB, n int, opts ...Option) *Cluster {
	t.Helper()
	seed := uint64(time.Now().UnixNano())
	c := &Cluster{
		t: t, dirs: map[string]string{}, addrs: map[string]raft.ServerAddress{},
		trans: map[string]*raft.InmemTransport{}, nodes: map[string]*cluster.Node{},
		cut: map[[2]string]bool{}, skews: map[string]*atomic.Int64{}, Seed: seed, Rand: rand.New(rand.NewPCG(seed, 0)),
	}
	t.Logf("clustertest seed %d", seed)
	c.tune = func(cfg *cluster.Config) {
		Fast(cfg)
		for _, o := range opts {
			o(cfg)
		}
	}
	var peers []cluster.Peer
	for i := 1; i <= n; i++ {
		id := fmt.Sprintf("n%d", i)
		c.ids = append(c.ids, id)
		c.dirs[id] = t.TempDir()
		c.addrs[id] = raft.ServerAddress(id)
		peers = append(peers, cluster.Peer{ID: id, RaftAddr: id})
	}
	for _, id := range c.ids {
		c.start(id, peers)
	}
	t.Cleanup(c.Close)
	return c
}

func (c *Cluster) start(id string, peers []cluster.Peer) {
	c.t.Helper()
	_, tr := raft.NewInmemTransportWithTimeout(c.addrs[id], 2*time.Second)
	c.mu.Lock()
	c.trans[id] = tr
	c.mu.Unlock()
	c.relink()
	cfg := cluster.Config{
		ID: id, DataDir: c.dirs[id], APIAddr: "inmem-" + id, Transport: &slowTransport{tr, c},
		InitialCluster: peers,
		ConfirmPeer: func(ctx context.Context, peer raft.Server, req *jfspb.ConfirmTermRequest) (*jfspb.ConfirmTermResponse, error) {
			to := string(peer.ID)
			c.mu.Lock()
			n, cut := c.nodes[to], c.cut[[2]string{id, to}]
			c.mu.Unlock()
			if cut || n == nil {
				return nil, fmt.Errorf("%s cannot reach %s", id, to)
			}
			return n.AnswerConfirmTerm(req), nil
		},
		ReadLease: true,
		Clock:     func() time.Time { return time.Now().Add(time.Duration(c.skew(id).Load())) },
		Logger: hclog.New(&hclog.LoggerOptions{
			Name: id, Level: hclog.Warn, Output: testWriter{c.t},
		}),
		// The cross-replica check asks the other nodes over gRPC, which
		// these nodes do not serve; its checkpoint entries would only move
		// the indexes tests wait for.
		IntegrityCheck: -1,
	}
	c.tune(&cfg)
	node, err := cluster.NewNode(cfg)
	if err != nil {
		c.t.Fatalf("start %s: %v", id, err)
	}
	c.mu.Lock()
	c.nodes[id] = node
	c.mu.Unlock()
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}

// relink connects every pair of running transports whose link is not cut.
func (c *Cluster) relink() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for a, ta := range c.trans {
		for _, b := range c.ids {
			if a == b {
				continue
			}
			tb, running := c.trans[b]
			if !running || c.cut[[2]string{a, b}] {
				ta.Disconnect(c.addrs[b])
			} else {
				ta.Connect(c.addrs[b], tb)
			}
		}
	}
}

// DelayAppends makes every AppendEntries RPC, heartbeats and replication
// alike, wait d before it is sent, the way a leader on a CPU starved by
// other work sends late and hears back late; 0 ends it.
func (c *Cluster) DelayAppends(d time.Duration) { c.delay.Store(int64(d)) }

// slowTransport is an InmemTransport whose AppendEntries obey DelayAppends.
// It refuses pipelining, so that replication goes through AppendEntries too.
type slowTransport struct {
	*raft.InmemTransport
	c *Cluster
}

func (s *slowTransport) AppendEntriesPipeline(raft.ServerID, raft.ServerAddress) (raft.AppendPipeline, error) {
	return nil, raft.ErrPipelineReplicationNotSupported
}

func (s *slowTransport) AppendEntries(id raft.ServerID, target raft.ServerAddress, args *raft.AppendEntriesRequest, resp *raft.AppendEntriesResponse) error {
	if d := time.Duration(s.c.delay.Load()); d > 0 {
		time.Sleep(d)
	}
	return s.InmemTransport.AppendEntries(id, target, args, resp)
}

func (c *Cluster) skew(id string) *atomic.Int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.skews[id] == nil {
		c.skews[id] = new(atomic.Int64)
	}
	return c.skews[id]
}

// Jump moves node id's lease clock d ahead of the others', for good: to its
// read lease it is as if the node had been frozen for d while the rest of
// the cluster went on.
func (c *Cluster) Jump(id string, d time.Duration) { c.skew(id).Add(int64(d)) }

// IDs are the node ids, n1..nN.
func (c *Cluster) IDs() []string { return slices.Clone(c.ids) }

// Node returns a running node, or nil if it is stopped.
func (c *Cluster) Node(id string) *cluster.Node {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.nodes[id]
}

// Partition cuts every link between the nodes in group and the others.
func (c *Cluster) Partition(group ...string) {
	c.mu.Lock()
	for _, a := range c.ids {
		for _, b := range c.ids {
			if slices.Contains(group, a) != slices.Contains(group, b) {
				c.cut[[2]string{a, b}] = true
			}
		}
	}
	c.mu.Unlock()
	c.relink()
}

// Heal restores every link.
func (c *Cluster) Heal() {
	c.mu.Lock()
	clear(c.cut)
	c.mu.Unlock()
	c.relink()
}

// Stop shuts a node down, keeping its data dir.
func (c *Cluster) Stop(id string) {
	c.t.Helper()
	c.mu.Lock()
	node, tr := c.nodes[id], c.trans[id]
	c.nodes[id] = nil
	delete(c.trans, id)
	c.mu.Unlock()
	if node == nil {
		return
	}
	if err := node.Shutdown(); err != nil {
		c.t.Logf("stop %s: %v", id, err)
	}
	tr.DisconnectAll()
	c.relink()
}

// Restart starts a stopped node again from its data dir.
func (c *Cluster) Restart(id string) {
	c.t.Helper()
	c.start(id, nil)
}

// Close stops every node.
func (c *Cluster) Close() {
	for _, id := range c.ids {
		c.Stop(id)
	}
}

// Leader waits up to thirty seconds for a node that is leader and ready to
// serve reads (among those not cut off from a majority) and returns it.
func (c *Cluster) Leader() *cluster.Node {
	c.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, id := range c.ids {
			n := c.Node(id)
			if n == nil || !n.IsLeader() {
				continue
			}
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			err := n.ReadIndex(ctx)
			cancel()
			if err == nil {
				return n
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	c.t.Fatalf("no ready leader within 30s")
	return nil
}

// WaitApplied waits up to thirty seconds until every running node has
// applied index.
func (c *Cluster) WaitApplied(index uint64) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, id := range c.ids {
		if n := c.Node(id); n != nil {
			if err := n.FSM().WaitApplied(ctx, index); err != nil {
				c.t.Fatalf("%s did not apply index %d: %v (at %d)", id, index, err, n.FSM().AppliedIndex())
			}
		}
	}
}
