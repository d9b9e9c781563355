package cluster

import (
	"context"
	"errors"
	"hash/fnv"
	"slices"
	"sync"
	"syscall"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
	"github.com/jfs-dev/jfs/rangelock"
)

// Blocking lock requests (F_SETLKW, flock without LOCK_NB) wait on the
// leader, in a FIFO queue per inode, and are granted through the log when the
// apply of a change frees their range: no polling. The wait-for graph between
// processes across every client lives here too; DESIGN.md gives the rules.

// errInterrupted ends a wait that the client cancelled (FUSE INTERRUPT).
var errInterrupted = errors.New("cluster: lock wait interrupted")

type waiter struct {
	id      uint64
	key     waitKey
	ino     uint64
	flock   bool
	owner   rangelock.Owner // the lock owner: (session, lock owner) or (session, fh)
	node    rangelock.Owner // the process, as the wait-for graph knows it
	typ     rangelock.Type
	rng     rangelock.Range // Whole for a flock
	since   time.Time
	posix   *jfspb.SetLkRequest
	flockRq *jfspb.FlockRequest
	ofd     bool // a POSIX wait whose owner may be an open file (maybe_ofd)

	granting bool // a grant is being proposed
	done     chan waitResult
}

// waitKey names a wait as its client does: the request's (session, seq).
type waitKey struct{ session, seq uint64 }

type waitResult struct {
	errno syscall.Errno
	err   error
}

// lockWaits is the leader's registry of blocked lock requests.
type lockWaits struct {
	n *Node

	mu       sync.Mutex
	nextID   uint64
	queues   map[uint64][]*waiter // per inode, in arrival order
	byKey    map[waitKey]*waiter
	byID     map[uint64]*waiter
	canceled cancelMemo // cancels that arrived before their wait was queued
	graph    *rangelock.Graph
	hosts    map[uint64]uint64 // session -> hash of its host, for graph nodes
	// ofdOwners are the lock owners that a request marked maybe_ofd: an open
	// file description may own their locks, so none is merged into its
	// process (processNode). Each maps to the inodes it was marked on,
	// with the number of its marked requests still being served there.
	// An owner is forgotten on an inode once it holds no lock there, waits
	// for none and has no marked request in progress (pruneOFD, after every
	// change of the inode's locks), and when its locks are released or its
	// session ends; so the map holds no more owners than hold or want locks.
	ofdOwners map[rangelock.Owner]map[uint64]int
	ofdByIno  map[uint64]map[rangelock.Owner]struct{} // the same marks by inode

	dirtyMu  sync.Mutex
	dirty    map[uint64]bool // inodes whose locks changed since the pump last looked
	allDirty bool            // every inode's may have
	kick     chan struct{}
}

func newLockWaits(n *Node) *lockWaits {
	return &lockWaits{
		n: n, queues: map[uint64][]*waiter{}, byKey: map[waitKey]*waiter{}, byID: map[uint64]*waiter{},
		canceled: newCancelMemo(), graph: rangelock.NewGraph(), hosts: map[uint64]uint64{},
		ofdOwners: map[rangelock.Owner]map[uint64]int{}, ofdByIno: map[uint64]map[rangelock.Owner]struct{}{},
		dirty: map[uint64]bool{}, kick: make(chan struct{}, 1),
	}
}

// changed is called by the state machine after a batch commits, with the
// inodes whose locks changed, or all when any inode's may have. It must not
// block: the raft apply loop waits.
func (lw *lockWaits) changed(inos []uint64, all bool) {
	lw.dirtyMu.Lock()
	for _, ino := range inos {
		lw.dirty[ino] = true
	}
	if all {
		lw.allDirty = true
	}
	lw.dirtyMu.Unlock()
	lw.poke()
}

// markDirty asks the pump to look at ino's queue again.
func (lw *lockWaits) markDirty(ino uint64) {
	lw.dirtyMu.Lock()
	lw.dirty[ino] = true
	lw.dirtyMu.Unlock()
	lw.poke()
}

