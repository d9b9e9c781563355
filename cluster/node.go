// Package cluster runs a jfs node: raft over the replicated state machine of
// package fsm, the gRPC API that clients and other nodes call, membership, and
// the leader's read path. DESIGN.md says why it is built the way it is.
package cluster

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// Errors of the node. The gRPC layer turns them into status codes.
var (
	// ErrNotLeader: this node cannot serve the request because it is not the
	// leader, or not yet a leader that may serve reads.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrShutdown: the node is stopping.
	ErrShutdown = errors.New("cluster: node is shut down")
)

// Node is one member of a jfs cluster.
type Node struct {
	cfg     Config
	log     hclog.Logger
	fsm     *fsm.FSM
	raft    *raft.Raft
	raftRef atomic.Pointer[raft.Raft] // raft, for goroutines that may run before NewNode returns
	trans   raft.Transport
	store   io.Closer // the raft log store, closed after raft
	logs    raft.LogStore
	began   time.Time // when the node started

	metrics atomic.Pointer[Metrics] // nil unless NewMetrics was called

	reads    *readBatcher   // batched reads (leader only)
	peers    peerConns      // connections to the other nodes' APIs
	owners   sessionOwners  // who registered each session (auth.go)
	locks    *lockWaits     // blocked lock requests (leader only)
	deleg    *delegs        // lock delegations' recalls (leader only; deleg.go)
	sessions *sessionTimers // session TTLs (leader only)
	opens    *openTable     // open files (leader only; opens.go)
	caches   *caches        // coherent cache grants (leader only; caches.go)

	checkpoints checkpoints            // digests taken at checkpoint entries
	corrupt     atomic.Pointer[string] // why this node's state is corrupt; nil: it is not
	applyErr    atomic.Pointer[error]  // set when apply failed; nothing is applied after
	checkNow    chan struct{}          // asks integrityLoop for a round now
	freeKick    chan struct{}          // asks freeLoop to look for dead data (kickFree)
	freeLooks   atomic.Uint64          // times freeLoop woke to look (jfsd_free_checks_total)
	restoreMu   sync.Mutex             // held by the one restore that may run (backup.go)
	logSize     logBytes               // entries applied since the last snapshot (disk.go)
	snapKick    chan struct{}          // asks snapshotLoop for a snapshot by size

	// failed is closed, with failErr set, when the node cannot go on: apply
	// stopped, raft shut down by itself, or the API server failed.
	failOnce sync.Once
	failed   chan struct{}
	failErr  error

	// readyTerm is the term in which this node, as leader, has applied its
	// first own command: from then on its commit index covers every entry
	// of earlier terms, so reads may use it (Raft dissertation §6.4).
	readyTerm atomic.Uint64
	// stateGen is odd while raft applies entries to the state machine or
	// restores it, and grows by two each time: an even value that did not
	// change brackets reads of one unchanged state (reads.go).
	stateGen atomic.Uint64

	// The read lease (leasing.go) and the counts of read checks.
	leaseMu        sync.Mutex
	lease          leaseState
	leaseReads     atomic.Uint64
	confirmedReads atomic.Uint64
	rounds         [2]atomic.Uint64 // by why: roundRead, roundRenew

	stopOnce sync.Once
	stopped  chan struct{}
	wg       sync.WaitGroup
}

