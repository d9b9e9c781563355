package cluster

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/fsm"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// Peer is one member of the initial cluster: its id and raft address.
type Peer struct {
	ID       string
	RaftAddr string
}

// ParseInitialCluster parses "n1=127.0.0.1:7001,n2=127.0.0.1:7002,...".
// Ids and addresses must be unique and every address must be host:port.
func ParseInitialCluster(s string) ([]Peer, error) {
	if strings.TrimSpace(s) == "" {
		return nil, errors.New("initial cluster is empty: want ID=HOST:PORT[,ID=HOST:PORT...]")
	}
	var peers []Peer
	for _, part := range strings.Split(s, ",") {
		id, addr, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok || id == "" || addr == "" {
			return nil, fmt.Errorf("initial cluster member %q: want ID=HOST:PORT", part)
		}
		if _, _, err := net.SplitHostPort(addr); err != nil {
			return nil, fmt.Errorf("initial cluster member %q: %w", part, err)
		}
		if slices.ContainsFunc(peers, func(p Peer) bool { return p.ID == id }) {
			return nil, fmt.Errorf("initial cluster names %q twice", id)
		}
		if slices.ContainsFunc(peers, func(p Peer) bool { return p.RaftAddr == addr }) {
			return nil, fmt.Errorf("initial cluster uses address %s twice", addr)
		}
		peers = append(peers, Peer{ID: id, RaftAddr: addr})
	}
	return peers, nil
}

// Config configures a Node.
type Config struct {
	ID       string // this node's id, as in InitialCluster
	DataDir  string // raft log, snapshots and the state machine's bolt file
	RaftAddr string // host:port for raft traffic (ignored with Transport set)
	APIAddr  string // host:port the gRPC API listens on; clients and other nodes dial it

	// InitialCluster bootstraps a new cluster when the data dir holds no
	// raft state. It is ignored when the node restarts from its data dir.
	InitialCluster []Peer

	// Timing; zero values take the defaults below (DESIGN.md "Timing" says
	// why). CheckTiming states what combinations are allowed.
	HeartbeatTimeout   time.Duration
	ElectionTimeout    time.Duration
	LeaderLeaseTimeout time.Duration
	CommitTimeout      time.Duration
	SnapshotThreshold  uint64 // entries between snapshots
	SnapshotInterval   time.Duration
	TrailingLogs       uint64 // entries kept after a snapshot, for followers to catch up from
	// TrailingLogsBytes bounds the entries kept after a snapshot by their
	// size as well (default 64 MiB): fewer than TrailingLogs are kept when
	// entries are large (disk.go).
	TrailingLogsBytes uint64
	// SnapshotThresholdBytes takes a snapshot once this many bytes of
	// entries were applied since the last one (default 64 MiB), however
	// few entries they are. raft.db holds about TrailingLogsBytes plus
	// this much.
	SnapshotThresholdBytes uint64
	// CompactMin is the smallest raft.db (at start) or fsm.db (at start
	// and before a snapshot) that is compacted once half of it is free
	// (default 64 MiB, negative: never). It overrides FSM.CompactMin.
	CompactMin int64

	// ApplyTimeout bounds how long a proposal may wait to be enqueued.
	ApplyTimeout time.Duration

	// ReadMode is how the leader serves reads (default ReadBatched).
	ReadMode ReadMode
	// ReadLease lets the leader serve reads without a round of
	// confirmations while it holds a lease, and makes this node keep the
	// start rule that its answers promise: with raft state, raft starts
	// only HeartbeatTimeout (plus LeaseDrift) after the node (jfsd
	// --read-lease, DESIGN.md "Reads under a lease"). Every node of a
	// cluster should have the same setting; a node without it vouches for
	// no lease.
	ReadLease bool
	// Started is when the process started, from which the start rule
	// counts; zero: when NewNode was called.
	Started time.Time

	// SessionTTL is how long a client session lives without a heartbeat
	// (default 30s).
	SessionTTL time.Duration
	// CacheFanout is how many sessions' entry grants one directory may
	// have before its entries are no longer granted (default 10000;
	// DESIGN.md "Coherent caches").
	CacheFanout int
	// DeadlockScan is how often the leader searches the whole wait-for
	// graph for cycles that formed after their waits were admitted
	// (default 500ms).
	DeadlockScan time.Duration
	// IntegrityCheck is how often the leader compares the replicas' state
	// digests at a checkpoint (default 1m; negative: never).
	IntegrityCheck time.Duration

	FSM fsm.Options

	Logger hclog.Logger

	// TLS, when set, secures the raft port (only node certificates get
	// through) and the node's calls to the other nodes' APIs. The API
	// listener is secured by whoever serves it (see ServerOptions).
	TLS *mtls.Source

	// Transport replaces the TCP transport (tests use raft.InmemTransport).
	Transport raft.Transport
	// ConfirmPeer replaces the gRPC call by which a leader asks another
	// voter for its term before serving reads (tests without gRPC).
	ConfirmPeer PeerConfirmer
	// Clock replaces time.Now for the read lease (tests only: a clock that
	// jumps ahead stands for a node that was frozen).
	Clock func() time.Time
	// InMemory keeps the raft log and snapshots in memory (tests only); the
	// state machine still lives in DataDir.
	InMemory bool
}