func (lw *lockWaits) poke() {
	select {
	case lw.kick <- struct{}{}:
	default:
	}
}

// run is the pump: it reconsiders the queues of changed inodes, and
// searches the whole graph for cycles every detectEvery.
func (lw *lockWaits) run(stop <-chan struct{}, detectEvery time.Duration) {
	tick := time.NewTicker(detectEvery)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			lw.failAll(ErrShutdown)
			return
		case <-tick.C:
			lw.detect()
		case <-lw.kick:
			lw.mu.Lock()
			lw.refresh()
			lw.mu.Unlock()
		}
	}
}

// refresh reconsiders the queues of every inode whose locks changed since
// the last look. Every search of the graph is preceded by it: a waiter's
// edges point at the holders of when it was last considered, and a holder
// that unlocked and at once asked again would otherwise find the stale edge
// of the waiter it just freed and be refused a deadlock that is not there.
// The lock listener marks an inode before the change's RPC returns, so no
// request can see the graph older than the changes it knows of. Called with
// lw.mu held.
func (lw *lockWaits) refresh() {
	lw.dirtyMu.Lock()
	inos := make([]uint64, 0, len(lw.dirty))
	for ino := range lw.dirty {
		inos = append(inos, ino)
	}
	all := lw.allDirty
	clear(lw.dirty)
	lw.allDirty = false
	lw.dirtyMu.Unlock()
	if all {
		for ino := range lw.queues {
			inos = append(inos, ino)
		}
	}
	if all {
		for ino := range lw.ofdByIno {
			inos = append(inos, ino)
		}
	}
	slices.Sort(inos)
	inos = slices.Compact(inos)
	var renewed []*waiter
	for _, ino := range inos {
		renewed = append(renewed, lw.reconsider(ino)...)
	}
	lw.pruneOFD(inos)
	// Only now, with every changed edge renewed, look for cycles that the
	// renewals closed.
	for _, w := range renewed {
		if lw.byID[w.id] == w && !w.granting {
			if cycle := lw.cycleThrough(w); cycle != nil {
				lw.breakCycle(cycle)
			}
		}
	}
}

// cycleThrough returns a cycle through w's wait, or nil. Called with lw.mu
// held.
func (lw *lockWaits) cycleThrough(w *waiter) []rangelock.Owner {
	_, blockers, ok := lw.graph.Wait(w.id)
	if !ok {
		return nil
	}
	lw.graph.Remove(w.id)
	cycle := lw.graph.WouldCycle(w.node, blockers)
	lw.graph.Add(w.id, w.node, blockers)
	return cycle
}

// hostHash is the graph's name for the host of session sid.
func (lw *lockWaits) hostHash(sid uint64) uint64 {
	if h, ok := lw.hosts[sid]; ok {
		return h
	}
	s := lw.n.fsm.Session(sid)
	if s == nil {
		return 0
	}
	f := fnv.New64a()
	f.Write([]byte(s.Host))
	h := f.Sum64() | 1 // never 0, which marks "unknown"
	lw.hosts[sid] = h
	return h
}

// processNode names the process that holds or wants a lock: the host of its
// session and its pid, so that one process reaching jfs through two mounts
// on one host is one node. Without a pid (or host), and for an owner that
// may be an open file description (ofdOwners), the lock owner stands in:
// OFD locks belong to open files, which the threads of one process share,
// not to the process. Called with lw.mu held.
func (lw *lockWaits) processNode(owner rangelock.Owner, pid uint32) rangelock.Owner {
	h := lw.hostHash(owner.Session)
	if _, ofd := lw.ofdOwners[owner]; pid == 0 || h == 0 || ofd {
		return rangelock.Owner{Session: owner.Session &^ (1 << 63), ID: owner.ID | 1<<63}
	}
	return rangelock.Owner{Session: h, ID: uint64(pid)}
}