// NewNode opens the node's state in cfg.DataDir and starts raft. A node with
// no raft state and an InitialCluster bootstraps a new cluster; one with state
// rejoins with it.
func NewNode(cfg Config) (*Node, error) {
	cfg.setDefaults()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("data dir: %w", err)
	}
	n := &Node{cfg: cfg, began: time.Now(), log: cfg.Logger.Named("node"), stopped: make(chan struct{}), failed: make(chan struct{}),
		checkNow: make(chan struct{}, 1), freeKick: make(chan struct{}, 1), snapKick: make(chan struct{}, 1)}

	var err error
	n.fsm, err = fsm.Open(filepath.Join(cfg.DataDir, "fsm.db"), cfg.FSM)
	if errors.Is(err, fsm.ErrDamaged) {
		return nil, err // says which file and what to do
	}
	if err != nil {
		return nil, fmt.Errorf("state machine: %w", err)
	}
	n.peers.creds = n.dialCreds()
	if why := n.fsm.Discarded(); why != "" {
		n.log.Warn("fsm.db discarded; rebuilding it from the newest snapshot and the raft log", "why", why)
	}
	n.reads = newReadBatcher(n)
	n.lease.core = newLeaseCore(cfg)
	n.locks = newLockWaits(n)
	n.deleg = newDelegs(n)
	n.sessions = newSessionTimers(n, cfg.SessionTTL)
	n.opens = newOpenTable()
	n.caches = newCaches(n)
	n.fsm.SetChangeListener(n.caches.changed)
	n.fsm.SetLockListener(func(inos []uint64, all bool) {
		n.locks.changed(inos, all)
		n.deleg.locksChanged()
	})
	n.fsm.SetOpenListener(n.opens.opened)
	n.fsm.SetWaitListener(n.locks.ended)
	n.fsm.SetCheckpointListener(n.checkpoints.taken)
	n.refreshCorrupt()
	if err := n.startRaft(); err != nil {
		n.fsm.Close()
		return nil, err
	}
	n.wg.Add(8)
	go n.watchRaft()
	go n.snapshotLoop()
	if cfg.IntegrityCheck > 0 {
		n.wg.Add(1)
		go n.integrityLoop(cfg.IntegrityCheck)
	}
	go n.watchLeadership()
	go n.announceLoop()
	go n.freeLoop(freeRetryPause)
	go func() {
		defer n.wg.Done()
		n.locks.run(n.stopped, cfg.DeadlockScan)
	}()
	go func() {
		defer n.wg.Done()
		n.sessions.run(n.stopped)
	}()
	go func() {
		defer n.wg.Done()
		n.caches.run(n.stopped)
	}()
	return n, nil
}

func (n *Node) raftConfig() *raft.Config {
	rc := raft.DefaultConfig()
	rc.LocalID = raft.ServerID(n.cfg.ID)
	rc.HeartbeatTimeout = n.cfg.HeartbeatTimeout
	rc.ElectionTimeout = n.cfg.ElectionTimeout
	rc.LeaderLeaseTimeout = n.cfg.LeaderLeaseTimeout
	rc.CommitTimeout = n.cfg.CommitTimeout
	rc.SnapshotThreshold = n.cfg.SnapshotThreshold
	rc.SnapshotInterval = n.cfg.SnapshotInterval
	rc.TrailingLogs = n.cfg.TrailingLogs
	rc.BatchApplyCh = true
	rc.MaxAppendEntries = 256
	// The state machine keeps its state on disk and records the index it
	// applied; restoring the last snapshot over it at every start would only
	// throw that away. startRaft restores by hand when the state is behind.
	rc.NoSnapshotRestoreOnStart = true
	rc.Logger = n.cfg.Logger.Named("raft")
	return rc
}

