package cluster

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// The cross-replica check (DESIGN.md, "Integrity"). The leader
// periodically proposes a checkpoint entry; every node digests its state as
// of that entry's index (the state machine ends its transaction there) and
// keeps the digest. The leader then asks every member for its digest at
// that index and compares: a member whose digest differs from a majority's
// is marked corrupt through the log, stops serving, and is demoted to a
// nonvoter until the operator rebuilds it.

// ErrCorrupt: this node's state differed from the other replicas'; it
// serves nothing until it is rebuilt.
var ErrCorrupt = errors.New("cluster: this node's state is corrupt")

// errNoDigest: no digest is kept for the asked index.
var errNoDigest = errors.New("no digest kept for that index")

// errDigestSkipped: the checkpoint arrived while this node was still
// digesting an earlier one, so it was not digested. The Digest RPC answers
// it as NOT_FOUND, at once: the leader does not wait for it.
var errDigestSkipped = fmt.Errorf("%w: skipped, a digest of an earlier checkpoint was still running", errNoDigest)

// keptDigests is how many checkpoint digests a node remembers.
const keptDigests = 8

type digestResult struct {
	sum  [32]byte
	err  error
	done chan struct{} // closed when sum and err are set
}

// checkpoints holds the digests this node took at checkpoint entries. At
// most one digest runs at a time: a digest reads the whole state inside one
// bolt read transaction, and several at once on a large state would hold
// old pages for long and stall commits.
type checkpoints struct {
	mu      sync.Mutex
	byIndex map[uint64]*digestResult
	order   []uint64 // indexes in byIndex, oldest first
	running bool     // a digest is being computed
}

// digester is the view of the state a checkpoint hands over.
type digester interface {
	Digest() ([32]byte, error)
	Release()
}

// taken is the state machine's checkpoint listener: it digests the view in
// the background.
func (c *checkpoints) taken(index uint64, snap *fsm.Snapshot) { c.take(index, snap) }

// take digests view in the background and keeps the result under index,
// unless a digest is running already: then it releases view at once and
// keeps errDigestSkipped.
func (c *checkpoints) take(index uint64, view digester) {
	r := &digestResult{done: make(chan struct{})}
	c.mu.Lock()
	if c.byIndex == nil {
		c.byIndex = map[uint64]*digestResult{}
	}
	if _, ok := c.byIndex[index]; !ok {
		c.order = append(c.order, index)
	}
	c.byIndex[index] = r
	for len(c.order) > keptDigests {
		delete(c.byIndex, c.order[0])
		c.order = c.order[1:]
	}
	skip := c.running
	c.running = true
	c.mu.Unlock()
	if skip {
		view.Release()
		r.err = errDigestSkipped
		close(r.done)
		return
	}
	go func() {
		defer view.Release()
		r.sum, r.err = view.Digest()
		c.mu.Lock()
		c.running = false
		c.mu.Unlock()
		close(r.done)
	}()
}

// busy reports whether a digest is being computed.
func (c *checkpoints) busy() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.running
}

// digestAt waits until the state machine has applied index and returns the
// digest taken there; errNoDigest when none was (the node started, or
// restored a snapshot, past it).
func (n *Node) digestAt(ctx context.Context, index uint64) ([32]byte, error) {
	if err := n.fsm.WaitApplied(ctx, index); err != nil {
		return [32]byte{}, err
	}
	n.checkpoints.mu.Lock()
	r := n.checkpoints.byIndex[index]
	n.checkpoints.mu.Unlock()
	if r == nil {
		return [32]byte{}, errNoDigest
	}
	select {
	case <-r.done:
		return r.sum, r.err
	case <-ctx.Done():
		return [32]byte{}, ctx.Err()
	}
}

// Corrupt returns why this node's state was found corrupt, or "".
func (n *Node) Corrupt() string {
	if p := n.corrupt.Load(); p != nil {
		return *p
	}
	return ""
}

// refreshCorrupt reads this node's corrupt mark from the state machine and,
// the first time it is set, says so loudly.
func (n *Node) refreshCorrupt() {
	why := n.fsm.Member(n.cfg.ID).GetCorrupt()
	if why == "" || n.corrupt.Load() != nil {
		return
	}
	n.corrupt.Store(&why)
	n.log.Error("THIS NODE'S STATE IS CORRUPT: it refuses every request and is demoted to a nonvoter; "+
		"rebuild it: jfsctl members remove "+n.cfg.ID+", stop it, clear its data directory, start it without --initial-cluster, jfsctl members add",
		"node", n.cfg.ID, "reason", why)
}