// conflictsWith reports whether w and an earlier waiter v want locks that
// cannot be held together: a later request never overtakes an earlier one it
// conflicts with, so a writer is not starved by a stream of readers.
func conflictsWith(w, v *waiter) bool {
	if w.flock != v.flock || w.owner == v.owner || w.ino != v.ino {
		return false
	}
	return (w.typ == rangelock.Write || v.typ == rangelock.Write) && w.rng.Overlaps(v.rng)
}

// blockers returns the processes w waits for: the holders of conflicting
// locks and the earlier waiters it may not overtake. ready is true when
// there are none. Called with lw.mu held.
func (lw *lockWaits) blockers(w *waiter, earlier []*waiter) (nodes []rangelock.Owner, ready bool) {
	for _, v := range earlier {
		if conflictsWith(w, v) {
			nodes = append(nodes, v.node)
		}
	}
	for _, h := range lw.n.fsm.LockHolders(w.ino, w.flock, w.owner, w.typ, w.rng) {
		nodes = append(nodes, lw.processNode(h.Owner, h.Pid))
	}
	return nodes, len(nodes) == 0
}

// edges are the wait-for edges w adds to the graph for its blockers. A wait
// that may be an OFD wait adds none, as Linux keeps OFD waits out of its
// deadlock detection: another thread may release the open file's locks
// while one of them waits, so a cycle through it is no proof of deadlock,
// and such a wait is never refused with EDEADLK nor broken.
func (w *waiter) edges(blockers []rangelock.Owner) []rangelock.Owner {
	if w.ofd {
		return nil
	}
	return blockers
}

// markOFD records that a lock request (not an unlock) of owner on ino was
// marked maybe_ofd by its mount: the owner gets a graph node of its own.
// done must be called once the request has been answered; the mark then
// lasts while the owner holds or wants a lock on ino.
func (lw *lockWaits) markOFD(owner rangelock.Owner, ino uint64) (done func()) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	inos := lw.ofdOwners[owner]
	if inos == nil {
		inos = map[uint64]int{}
		lw.ofdOwners[owner] = inos
	}
	inos[ino]++
	if lw.ofdByIno[ino] == nil {
		lw.ofdByIno[ino] = map[rangelock.Owner]struct{}{}
	}
	lw.ofdByIno[ino][owner] = struct{}{}
	var once sync.Once
	return func() {
		once.Do(func() {
			lw.mu.Lock()
			if inos := lw.ofdOwners[owner]; inos != nil && inos[ino] > 0 {
				inos[ino]--
			}
			lw.mu.Unlock()
			lw.markDirty(ino) // a refused request leaves nothing to keep
		})
	}
}

// pruneOFD forgets the maybe-OFD marks on inos of owners that hold no lock
// there, wait for none and have no marked request in progress. Called with
// lw.mu held, after the queues of inos were reconsidered.
func (lw *lockWaits) pruneOFD(inos []uint64) {
	for _, ino := range inos {
		owners := lw.ofdByIno[ino]
		if len(owners) == 0 {
			continue
		}
		// Every owner holding a lock on ino conflicts with a write lock
		// over the whole file asked by an owner that holds none.
		holding := map[rangelock.Owner]bool{}
		for _, h := range lw.n.fsm.LockHolders(ino, false, rangelock.Owner{}, rangelock.Write, rangelock.Range{Start: 0, End: rangelock.MaxOffset}) {
			holding[h.Owner] = true
		}
		for _, w := range lw.queues[ino] {
			holding[w.owner] = true
		}
		for o := range owners {
			if holding[o] || lw.ofdOwners[o][ino] > 0 {
				continue
			}
			lw.unmarkOFD(o, ino)
		}
	}
}