func (n *Node) startRaft() error {
	cfg := n.cfg
	var (
		logs   raft.LogStore
		stable raft.StableStore
		snaps  raft.SnapshotStore
	)
	if cfg.InMemory {
		mem := raft.NewInmemStore()
		logs, stable, snaps = mem, mem, raft.NewInmemSnapshotStore()
	} else {
		// One snapshot is retained: a node recovers from the newest one
		// and the log after it, and an older one would hold on to the
		// space of data deleted since (DESIGN.md "Storage").
		fss, err := raft.NewFileSnapshotStoreWithLogger(cfg.DataDir, 1, cfg.Logger.Named("snapshot"))
		if err != nil {
			return fmt.Errorf("snapshot store: %w", err)
		}
		var snapIndex uint64
		if list, err := fss.List(); err == nil && len(list) > 0 {
			snapIndex = list[0].Index
		}
		path := filepath.Join(cfg.DataDir, "raft.db")
		var bs *raftboltdb.BoltStore
		err = fsm.CheckBoltFile(path)
		if err == nil {
			// Log entries freed by compaction leave raft.db as large as it
			// ever was; rewrite it while nothing has it open.
			var before, after int64
			before, after, err = fsm.CompactFile(path, cfg.CompactMin)
			if err == nil && after < before {
				n.log.Info("raft.db compacted", "before", before, "after", after)
			}
		}
		if err == nil {
			err = fsm.GuardFault(path, func() (err error) {
				if bs, err = raftboltdb.New(raftboltdb.Options{Path: path}); err != nil {
					return err
				}
				if err = checkLog(bs, snapIndex); err != nil {
					bs.Close()
				}
				return err
			})
		}
		if errors.Is(err, fsm.ErrDamaged) {
			return fsm.WithHint(err, "this node cannot rejoin with it: jfsctl members remove "+cfg.ID+
				", clear its data directory, start it without --initial-cluster, jfsctl members add")
		}
		if err != nil {
			return fmt.Errorf("raft log: %w", err)
		}
		n.store = bs
		logs, stable = bs, bs
		snaps = fss
	}
	n.logs = logs
	if err := n.catchUpFromSnapshot(snaps); err != nil {
		n.closeStore()
		return err
	}
	if err := n.checkRebuild(snaps); err != nil {
		n.closeStore()
		return err
	}

	trans := cfg.Transport
	if trans == nil {
		t, err := NewRaftTransport(cfg.RaftAddr, cfg.TLS, cfg.Logger.Named("transport"))
		if err != nil {
			n.closeStore()
			return fmt.Errorf("raft transport on %s: %w", cfg.RaftAddr, err)
		}
		trans = t
	}
	// Raft's goroutines take requests before NewRaft returns: until then
	// the term is read from the stable store.
	n.trans = guardTerms(trans, func() uint64 {
		if r := n.raftRef.Load(); r != nil {
			return r.CurrentTerm()
		}
		t, _ := stable.GetUint64(keyCurrentTerm)
		return t
	}, cfg.Logger.Named("transport"))

	rc := n.raftConfig()
	existing, err := raft.HasExistingState(logs, stable, snaps)
	if err != nil {
		n.closeAll()
		return fmt.Errorf("raft state: %w", err)
	}
	if !existing && len(cfg.InitialCluster) > 0 {
		var servers []raft.Server
		for _, p := range cfg.InitialCluster {
			addr := raft.ServerAddress(p.RaftAddr)
			if p.ID == cfg.ID {
				addr = n.trans.LocalAddr()
			}
			servers = append(servers, raft.Server{Suffrage: raft.Voter, ID: raft.ServerID(p.ID), Address: addr})
		}
		if err := raft.BootstrapCluster(rc, logs, stable, snaps, n.trans, raft.Configuration{Servers: servers}); err != nil {
			n.closeAll()
			return fmt.Errorf("bootstrap: %w", err)
		}
	}
	if d := n.startRuleDelay(existing); d > 0 {
		n.log.Info("waiting before raft starts, so that no lease this node vouched for before it stopped is broken", "for", d)
		time.Sleep(d)
	}
	r, err := raft.NewRaft(rc, (*stateMachine)(n), logs, stable, snaps, n.trans)
	if err != nil {
		n.closeAll()
		return fmt.Errorf("raft: %w", err)
	}
	n.raft = r
	n.raftRef.Store(r)
	return nil
}

// keyCurrentTerm is where hashicorp/raft keeps the current term in the
// stable store.
var keyCurrentTerm = []byte("CurrentTerm")