// requestCheck asks the integrity loop for a round now (it does nothing
// when the check is off or a request is pending).
func (n *Node) requestCheck() {
	select {
	case n.checkNow <- struct{}{}:
	default:
	}
}

// integrityLoop runs the leader's check every interval, and at once when a
// node becomes the ready leader or a member it had lost contact with
// answers again (a restarted node is checked as soon as it is back, not an
// interval later).
func (n *Node) integrityLoop(interval time.Duration) {
	defer n.wg.Done()
	resumed := make(chan raft.Observation, 16)
	obs := raft.NewObserver(resumed, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.ResumedHeartbeatObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	defer n.raft.DeregisterObserver(obs)
	t := time.NewTicker(interval)
	defer t.Stop()
	// A round in which a member did not answer (a node just back may not
	// serve its API yet) is run again soon, a few times, backing off.
	var again <-chan time.Time
	retries := 0
	for {
		select {
		case <-n.stopped:
			return
		case <-t.C:
		case <-again:
		case <-n.checkNow:
		case o := <-resumed:
			n.log.Info("member is back: checking the replicas", "member", o.Data.(raft.ResumedHeartbeatObservation).PeerID)
			retries = 0
		}
		again = nil
		if !n.ready() {
			continue
		}
		if n.checkpoints.busy() {
			// The previous round's digest still runs here: a new
			// checkpoint would only be skipped. Look again soon.
			again = time.After(time.Second)
			continue
		}
		complete, err := n.checkReplicas()
		if err != nil {
			n.metrics.Load().countCheck("error")
			n.log.Warn("integrity check failed", "error", err)
		}
		if complete {
			retries = 0
		} else if retries < maxCheckRetries {
			again = time.After(min(interval, time.Second<<retries))
			retries++
		}
	}
}

// maxCheckRetries bounds the quick repeats of an incomplete round (1s, 2s,
// 4s, 8s, 16s); then the check waits for the interval.
const maxCheckRetries = 5

// checkReplicas runs one round of the check: checkpoint, collect, compare,
// mark, demote. complete is false when a member did not answer.
func (n *Node) checkReplicas() (complete bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
	defer cancel()
	resp, err := n.Propose(ctx, cmdCheckpoint, nil, &jfspb.CheckpointRequest{})
	if err != nil {
		return false, fmt.Errorf("propose checkpoint: %w", err)
	}
	cp, ok := resp.(*jfspb.CheckpointResponse)
	if !ok {
		return false, fmt.Errorf("checkpoint answered %T", resp)
	}
	index := cp.Index
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return false, err
	}
	var members []string
	for _, srv := range cf.Configuration().Servers {
		if n.fsm.Member(string(srv.ID)).GetCorrupt() == "" {
			members = append(members, string(srv.ID))
		}
	}
	// Every node digests the whole state, which takes time in proportion
	// to its size: no fixed deadline fits. This node's own digest sets the
	// pace: the others started theirs at the same entry and are given as
	// long again as it took, and at least ApplyTimeout.
	sums := map[string][32]byte{}
	began := time.Now()
	own, cancelOwn := n.untilStopped()
	sum, err := n.digestAt(own, index)
	cancelOwn()
	if err == nil && slices.Contains(members, n.cfg.ID) {
		sums[n.cfg.ID] = sum
	} else if err != nil {
		n.log.Debug("no digest of this node", "index", index, "error", err)
	}
	collect, cancelCollect := context.WithTimeout(context.Background(), max(n.cfg.ApplyTimeout, time.Since(began)))
	defer cancelCollect()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, id := range members {
		if id == n.cfg.ID {
			continue
		}
		wg.Go(func() {
			sum, err := n.memberDigest(collect, id, index)
			if err != nil {
				n.log.Debug("no digest from member", "member", id, "index", index, "error", err)
				return
			}
			mu.Lock()
			sums[id] = sum
			mu.Unlock()
		})
	}
	wg.Wait()
	verdict := compareDigests(members, sums)
	switch {
	case len(verdict.differ) == 0 && verdict.agreed:
		n.metrics.Load().countCheck("ok")
	case !verdict.agreed && distinct(sums) <= 1:
		// Too few answered (members still starting, or busy with an
		// earlier digest), and those that did agree: nothing to report
		// but an incomplete round, which is retried.
		n.metrics.Load().countCheck("incomplete")
		n.log.Debug("replica check incomplete", "index", index, "answered", len(sums), "members", len(members))
	case !verdict.agreed:
		n.metrics.Load().countCheck("no_majority")
		n.log.Error("REPLICAS DISAGREE and no majority agrees: cannot tell which state is corrupt",
			"index", index, "digests", describeSums(sums))
	default:
		n.metrics.Load().countCheck("mismatch")
		for _, id := range verdict.differ {
			n.log.Error("STATE CORRUPTION DETECTED: node's state differs from the majority's; marking it corrupt",
				"node", id, "index", index, "digests", describeSums(sums))
			req := &jfspb.MarkCorruptRequest{NodeId: id, Index: index,
				Reason: fmt.Sprintf("digest %x, majority %x", short(sums[id]), short(verdict.majority))}
			mctx, mcancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			_, err := n.Propose(mctx, cmdMarkCorrupt, nil, req)
			mcancel()
			if err != nil {
				return false, fmt.Errorf("mark %s corrupt: %w", id, err)
			}
		}
	}
	return len(sums) == len(members), n.demoteCorrupt()
}