// unmarkOFD drops owner's maybe-OFD mark on ino. Called with lw.mu held.
func (lw *lockWaits) unmarkOFD(owner rangelock.Owner, ino uint64) {
	if inos := lw.ofdOwners[owner]; inos != nil {
		delete(inos, ino)
		if len(inos) == 0 {
			delete(lw.ofdOwners, owner)
		}
	}
	if owners := lw.ofdByIno[ino]; owners != nil {
		delete(owners, owner)
		if len(owners) == 0 {
			delete(lw.ofdByIno, ino)
		}
	}
}

// forgetOwners drops the marks of owners of session sid whose locks on an
// inode were released (a close); a later request marks them again.
func (lw *lockWaits) forgetOwners(sid uint64, owners ...uint64) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for _, o := range owners {
		lw.forgetOFD(rangelock.Owner{Session: sid, ID: o})
	}
}

// forgetOFD drops every maybe-OFD mark of owner. Called with lw.mu held.
func (lw *lockWaits) forgetOFD(owner rangelock.Owner) {
	for ino := range lw.ofdOwners[owner] {
		lw.unmarkOFD(owner, ino)
	}
	delete(lw.ofdOwners, owner)
}

// ofdMarks is the number of owners marked maybe-OFD (for tests).
func (lw *lockWaits) ofdMarks() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return len(lw.ofdOwners)
}

// wait serves a blocking lock request: try it; if it conflicts, queue it
// and return when it is granted, refused (EDEADLK), cancelled (EINTR) or
// this node stops leading.
func (lw *lockWaits) wait(ctx context.Context, w *waiter) (syscall.Errno, []*jfspb.LockOwner, error) {
	lw.mu.Lock()
	w.node = lw.processNode(w.owner, w.pid())
	var earlier []*waiter
	for _, v := range lw.queues[w.ino] {
		if conflictsWith(w, v) {
			earlier = append(earlier, v)
		}
	}
	lw.mu.Unlock()

	if len(earlier) == 0 {
		errno, conflicts, err := lw.attempt(ctx, w)
		if err != nil || errno != syscall.EAGAIN {
			return errno, conflicts, err
		}
	}

	lw.mu.Lock()
	if lw.canceled.take(w.key, time.Now()) {
		lw.mu.Unlock()
		return syscall.EINTR, nil, nil
	}
	lw.refresh()
	if old := lw.byKey[w.key]; old != nil {
		// The client re-sent a wait it already has here (a retry after a
		// lost connection): the newer call takes it over.
		lw.finish(old, waitResult{err: errInterrupted})
	}
	lw.nextID++
	w.id = lw.nextID
	w.since = time.Now()
	w.done = make(chan waitResult, 1)
	nodes, _ := lw.blockers(w, lw.queues[w.ino])
	nodes = w.edges(nodes)
	if !w.flock && !w.ofd {
		if cycle := lw.graph.WouldCycle(w.node, nodes); cycle != nil {
			lw.mu.Unlock()
			lw.n.metrics.Load().countDeadlock("immediate")
			lw.n.log.Info("deadlock refused", "ino", w.ino, "owner", w.owner, "cycle", cycle)
			return syscall.EDEADLK, nil, nil
		}
	}
	lw.queues[w.ino] = append(lw.queues[w.ino], w)
	lw.byKey[w.key] = w
	lw.byID[w.id] = w
	lw.graph.Add(w.id, w.node, nodes)
	lw.mu.Unlock()
	lw.n.metrics.Load().countWait(w.kind())
	// An unlock may have been applied between the attempt and now.
	lw.markDirty(w.ino)

	select {
	case r := <-w.done:
		return r.errno, nil, r.err
	case <-ctx.Done():
	}
	lw.mu.Lock()
	if w.granting {
		// The grant is on its way through the log; its result stands. A
		// client that went away retries with the same (session, seq) and
		// gets the stored grant.
		lw.mu.Unlock()
		r := <-w.done
		return r.errno, nil, r.err
	}
	lw.remove(w)
	lw.mu.Unlock()
	return 0, nil, ctx.Err()
}