// checkLog reads every entry of the stored log and verifies the checksum of
// every command, so that a damaged log is found at start, with one clear
// error, instead of stopping the node (or, sent on by a leader, a follower)
// when the entry is applied, or making raft panic on an entry that does not
// decode.
//
// Entries at or below snapIndex, the newest snapshot's index, may be
// missing: raft never reads them again, and installing a snapshot (a
// restored backup, or a follower that fell behind the leader's log) leaves
// a hole between the entries a node had and the snapshot's index.
//
// Commands written before entries were sealed carry no checksum: they are
// fine until the first one that carries one (an upgraded cluster's log), as
// apply accepts them; after it every command must carry one. A wrong
// checksum is damage (fsm.ErrDamaged, answered with the advice to rebuild
// the node); a command without one after a sealed one is not damage but a
// mixed-version cluster, which rebuilding would not cure.
func checkLog(logs raft.LogStore, snapIndex uint64) error {
	first, err := logs.FirstIndex()
	if err != nil {
		return &fsm.DamagedError{File: "raft.db", Reason: fmt.Sprintf("first index: %v", err)}
	}
	last, err := logs.LastIndex()
	if err != nil {
		return &fsm.DamagedError{File: "raft.db", Reason: fmt.Sprintf("last index: %v", err)}
	}
	if first == 0 {
		return nil // empty
	}
	var l raft.Log
	var sealedAt uint64 // the first command with a checksum
	for i := first; i <= last; i++ {
		if err := logs.GetLog(i, &l); errors.Is(err, raft.ErrLogNotFound) && i <= snapIndex {
			// The hole may be long (a backup of a cluster with a larger
			// index): go on after the snapshot, which raft starts from.
			i = snapIndex
			continue
		} else if err != nil {
			return &fsm.DamagedError{File: "raft.db", Reason: fmt.Sprintf("log entry %d does not read: %v", i, err)}
		}
		if l.Index != i {
			return &fsm.DamagedError{File: "raft.db", Reason: fmt.Sprintf("log entry %d is stored as index %d", i, l.Index)}
		}
		if l.Type != raft.LogCommand {
			continue
		}
		switch err := fsm.VerifyChecksum(l.Data); {
		case errors.Is(err, fsm.ErrNoChecksum) && sealedAt == 0:
			// Written before entries were sealed.
		case errors.Is(err, fsm.ErrNoChecksum):
			return fmt.Errorf("log entry %d has no checksum although entry %d before it has one: "+
				"it was written by an older version of jfsd; every node must run the same version "+
				"(stop all nodes, upgrade all, start them)", i, sealedAt)
		case err != nil:
			return &fsm.DamagedError{File: "raft.db", Reason: fmt.Sprintf("log entry %d fails its checksum: %v", i, err)}
		case sealedAt == 0:
			sealedAt = i
		}
	}
	return nil
}

// catchUpFromSnapshot restores the newest snapshot when the state machine on
// disk is older than it (a lost or replaced fsm.db): raft would otherwise
// replay only the entries after the snapshot.
func (n *Node) catchUpFromSnapshot(snaps raft.SnapshotStore) error {
	list, err := snaps.List()
	if err != nil || len(list) == 0 {
		return err
	}
	latest := list[0]
	if latest.Index <= n.fsm.AppliedIndex() {
		return nil
	}
	n.log.Warn("state machine is behind the newest snapshot; restoring it",
		"applied", n.fsm.AppliedIndex(), "snapshot", latest.Index)
	_, rc, err := snaps.Open(latest.ID)
	if err != nil {
		return fmt.Errorf("open snapshot %s: %w", latest.ID, err)
	}
	defer rc.Close()
	return n.fsm.Restore(rc)
}

// checkRebuild makes sure raft can bring the state machine up to date:
// raft replays the log from the entry after the newest snapshot (or from
// the first entry when there is none), so the log must hold that entry.
// Raft compacts the log only after a snapshot, so this fails only when a
// file was removed or replaced by hand; it then says so instead of letting
// a state machine with a gap in its history serve.
func (n *Node) checkRebuild(snaps raft.SnapshotStore) error {
	var snapIndex uint64
	if list, err := snaps.List(); err == nil && len(list) > 0 {
		snapIndex = list[0].Index
	}
	first, err := n.logs.FirstIndex()
	if err != nil || first == 0 {
		return err
	}
	if from := max(snapIndex, n.fsm.AppliedIndex()) + 1; first > from {
		return fmt.Errorf("cannot rebuild the state: the state machine and the newest snapshot (index %d) end at %d, "+
			"but the raft log starts at %d; restore the snapshots directory, or rebuild this node from the cluster "+
			"(jfsctl members remove %s, clear its data directory, start it without --initial-cluster, jfsctl members add)",
			snapIndex, from-1, first, n.cfg.ID)
	}
	return nil
}