// Default raft timings. They keep one leader on a 2-core machine loaded far
// beyond its cores, and still replace a dead leader within about two
// heartbeat timeouts (see DESIGN.md "Timing").
const (
	DefaultHeartbeatTimeout   = time.Second
	DefaultElectionTimeout    = 1500 * time.Millisecond
	DefaultLeaderLeaseTimeout = time.Second
	// DefaultCommitTimeout is how long an idle leader waits (up to twice
	// as long, at random) before it tells the followers the commit index
	// of the entries they already hold, so that they apply them. New
	// entries are sent at once whatever it is; it only bounds how far an
	// idle follower's state lags behind the leader's.
	DefaultCommitTimeout = 250 * time.Millisecond
)

// Default bounds of the raft log in bytes (DESIGN.md "Storage").
const (
	DefaultTrailingLogsBytes      = 64 << 20
	DefaultSnapshotThresholdBytes = 64 << 20
)

// CheckTiming reports whether the three raft timings work together; zero
// values stand for the defaults. The error names the offending setting by
// its jfsd flag.
//
//   - every timing is at least 10ms;
//   - the leader lease must not exceed the heartbeat timeout: a leader must
//     step down before a follower that stopped hearing from it can start an
//     election, else two nodes could both act as leader;
//   - the election timeout must be at least the heartbeat timeout.
func CheckTiming(heartbeat, election, lease time.Duration) error {
	if heartbeat == 0 {
		heartbeat = DefaultHeartbeatTimeout
	}
	if election == 0 {
		election = DefaultElectionTimeout
	}
	if lease == 0 {
		lease = DefaultLeaderLeaseTimeout
	}
	for _, t := range []struct {
		flag string
		d    time.Duration
	}{{"heartbeat-timeout", heartbeat}, {"election-timeout", election}, {"leader-lease-timeout", lease}} {
		if t.d < 10*time.Millisecond {
			return fmt.Errorf("--%s %v: must be at least 10ms", t.flag, t.d)
		}
	}
	if lease > heartbeat {
		return fmt.Errorf("--leader-lease-timeout %v must not exceed --heartbeat-timeout %v: a leader must step down before its followers may elect another", lease, heartbeat)
	}
	if election < heartbeat {
		return fmt.Errorf("--election-timeout %v must be at least --heartbeat-timeout %v", election, heartbeat)
	}
	return nil
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d == 0 {
			*d = v
		}
	}
	def(&c.HeartbeatTimeout, DefaultHeartbeatTimeout)
	def(&c.ElectionTimeout, DefaultElectionTimeout)
	def(&c.LeaderLeaseTimeout, DefaultLeaderLeaseTimeout)
	def(&c.CommitTimeout, DefaultCommitTimeout)
	def(&c.SnapshotInterval, 30*time.Second)
	def(&c.ApplyTimeout, 10*time.Second)
	def(&c.SessionTTL, 30*time.Second)
	def(&c.DeadlockScan, 500*time.Millisecond)
	def(&c.IntegrityCheck, time.Minute)
	if c.SnapshotThreshold == 0 {
		c.SnapshotThreshold = 8192
	}
	if c.TrailingLogs == 0 {
		c.TrailingLogs = 10240
	}
	if c.TrailingLogsBytes == 0 {
		c.TrailingLogsBytes = DefaultTrailingLogsBytes
	}
	if c.SnapshotThresholdBytes == 0 {
		c.SnapshotThresholdBytes = DefaultSnapshotThresholdBytes
	}
	if c.CompactMin == 0 {
		c.CompactMin = fsm.DefaultCompactMin
	}
	c.FSM.CompactMin = c.CompactMin
	if c.Logger == nil {
		c.Logger = hclog.NewNullLogger()
	}
}

func (c *Config) validate() error {
	if c.ID == "" {
		return errors.New("node id is empty")
	}
	if c.DataDir == "" {
		return errors.New("data dir is empty")
	}
	if err := CheckTiming(c.HeartbeatTimeout, c.ElectionTimeout, c.LeaderLeaseTimeout); err != nil {
		return err
	}
	if c.Transport == nil {
		if _, _, err := net.SplitHostPort(c.RaftAddr); err != nil {
			return fmt.Errorf("raft address %q: %w", c.RaftAddr, err)
		}
	}
	if len(c.InitialCluster) > 0 && !slices.ContainsFunc(c.InitialCluster, func(p Peer) bool { return p.ID == c.ID }) {
		return fmt.Errorf("initial cluster does not name this node %q", c.ID)
	}
	return nil
}