func (w *waiter) pid() uint32 {
	if w.flock {
		return w.flockRq.GetPid()
	}
	return w.posix.GetPid()
}

func (w *waiter) kind() string {
	if w.flock {
		return "flock"
	}
	return "posix"
}

// attempt proposes w's request once, without blocking in the state machine.
func (lw *lockWaits) attempt(ctx context.Context, w *waiter) (syscall.Errno, []*jfspb.LockOwner, error) {
	if w.flock {
		resp, err := lw.n.Propose(ctx, cmdFlock, w.flockRq.Header, w.flockRq)
		if err != nil {
			return 0, nil, err
		}
		r, _ := resp.(*jfspb.FlockResponse)
		return syscall.Errno(r.GetErrno()), r.GetConflicts(), nil
	}
	resp, err := lw.n.Propose(ctx, cmdSetLk, w.posix.Header, w.posix)
	if err != nil {
		return 0, nil, err
	}
	r, _ := resp.(*jfspb.SetLkResponse)
	return syscall.Errno(r.GetErrno()), r.GetConflicts(), nil
}

// reconsider walks ino's queue in arrival order and starts a grant for every
// waiter that neither conflicts with a held lock nor may not overtake an
// earlier waiter; the others get their wait-for edges renewed, and are
// returned (POSIX ones) for refresh to check for cycles. Called with lw.mu
// held.
func (lw *lockWaits) reconsider(ino uint64) (renewed []*waiter) {
	var earlier []*waiter
	for _, w := range slices.Clone(lw.queues[ino]) {
		if w.granting {
			earlier = append(earlier, w)
			continue
		}
		nodes, ready := lw.blockers(w, earlier)
		lw.graph.Remove(w.id)
		if ready {
			w.granting = true
			lw.graph.Add(w.id, w.node, nil)
			go lw.grant(w)
		} else {
			lw.graph.Add(w.id, w.node, w.edges(nodes))
			if !w.flock && !w.ofd {
				renewed = append(renewed, w)
			}
		}
		earlier = append(earlier, w)
	}
	return renewed
}

// grant proposes a waiter's request now that nothing seemed to stand in its
// way. Another change may have slipped in first: then it waits on.
func (lw *lockWaits) grant(w *waiter) {
	ctx, cancel := context.WithTimeout(context.Background(), lw.n.cfg.ApplyTimeout)
	errno, _, err := lw.attempt(ctx, w)
	cancel()
	lw.mu.Lock()
	defer lw.mu.Unlock()
	w.granting = false
	if err == nil && errno == syscall.EAGAIN {
		lw.markDirty(w.ino)
		return
	}
	lw.finish(w, waitResult{errno: errno, err: err})
}

// finish removes w and delivers r. Called with lw.mu held.
func (lw *lockWaits) finish(w *waiter, r waitResult) {
	if lw.remove(w) {
		w.done <- r
	}
}

// remove takes w out of the queue and the graph, reporting whether it was
// there. Called with lw.mu held.
func (lw *lockWaits) remove(w *waiter) bool {
	q := lw.queues[w.ino]
	i := slices.Index(q, w)
	if i < 0 {
		return false
	}
	q = slices.Delete(q, i, i+1)
	if len(q) == 0 {
		delete(lw.queues, w.ino)
	} else {
		lw.queues[w.ino] = q
	}
	if lw.byKey[w.key] == w {
		delete(lw.byKey, w.key)
	}
	delete(lw.byID, w.id)
	lw.graph.Remove(w.id)
	// Waiters behind it may go now.
	lw.markDirty(w.ino)
	return true
}

// cancel ends the wait of (session, seq) with EINTR, unless its grant is
// already on its way (then the grant stands). A cancel that arrives before
// the wait is queued is remembered for cancelMemoFor.
func (lw *lockWaits) cancel(key waitKey) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	w := lw.byKey[key]
	switch {
	case w == nil:
		lw.canceled.add(key, time.Now())
	case !w.granting:
		lw.finish(w, waitResult{errno: syscall.EINTR})
	}
}