func (n *Node) closeStore() {
	if n.store != nil {
		n.store.Close()
	}
}

func (n *Node) closeAll() {
	if c, ok := n.trans.(io.Closer); ok {
		c.Close()
	}
	n.closeStore()
}

// Shutdown stops raft, closes the stores and the state machine. It is safe
// to call more than once.
func (n *Node) Shutdown() error {
	var err error
	n.EndStreams()
	n.stopOnce.Do(func() {
		close(n.stopped)
		err = n.raft.Shutdown().Error()
		n.wg.Wait()
		n.peers.close()
		n.closeAll()
		if cerr := n.fsm.Close(); err == nil {
			err = cerr
		}
	})
	return err
}

// fail records that the node cannot go on and why; the first reason wins.
// It does not stop the node (it may run on raft's own goroutines, which
// Shutdown waits for): whoever runs the node watches Failed and stops it.
func (n *Node) fail(err error) {
	n.failOnce.Do(func() {
		n.failErr = err
		n.log.Error("node cannot go on", "error", err)
		close(n.failed)
	})
}

// Failed is closed when the node can no longer work and must be shut down:
// applying the log stopped, raft shut down without Shutdown being called
// (this node was removed from the cluster), or the API server failed. Err
// says why.
func (n *Node) Failed() <-chan struct{} { return n.failed }

// Err is the reason Failed was closed, or nil.
func (n *Node) Err() error {
	select {
	case <-n.failed:
		return n.failErr
	default:
		return nil
	}
}

// watchRaft notices raft shutting down by itself (hashicorp/raft has no
// event for it, so it looks twice a second) and fails the node.
func (n *Node) watchRaft() {
	defer n.wg.Done()
	t := time.NewTicker(500 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-n.stopped:
			return
		case <-t.C:
		}
		if n.raft.State() == raft.Shutdown {
			select {
			case <-n.stopped: // Shutdown was called
			default:
				n.fail(errors.New("raft has shut down (this node was removed from the cluster, or raft failed)"))
			}
			return
		}
	}
}

// ID is the node's id.
func (n *Node) ID() string { return n.cfg.ID }

// Raft exposes the raft instance to the admin service and tests.
func (n *Node) Raft() *raft.Raft { return n.raft }

// FSM exposes the state machine for reads and tests.
func (n *Node) FSM() *fsm.FSM { return n.fsm }

// IsLeader reports whether this node believes it is the leader.
func (n *Node) IsLeader() bool { return n.raft.State() == raft.Leader }

// watchLeadership announces this node in the state machine each time it
// becomes leader; once that command is applied the node serves reads.
func (n *Node) watchLeadership() {
	defer n.wg.Done()
	for {
		select {
		case <-n.stopped:
			return
		case isLeader := <-n.raft.LeaderCh():
			if !isLeader {
				// Waiters queue again at the new leader; it restarts the
				// session timers.
				n.sessions.stop()
				n.caches.stop()
				n.opens.stop()
				n.locks.failAll(ErrNotLeader)
				n.deleg.endAll()
				continue
			}
			// From now on this node hears every open that an entry
			// applied here makes; the opens of earlier leaders come with
			// the sessions' reports (opens.go).
			n.opens.start(n.raft.LastIndex())
			term := n.raft.CurrentTerm()
			outage := time.Since(n.lastLeaderSeen(term))
			n.wg.Add(1)
			go func() {
				defer n.wg.Done()
				n.becomeReady(term, outage)
			}()
		}
	}
}