// untilStopped returns a context that ends when the node stops.
func (n *Node) untilStopped() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-n.stopped:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// demoteCorrupt takes the vote from every member marked corrupt; a corrupt
// leader hands leadership away first.
func (n *Node) demoteCorrupt() error {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return err
	}
	for _, srv := range cf.Configuration().Servers {
		if srv.Suffrage != raft.Voter || n.fsm.Member(string(srv.ID)).GetCorrupt() == "" {
			continue
		}
		if string(srv.ID) == n.cfg.ID {
			n.log.Error("this leader's state is corrupt: handing leadership over")
			return n.TransferLeadership("", "").Error()
		}
		if err := n.raft.DemoteVoter(srv.ID, 0, n.cfg.ApplyTimeout).Error(); err != nil {
			return fmt.Errorf("demote %s: %w", srv.ID, err)
		}
		n.log.Error("demoted a corrupt member to nonvoter", "node", srv.ID)
	}
	return nil
}

// memberDigest asks member id (this node or another) for its digest at index.
func (n *Node) memberDigest(ctx context.Context, id string, index uint64) ([32]byte, error) {
	if id == n.cfg.ID {
		return n.digestAt(ctx, index)
	}
	m := n.fsm.Member(id)
	if m.GetApiAddr() == "" {
		return [32]byte{}, fmt.Errorf("no API address recorded for %s", id)
	}
	cc, err := n.peers.conn(m.ApiAddr)
	if err != nil {
		return [32]byte{}, err
	}
	resp, err := jfspb.NewAdminClient(cc).Digest(ctx, &jfspb.DigestRequest{AtIndex: index})
	if err != nil {
		return [32]byte{}, err
	}
	var sum [32]byte
	if resp.NodeId != id || resp.AppliedIndex != index || len(resp.Digest) != len(sum) {
		return sum, fmt.Errorf("member %s answered for node %q at index %d", id, resp.NodeId, resp.AppliedIndex)
	}
	copy(sum[:], resp.Digest)
	return sum, nil
}

// verdict is the outcome of comparing digests at one index.
type verdict struct {
	agreed   bool     // a majority of the members has one digest
	majority [32]byte // that digest
	differ   []string // members that answered another one, sorted
}

// compareDigests finds the digest that more than half of members share, and
// who answered another one. Members that did not answer count against the
// majority but are never marked.
func compareDigests(members []string, sums map[string][32]byte) verdict {
	count := map[[32]byte]int{}
	for _, s := range sums {
		count[s]++
	}
	var v verdict
	for s, c := range count {
		if 2*c > len(members) {
			v.agreed, v.majority = true, s
		}
	}
	if !v.agreed {
		return v
	}
	for id, s := range sums {
		if s != v.majority {
			v.differ = append(v.differ, id)
		}
	}
	slices.Sort(v.differ)
	return v
}

// distinct counts the different digests in sums.
func distinct(sums map[string][32]byte) int {
	seen := map[[32]byte]bool{}
	for _, s := range sums {
		seen[s] = true
	}
	return len(seen)
}

func short(s [32]byte) []byte { return s[:6] }

func describeSums(sums map[string][32]byte) string {
	var parts []string
	for id, s := range sums {
		parts = append(parts, fmt.Sprintf("%s=%x", id, short(s)))
	}
	slices.Sort(parts)
	return strings.Join(parts, " ")
}