// dropSession fails the waits of an ended session with ESTALE.
func (lw *lockWaits) dropSession(sid uint64) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	delete(lw.hosts, sid)
	for o := range lw.ofdOwners {
		if o.Session == sid {
			lw.forgetOFD(o)
		}
	}
	for _, w := range lw.all() {
		if w.owner.Session == sid && !w.granting {
			lw.finish(w, waitResult{errno: syscall.ESTALE})
		}
	}
}

// failAll ends every wait with err: this node stops leading, and clients
// queue again at the new leader.
func (lw *lockWaits) failAll(err error) {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	for _, w := range lw.all() {
		if !w.granting {
			lw.finish(w, waitResult{err: err})
		}
	}
	clear(lw.hosts)
	clear(lw.ofdOwners)
	clear(lw.ofdByIno)
}

// all returns every waiter, by inode then arrival. Called with lw.mu held.
func (lw *lockWaits) all() []*waiter {
	var out []*waiter
	inos := make([]uint64, 0, len(lw.queues))
	for ino := range lw.queues {
		inos = append(inos, ino)
	}
	slices.Sort(inos)
	for _, ino := range inos {
		out = append(out, lw.queues[ino]...)
	}
	return out
}

// detect is the background detector: a cycle can form after its waits were
// admitted, when a grant changes who waits for whom (threads of one process
// share a POSIX owner and can wait on several locks at once). refresh finds
// the cycles that the changes it renews close; this scan of the whole graph
// finds any other. Each cycle is broken by breakCycle.
func (lw *lockWaits) detect() {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	lw.refresh()
	for {
		broke := false
		for _, cycle := range lw.graph.Cycles() {
			broke = lw.breakCycle(cycle) || broke
		}
		if !broke {
			return
		}
	}
}

// breakCycle fails the youngest POSIX wait that makes one of the cycle's
// edges with EDEADLK: the longest-waiting requests keep their places, and
// no wait outside the cycle is touched. A cycle of flock waits alone is left
// waiting, as Linux leaves it. It reports whether it failed a wait. Called
// with lw.mu held.
func (lw *lockWaits) breakCycle(cycle []rangelock.Owner) bool {
	var victim *waiter
	for i, from := range cycle {
		to := cycle[(i+1)%len(cycle)]
		for _, id := range lw.graph.WaitsOf(from) {
			w := lw.byID[id]
			if w == nil || w.flock || w.ofd || w.granting {
				continue
			}
			if _, blockers, _ := lw.graph.Wait(id); !slices.Contains(blockers, to) {
				continue
			}
			if victim == nil || w.since.After(victim.since) || (w.since.Equal(victim.since) && w.id > victim.id) {
				victim = w
			}
		}
	}
	if victim == nil {
		return false
	}
	lw.n.metrics.Load().countDeadlock("background")
	lw.n.log.Info("deadlock broken", "ino", victim.ino, "owner", victim.owner, "cycle", cycle)
	lw.finish(victim, waitResult{errno: syscall.EDEADLK})
	return true
}

// snapshot lists the waiters for jfsctl locks ls.
func (lw *lockWaits) snapshot(ino, session uint64) []*jfspb.LockInfo {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	var out []*jfspb.LockInfo
	for _, w := range lw.all() {
		if (ino != 0 && w.ino != ino) || (session != 0 && w.owner.Session != session) {
			continue
		}
		li := &jfspb.LockInfo{
			Ino: w.ino, Owner: &jfspb.LockOwner{Session: w.owner.Session, Owner: w.owner.ID},
			Type: fsm.WireLockType(w.typ), Pid: w.pid(), SinceNs: w.since.UnixNano(), Waiting: true,
			Kind: jfspb.LockKind_LOCK_KIND_POSIX,
		}
		if w.flock {
			li.Kind = jfspb.LockKind_LOCK_KIND_FLOCK
		} else {
			li.Start, li.Len = w.rng.Start, w.rng.Len()
		}
		out = append(out, li)
	}
	return out
}