// lastLeaderSeen is the latest sign of an earlier leader at work that this
// node, just elected in term, has: the last time one contacted it, or when
// the newest entry of an earlier term was appended by its leader; the
// node's own start if it has neither. The time since then is how long the
// cluster may have had no leader, during which no client could heartbeat.
func (n *Node) lastLeaderSeen(term uint64) time.Time {
	seen := n.raft.LastContact()
	if n.logs != nil {
		first, _ := n.logs.FirstIndex()
		last, err := n.logs.LastIndex()
		// The newest entries may be this term's own no-op and
		// configuration: look a few back.
		for i := last; err == nil && i > 0 && i >= first && last-i < 8; i-- {
			var l raft.Log
			if n.logs.GetLog(i, &l) != nil {
				break
			}
			if l.Term < term {
				if l.AppendedAt.After(seen) {
					seen = l.AppendedAt
				}
				break
			}
		}
	}
	if seen.IsZero() {
		seen = n.began
	}
	return seen
}

func (n *Node) becomeReady(term uint64, outage time.Duration) {
	if why := n.Corrupt(); why != "" {
		// Elected before the leader that marked it could take its vote.
		n.handOver(term, why)
		return
	}
	for attempt := 0; ; attempt++ {
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		err := n.recordInitialSettings(ctx)
		if err == nil {
			_, err = n.Propose(ctx, cmdSetMember, nil, &jfspb.SetMemberRequest{Member: n.self()})
		}
		cancel()
		if err == nil {
			// The session timers first: the caches ask them when a
			// session lapses. Both before the node serves.
			n.sessions.start(outage)
			n.caches.start()
			n.readyTerm.Store(term)
			n.requestCheck()
			n.kickFree()
			n.log.Info("leader ready", "term", term)
			return
		}
		n.log.Warn("announcing leadership failed", "term", term, "error", err)
		select {
		case <-n.stopped:
			return
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// transferLeadership starts a leadership transfer; tests replace it to
// make transfers fail.
var transferLeadership = func(r *raft.Raft) raft.Future { return r.LeadershipTransfer() }

// handOver hands the leadership of term over because this node's state is
// corrupt (why), retrying with a growing pause (100ms to 5s) for as long
// as this node leads in term: a corrupt leader is never ready and refuses
// every call, so it must not stay leader because one transfer failed (no
// follower caught up in time, say).
func (n *Node) handOver(term uint64, why string) {
	backoff := 100 * time.Millisecond
	for {
		if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
			return
		}
		n.log.Error("this node's state is corrupt: handing leadership over", "reason", why, "term", term)
		n.endLease()
		err := transferLeadership(n.raft).Error()
		if err == nil {
			return
		}
		n.log.Error("handing leadership over failed; trying again", "error", err, "in", backoff)
		select {
		case <-n.stopped:
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// recordInitialSettings proposes this node's settings (Config.FSM) as the
// initial ones while the state records none: the first leader of a new
// cluster does so before it serves. The state machine ignores an initial
// entry once settings are recorded, so a leader whose state lags behind
// the log changes nothing by proposing one.
func (n *Node) recordInitialSettings(ctx context.Context) error {
	if _, recorded := n.fsm.Settings(); recorded {
		return nil
	}
	_, err := n.Propose(ctx, cmdSetSettings, nil, &jfspb.SetSettingsRequest{Settings: n.fsm.InitialSettings(), Initial: true})
	return err
}

// Propose replicates one command and returns the state machine's response.
// h may be nil for commands that carry no client session. The error is
// ErrNotLeader when this node cannot propose; a response's errno carries
// file-system errors. Propose returns ctx's error as soon as ctx is done: a
// context already done proposes nothing, and one that ends later leaves the
// entry enqueued or in flight (it may still commit; a retry with the same
// (session, seq) gets its stored result). Enqueueing waits at most until
// ctx's deadline, or Config.ApplyTimeout when ctx has none.
func (n *Node) Propose(ctx context.Context, typ jfspb.CommandType, h *jfspb.Header, body proto.Message) (proto.Message, error) {
	resp, _, err := n.proposeIndex(ctx, typ, h, body)
	return resp, err
}

// proposeIndex is Propose, and also returns the entry's log index.
func (n *Node) proposeIndex(ctx context.Context, typ jfspb.CommandType, h *jfspb.Header, body proto.Message) (proto.Message, uint64, error) {
	if err := ctx.Err(); err != nil {
		return nil, 0, err
	}
	b, err := proto.Marshal(body)
	if err != nil {
		return nil, 0, fmt.Errorf("marshal %v: %w", typ, err)
	}
	// LeaderOpens: this version keeps open files in the leader's memory
	// (opens.go), and apply must know it (fsm/orphans.go).
	e := &jfspb.LogEntry{Type: uint32(typ), TimeNs: time.Now().UnixNano(), Body: b, LeaderOpens: true}
	if h != nil {
		e.Session, e.Seq, e.Acked, e.AckedSeqs = h.Session, h.Seq, h.Acked, h.AckedSeqs
	}
	data, err := fsm.Seal(e)
	if err != nil {
		return nil, 0, err
	}
	// raft.Apply waits to enqueue without any limit when its timeout is
	// not positive, so a deadline already past must not reach it.
	timeout := n.cfg.ApplyTimeout
	if d, ok := ctx.Deadline(); ok {
		if timeout = time.Until(d); timeout <= 0 {
			return nil, 0, context.DeadlineExceeded
		}
	}
	// Apply itself runs in the goroutine: enqueueing can wait (a busy
	// leader loop) and the caller's context must end that wait for it.
	type outcome struct {
		f   raft.ApplyFuture
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		f := n.raft.Apply(data, timeout)
		done <- outcome{f, f.Error()}
	}()
	var out outcome
	select {
	case out = <-done:
	case <-ctx.Done():
		return nil, 0, ctx.Err()
	}
	switch err = out.err; {
	case errors.Is(err, raft.ErrNotLeader), errors.Is(err, raft.ErrLeadershipLost),
		errors.Is(err, raft.ErrLeadershipTransferInProgress):
		return nil, 0, fmt.Errorf("%w: %v", ErrNotLeader, err)
	case errors.Is(err, raft.ErrRaftShutdown):
		return nil, 0, ErrShutdown
	case err != nil:
		return nil, 0, err
	}
	switch res := out.f.Response().(type) {
	case fsm.Result:
		return res.Resp, out.f.Index(), nil
	case error:
		return nil, 0, res
	}
	return nil, 0, fmt.Errorf("state machine answered %T", out.f.Response())
}

// ReadIndex makes a linearizable read possible: when it returns nil, the
// state machine has applied every write that completed before it was called,
// and this node was the leader at that moment. Under a valid read lease it
// asks no other node (DESIGN.md, "Reads under a lease").
func (n *Node) ReadIndex(ctx context.Context) error {
	term := n.readyTerm.Load()
	if n.raft.State() != raft.Leader || term == 0 || n.raft.CurrentTerm() != term {
		return ErrNotLeader
	}
	index := n.raft.CommitIndex()
	if n.underLease(term) && n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
		n.leaseReads.Add(1)
		return n.fsm.WaitApplied(ctx, index)
	}
	if err := n.confirmLeadership(ctx, term, roundRead); err != nil {
		return err
	}
	n.confirmedReads.Add(1)
	if n.raft.State() != raft.Leader || n.raft.CurrentTerm() != term {
		return ErrNotLeader
	}
	return n.fsm.WaitApplied(ctx, index)
}

// ready reports whether this node leads and may serve in its term.
func (n *Node) ready() bool {
	term := n.readyTerm.Load()
	return term != 0 && n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term
}

// LeaderAPIAddr returns the API address of the current leader as recorded in
// the state machine, and its id; empty when unknown.
func (n *Node) LeaderAPIAddr() (addr, id string) {
	_, lid := n.raft.LeaderWithID()
	if lid == "" {
		return "", ""
	}
	if m := n.fsm.Member(string(lid)); m != nil {
		return m.ApiAddr, string(lid)
	}
	return "", string(lid)
}