// newPosixWaiter prepares a blocking F_SETLKW; ok is false for a request
// the state machine will refuse anyway (bad type or range, unlock), which is
// then simply proposed.
func newPosixWaiter(r *jfspb.SetLkRequest) (*waiter, bool) {
	typ, ok := fsm.LockType(r.Type)
	if !ok || typ == rangelock.Unlock || r.Header == nil {
		return nil, false
	}
	rng, err := rangelock.NewRange(r.Start, r.Len)
	if err != nil {
		return nil, false
	}
	h := r.Header
	return &waiter{
		key: waitKey{h.Session, h.Seq}, ino: r.Ino, owner: rangelock.Owner{Session: h.Session, ID: r.Owner},
		typ: typ, rng: rng, posix: r, ofd: r.MaybeOfd,
	}, true
}

// newFlockWaiter prepares a blocking flock.
func newFlockWaiter(r *jfspb.FlockRequest) (*waiter, bool) {
	typ, ok := fsm.LockType(r.Type)
	if !ok || typ == rangelock.Unlock || r.Header == nil {
		return nil, false
	}
	h := r.Header
	return &waiter{
		key: waitKey{h.Session, h.Seq}, ino: r.Ino, flock: true, owner: rangelock.Owner{Session: h.Session, ID: r.Fh},
		typ: typ, rng: rangelock.Whole, flockRq: r,
	}, true
}

// cancelMemoFor is how long a cancel that found no wait is remembered: its
// request may still be on its way to the leader.
const cancelMemoFor = time.Minute

// cancelMemo remembers cancels whose wait was not queued yet, each for
// cancelMemoFor. Entries expire in the order they were added, so expiry
// pops them off the front of a queue: add and take cost O(1) amortised,
// however many cancels are remembered. Not safe for concurrent use.
type cancelMemo struct {
	at    map[waitKey]time.Time // the live entries, by when they were added
	queue []memoEntry           // every entry added, oldest first
	head  int                   // queue[:head] is expired
}

type memoEntry struct {
	key waitKey
	at  time.Time
}

func newCancelMemo() cancelMemo { return cancelMemo{at: map[waitKey]time.Time{}} }

// add remembers a cancel of key at now. now must not be before the now of
// an earlier call.
func (m *cancelMemo) add(key waitKey, now time.Time) {
	m.expire(now)
	m.at[key] = now
	m.queue = append(m.queue, memoEntry{key, now})
}

// take reports whether key was cancelled within cancelMemoFor of now, and
// forgets it.
func (m *cancelMemo) take(key waitKey, now time.Time) bool {
	m.expire(now)
	_, ok := m.at[key]
	delete(m.at, key)
	return ok
}

// expire forgets the entries older than cancelMemoFor. Each entry is looked
// at once here, when it expires.
func (m *cancelMemo) expire(now time.Time) {
	for m.head < len(m.queue) && now.Sub(m.queue[m.head].at) > cancelMemoFor {
		e := m.queue[m.head]
		// A key cancelled again later has a newer entry: keep it.
		if t, ok := m.at[e.key]; ok && t.Equal(e.at) {
			delete(m.at, e.key)
		}
		m.queue[m.head] = memoEntry{}
		m.head++
	}
	// Reuse the array once its front half is dead.
	if m.head > 0 && m.head*2 >= len(m.queue) {
		n := copy(m.queue, m.queue[m.head:])
		clear(m.queue[n:])
		m.queue = m.queue[:n]
		m.head = 0
	}
}

// len is the number of remembered cancels.
func (m *cancelMemo) len() int { return len(m.at) }
