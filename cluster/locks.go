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

// Blocking lock requests (F_SETLKW, flock without LOCK_NB) are proposed with
// queue set: the state machine grants them at once or queues them in the
// replicated queue of their inode, and the apply that frees their range
// grants them (fsm/lockwait.go). The leader only waits for that apply to
// answer the RPC, checks for deadlocks before a wait is queued, and runs the
// background detector over the wait-for graph between processes, which it
// rebuilds from the replicated queues and held locks. DESIGN.md gives the
// rules.

// errInterrupted ends a wait that a retry of the same request took over.
var errInterrupted = errors.New("cluster: lock wait interrupted")

// errDelegBusy: the request found its inode delegated (deleg.go); it is
// applied again once the delegation is recalled.
var errDelegBusy = errors.New("cluster: inode's locks are delegated")

// waiter is a blocking request whose RPC is served on this leader.
type waiter struct {
	key     waitKey
	ino     uint64
	flock   bool
	owner   rangelock.Owner // the lock owner: (session, lock owner) or (session, fh)
	node    rangelock.Owner // the process, as the wait-for graph knows it
	typ     rangelock.Type
	rng     rangelock.Range // Whole for a flock
	posix   *jfspb.SetLkRequest
	flockRq *jfspb.FlockRequest
	ofd     bool // a POSIX wait whose owner may be an open file (maybe_ofd)

	delegated bool // granted at once, with the inode's delegation

	// Guarded by lockWaits.regMu.
	queued   bool // the state machine answered "queued"
	canceled bool // CancelLockWait arrived
	done     chan waitResult
}

// waitKey names a wait as its client does: the request's (session, seq).
type waitKey struct{ session, seq uint64 }

type waitResult struct {
	errno syscall.Errno
	err   error
}

// graphWait is what the leader knows of a wait in its graph: one the state
// machine queued (id: the log index that queued it), or an admission still
// being proposed (id with pendingBit set).
type graphWait struct {
	key   waitKey
	ino   uint64
	flock bool
	ofd   bool
	since int64 // ns
}

const pendingBit = 1 << 63

// lockWaits is the leader's side of blocking lock requests.
type lockWaits struct {
	n *Node

	mu          sync.Mutex
	nextPending uint64
	graph       *rangelock.Graph
	gwaits      map[uint64]graphWait // graph wait id -> the wait
	pending     map[uint64]waitKey   // admissions in the graph, by id, until applied
	inoWaits    map[uint64][]uint64  // ino -> ids of its queued waits in the graph
	ending      map[waitKey]bool     // victims whose EndLockWait is being proposed
	canceled    cancelMemo           // cancels that arrived before their wait was proposed
	hosts       map[uint64]uint64    // session -> hash of its host, for graph nodes
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
	// endWait proposes the end of a queued wait (a deadlock's victim); a
	// field so that tests can watch it.
	endWait func(key waitKey, errno syscall.Errno)

	regMu sync.Mutex
	reg   map[waitKey]*waiter // RPCs waiting for their request's end

	dirtyMu  sync.Mutex
	dirty    map[uint64]bool // inodes whose locks or queues changed since the pump last looked
	allDirty bool            // every inode's may have
	kick     chan struct{}
}

func newLockWaits(n *Node) *lockWaits {
	lw := &lockWaits{
		n: n, graph: rangelock.NewGraph(), gwaits: map[uint64]graphWait{}, pending: map[uint64]waitKey{}, inoWaits: map[uint64][]uint64{},
		ending: map[waitKey]bool{}, canceled: newCancelMemo(), hosts: map[uint64]uint64{},
		ofdOwners: map[rangelock.Owner]map[uint64]int{}, ofdByIno: map[uint64]map[rangelock.Owner]struct{}{},
		reg: map[waitKey]*waiter{}, dirty: map[uint64]bool{}, kick: make(chan struct{}, 1),
		allDirty: true, // the state may hold queues already: build the graph at the first look
	}
	lw.endWait = lw.proposeEnd
	return lw
}

// changed is called by the state machine after a batch commits, with the
// inodes whose locks or queues changed, or all when any inode's may have.
// It must not block: the raft apply loop waits.
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

// ended is called by the state machine after a batch commits, with the
// queued waits it ended (granted, or failed): the RPCs waiting for them
// answer. It must not block.
func (lw *lockWaits) ended(ends []fsm.WaitEnd) {
	lw.regMu.Lock()
	defer lw.regMu.Unlock()
	for _, e := range ends {
		if w := lw.reg[waitKey{e.Session, e.Seq}]; w != nil {
			w.deliver(waitResult{errno: e.Errno})
		}
	}
}

// deliver hands r to the RPC of w, once. Called with lw.regMu held.
func (w *waiter) deliver(r waitResult) {
	select {
	case w.done <- r:
	default:
	}
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

// run is the pump: it renews the graph for changed inodes, and searches the
// whole graph for cycles every detectEvery.
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

// refresh renews the graph's waits and edges on every inode whose locks or
// queue changed since the last look, from the state machine. Every search
// of the graph is preceded by it: a waiter's edges point at the holders of
// when it was last considered, and a holder that unlocked and at once asked
// again would otherwise find the stale edge of the waiter it just freed and
// be refused a deadlock that is not there. The listener marks an inode
// before the change's apply is visible to any read, so no request can see
// the graph older than the changes it knows of. Followers keep the graph
// too, so a new leader has it at once. Called with lw.mu held.
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
		for ino := range lw.inoWaits {
			inos = append(inos, ino)
		}
		for ino := range lw.ofdByIno {
			inos = append(inos, ino)
		}
		if lw.n.fsm != nil {
			for _, w := range lw.n.fsm.Waits(0) {
				inos = append(inos, w.Ino)
			}
		}
	}
	slices.Sort(inos)
	inos = slices.Compact(inos)
	var renewed []uint64
	for _, ino := range inos {
		renewed = append(renewed, lw.rebuild(ino)...)
	}
	// An admission whose request the state machine answered is in the
	// graph as a queued wait now, or waits no more: its edges, of when it
	// was admitted, would be stale (a waiter granted at once by the next
	// unlock, before its proposal returned, would still seem to wait for
	// the process that unlocked).
	for id, key := range lw.pending {
		if lw.n.fsm.Answered(key.session, key.seq) {
			lw.graph.Remove(id)
			delete(lw.pending, id)
		}
	}
	lw.pruneOFD(inos)
	// Only now, with every changed edge renewed, look for cycles that the
	// renewals closed.
	for _, id := range renewed {
		if _, ok := lw.gwaits[id]; ok {
			if cycle := lw.cycleThrough(id); cycle != nil {
				lw.breakCycle(cycle)
			}
		}
	}
}

// rebuild replaces ino's waits in the graph by the state machine's queue,
// each with edges to the processes holding conflicting locks and to those
// of the earlier waiters it may not overtake. It returns the POSIX waits
// whose edges it renewed, for refresh to check for cycles. Called with
// lw.mu held.
func (lw *lockWaits) rebuild(ino uint64) (renewed []uint64) {
	for _, id := range lw.inoWaits[ino] {
		lw.graph.Remove(id)
		delete(lw.gwaits, id)
	}
	delete(lw.inoWaits, ino)
	if lw.n.fsm == nil {
		return nil
	}
	// A victim whose end is being proposed is gone already: were it
	// back, its cycle would be broken a second time.
	q := slices.DeleteFunc(lw.n.fsm.Waits(ino), func(w fsm.Wait) bool { return lw.ending[waitKey{w.Session, w.Seq}] })
	nodes := make([]rangelock.Owner, len(q))
	for i, w := range q {
		nodes[i] = lw.processNode(w.Owner, w.Pid)
	}
	ids := make([]uint64, 0, len(q))
	for i, w := range q {
		var blockers []rangelock.Owner
		for j := range i {
			if w.Behind(q[j].Waiter) {
				blockers = append(blockers, nodes[j])
			}
		}
		for _, h := range lw.n.fsm.LockHolders(ino, w.Flock, w.Owner, w.Type, w.Range) {
			blockers = append(blockers, lw.processNode(h.Owner, h.Pid))
		}
		if w.MaybeOFD {
			blockers = nil // see waiter.edges
		}
		lw.graph.Add(w.ID, nodes[i], blockers)
		lw.gwaits[w.ID] = graphWait{key: waitKey{w.Session, w.Seq}, ino: ino, flock: w.Flock, ofd: w.MaybeOFD, since: w.Since}
		ids = append(ids, w.ID)
		if !w.Flock && !w.MaybeOFD && len(blockers) > 0 {
			renewed = append(renewed, w.ID)
		}
	}
	if len(ids) > 0 {
		lw.inoWaits[ino] = ids
	}
	return renewed
}

// cycleThrough returns a cycle through wait id, or nil. Called with lw.mu
// held.
func (lw *lockWaits) cycleThrough(id uint64) []rangelock.Owner {
	node, blockers, ok := lw.graph.Wait(id)
	if !ok {
		return nil
	}
	lw.graph.Remove(id)
	cycle := lw.graph.WouldCycle(node, blockers)
	lw.graph.Add(id, node, blockers)
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

// blockers returns the processes a new request w would wait for: the
// holders of conflicting locks and the queued waiters it may not overtake,
// read from one state, and that state's applied index. Called with lw.mu
// held.
func (lw *lockWaits) blockers(w *waiter) ([]rangelock.Owner, uint64, bool) {
	holders, queue, applied, ok := lw.n.fsm.WaitState(w.ino, w.flock, w.owner, w.typ, w.rng)
	var nodes []rangelock.Owner
	me := rangelock.Waiter{Owner: w.owner, Flock: w.flock, Type: w.typ, Range: w.rng}
	for _, v := range queue {
		if me.Behind(v.Waiter) {
			nodes = append(nodes, lw.processNode(v.Owner, v.Pid))
		}
	}
	for _, h := range holders {
		nodes = append(nodes, lw.processNode(h.Owner, h.Pid))
	}
	return nodes, applied, ok
}

// maxAdmitTries bounds how often an admission reads the state again
// because a batch was applied while it renewed the graph.
const maxAdmitTries = 50

// admissionBlockers renews the graph and returns w's blockers, from a state
// no newer than the graph: every edge the graph has into a process must be
// as fresh as the state the blockers come from, or a wait that a batch
// ended (an admission that was granted at once, a queued wait granted)
// would seem to wait still and close a cycle that is not there. consistent
// is false when batches kept landing; the caller then does not refuse.
// Called with lw.mu held.
func (lw *lockWaits) admissionBlockers(w *waiter) (nodes []rangelock.Owner, consistent bool) {
	for range maxAdmitTries {
		// setApplied follows the lock listener: the marks of every batch
		// up to at are in, and refresh consumes them.
		at := lw.n.fsm.AppliedIndex()
		lw.refresh()
		nodes, applied, ok := lw.blockers(w)
		if ok && applied <= at {
			return nodes, true
		}
	}
	nodes, _, _ = lw.blockers(w)
	return nodes, false
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
// lw.mu held, after the graph of inos was rebuilt.
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
		for _, w := range lw.n.fsm.Waits(ino) {
			holding[w.Owner] = true
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

// wait serves a blocking lock request. A POSIX wait that would close a
// cycle of waiting processes is refused with EDEADLK before anything is
// proposed. Otherwise the request is proposed with queue set: the state
// machine grants it or queues it, and a queued request's RPC returns when
// the apply of a later entry ends its wait (granted, EINTR, EDEADLK,
// ESTALE, ENOENT), when a retry of the same request takes it over, or when
// this node stops leading; the wait itself stays queued in the state
// machine, and the client's retry at any leader finds it there.
func (lw *lockWaits) wait(ctx context.Context, w *waiter) (syscall.Errno, []*jfspb.LockOwner, error) {
	// Only the ready leader judges a wait: its state holds every entry a
	// client has seen answered. A follower's (or a leader's before it is
	// ready) may be older, and its deadlock check then finds cycles
	// through waits that are over; the client goes to the leader instead.
	if !lw.n.ready() {
		return 0, nil, ErrNotLeader
	}
	// Registered first: a cancel either finds the registration or left a
	// memo that is looked at below (cancel holds regMu across both).
	w.done = make(chan waitResult, 1)
	lw.regMu.Lock()
	if old := lw.reg[w.key]; old != nil {
		// The client re-sent a wait it already has here (a retry after a
		// lost connection): the newer call takes it over.
		old.deliver(waitResult{err: errInterrupted})
	}
	lw.reg[w.key] = w
	lw.regMu.Unlock()
	defer func() {
		lw.regMu.Lock()
		if lw.reg[w.key] == w {
			delete(lw.reg, w.key)
		}
		lw.regMu.Unlock()
	}()

	// A retry of a request that the state machine answered already (queued,
	// or granted meanwhile) was admitted then: its stored answer stands,
	// and a second check could refuse a lock it holds.
	queued, answered := lw.n.fsm.RequestState(w.key.session, w.key.seq)
	lw.mu.Lock()
	if lw.canceled.take(w.key, time.Now()) {
		switch {
		case !answered:
			lw.mu.Unlock()
			return syscall.EINTR, nil, nil
		case queued:
			lw.regMu.Lock()
			w.canceled = true // ended below, once the retry is answered "queued"
			lw.regMu.Unlock()
		}
	}
	w.node = lw.processNode(w.owner, w.pid())
	var pending uint64
	if !answered {
		nodes, consistent := lw.admissionBlockers(w)
		if nodes = w.edges(nodes); len(nodes) > 0 {
			if !w.flock && !w.ofd && consistent {
				if cycle := lw.graph.WouldCycle(w.node, nodes); cycle != nil {
					lw.mu.Unlock()
					lw.n.metrics.Load().countDeadlock("immediate")
					lw.n.log.Info("deadlock refused", "ino", w.ino, "owner", w.owner, "cycle", cycle)
					return syscall.EDEADLK, nil, nil
				}
			}
			// In the graph while it is proposed, so that a concurrent
			// admission that would close a cycle with it sees it.
			lw.nextPending++
			pending = lw.nextPending | pendingBit
			lw.graph.Add(pending, w.node, nodes)
			lw.pending[pending] = w.key
		}
	}
	lw.mu.Unlock()

	errno, conflicts, queued, err := lw.propose(ctx, w)
	if pending != 0 {
		lw.mu.Lock()
		lw.graph.Remove(pending)
		delete(lw.pending, pending)
		lw.mu.Unlock()
	}
	if err != nil || !queued {
		return errno, conflicts, err
	}
	if !answered {
		lw.n.metrics.Load().countWait(w.kind())
	}
	lw.regMu.Lock()
	w.queued = true
	canceled := w.canceled
	lw.regMu.Unlock()
	if canceled {
		lw.cancelQueued(ctx, w.key)
	}
	select {
	case r := <-w.done:
		return r.errno, nil, r.err
	case <-ctx.Done():
		return 0, nil, ctx.Err()
	}
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

// propose proposes w's request with queue set: granted or refused (errno),
// or queued.
func (lw *lockWaits) propose(ctx context.Context, w *waiter) (errno syscall.Errno, conflicts []*jfspb.LockOwner, queued bool, err error) {
	if w.flock {
		w.flockRq.Queue = true
		resp, err := lw.n.Propose(ctx, cmdFlock, w.flockRq.Header, w.flockRq)
		if err != nil {
			return 0, nil, false, err
		}
		r, _ := resp.(*jfspb.FlockResponse)
		if r.GetDelegBusy() {
			return 0, nil, false, errDelegBusy
		}
		w.delegated = r.GetDelegated()
		return syscall.Errno(r.GetErrno()), r.GetConflicts(), r.GetQueued(), nil
	}
	w.posix.Queue = true
	resp, err := lw.n.Propose(ctx, cmdSetLk, w.posix.Header, w.posix)
	if err != nil {
		return 0, nil, false, err
	}
	r, _ := resp.(*jfspb.SetLkResponse)
	if r.GetDelegBusy() {
		return 0, nil, false, errDelegBusy
	}
	w.delegated = r.GetDelegated()
	return syscall.Errno(r.GetErrno()), r.GetConflicts(), r.GetQueued(), nil
}

// cancel ends the wait of (session, seq) with EINTR, unless it was granted
// first (then the grant stands, and the waiting RPC answers it). A cancel
// that arrives before its wait is proposed is remembered for
// cancelMemoFor; one that arrives while it is being proposed is applied
// once the state machine has queued it.
func (lw *lockWaits) cancel(ctx context.Context, key waitKey) error {
	lw.regMu.Lock()
	if w := lw.reg[key]; w != nil {
		w.canceled = true
		queued := w.queued
		lw.regMu.Unlock()
		if !queued {
			return nil // wait ends it once the state machine queued it
		}
		return lw.cancelQueued(ctx, key)
	}
	// No RPC here: the request is queued with its RPC at another node or on
	// its way here, or answered already (that answer stands), or not
	// proposed yet (remembered, under regMu, so that a wait registering
	// now finds the memo).
	queued, answered := lw.n.fsm.RequestState(key.session, key.seq)
	if !answered {
		lw.mu.Lock()
		lw.canceled.add(key, time.Now())
		lw.mu.Unlock()
		// A request waiting for a delegation's recall looks for it.
		lw.n.deleg.locksChanged()
	}
	lw.regMu.Unlock()
	if queued {
		return lw.cancelQueued(ctx, key)
	}
	return nil
}

// takeCancel reports whether a cancel of key that found no wait was
// remembered, and forgets it: the request, not proposed yet, answers
// EINTR.
func (lw *lockWaits) takeCancel(key waitKey) bool {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	return lw.canceled.take(key, time.Now())
}

// cancelQueued proposes the end of the queued wait key with EINTR. A wait
// granted first keeps its grant (the command then changes nothing).
func (lw *lockWaits) cancelQueued(ctx context.Context, key waitKey) error {
	_, err := lw.n.Propose(ctx, cmdEndLockWait, nil, &jfspb.EndLockWaitRequest{Session: key.session, Seq: key.seq, Errno: int32(syscall.EINTR)})
	return err
}

// proposeEnd ends a deadlock's victim with errno in the background.
func (lw *lockWaits) proposeEnd(key waitKey, errno syscall.Errno) {
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), lw.n.cfg.ApplyTimeout)
		_, err := lw.n.Propose(ctx, cmdEndLockWait, nil, &jfspb.EndLockWaitRequest{Session: key.session, Seq: key.seq, Errno: int32(errno)})
		cancel()
		if err != nil {
			lw.n.log.Warn("ending a lock wait failed", "session", key.session, "seq", key.seq, "errno", errno, "error", err)
		}
		lw.mu.Lock()
		delete(lw.ending, key)
		lw.mu.Unlock()
		lw.poke()
	}()
}

// dropSession forgets what the leader kept for an ended session. Its
// queued waits ended in the state machine with the session (ESTALE); an
// RPC still waiting for one answers ESTALE too.
func (lw *lockWaits) dropSession(sid uint64) {
	lw.mu.Lock()
	delete(lw.hosts, sid)
	for o := range lw.ofdOwners {
		if o.Session == sid {
			lw.forgetOFD(o)
		}
	}
	lw.mu.Unlock()
	lw.regMu.Lock()
	defer lw.regMu.Unlock()
	for k, w := range lw.reg {
		if k.session == sid && w.queued {
			w.deliver(waitResult{errno: syscall.ESTALE})
		}
	}
}

// failAll ends every waiting RPC with err: this node stops leading, and
// clients send their requests again to the new leader, where they find
// their waits still queued.
func (lw *lockWaits) failAll(err error) {
	lw.endRPCs(waitResult{err: err})
}

// endRPCs answers every waiting RPC with r.
func (lw *lockWaits) endRPCs(r waitResult) {
	lw.regMu.Lock()
	for _, w := range lw.reg {
		w.deliver(r)
	}
	lw.regMu.Unlock()
	lw.mu.Lock()
	clear(lw.hosts)
	clear(lw.ofdOwners)
	clear(lw.ofdByIno)
	lw.mu.Unlock()
}

// waiting is the number of queued waits in the graph.
func (lw *lockWaits) waiting() int {
	lw.mu.Lock()
	defer lw.mu.Unlock()
	n := 0
	for _, ids := range lw.inoWaits {
		n += len(ids)
	}
	return n
}

// detect is the background detector: a cycle can form after its waits were
// admitted, when a grant changes who waits for whom (threads of one process
// share a POSIX owner and can wait on several locks at once), or when two
// admissions raced. refresh finds the cycles that the changes it renews
// close; this scan of the whole graph finds any other. Each cycle is broken
// by breakCycle.
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

// breakCycle ends the youngest queued POSIX wait that makes one of the
// cycle's edges with EDEADLK, through the log: the longest-waiting requests
// keep their places, and no wait outside the cycle is touched. A cycle of
// flock waits alone is left waiting, as Linux leaves it. The victim leaves
// the graph at once, so that the cycle is not broken twice. It reports
// whether it chose a victim. Called with lw.mu held.
func (lw *lockWaits) breakCycle(cycle []rangelock.Owner) bool {
	var victim uint64
	var vw graphWait
	for i, from := range cycle {
		to := cycle[(i+1)%len(cycle)]
		for _, id := range lw.graph.WaitsOf(from) {
			w, ok := lw.gwaits[id]
			if !ok || w.flock || w.ofd || lw.ending[w.key] {
				continue
			}
			if _, blockers, _ := lw.graph.Wait(id); !slices.Contains(blockers, to) {
				continue
			}
			if victim == 0 || w.since > vw.since || (w.since == vw.since && id > victim) {
				victim, vw = id, w
			}
		}
	}
	if victim == 0 {
		return false
	}
	lw.n.metrics.Load().countDeadlock("background")
	lw.n.log.Info("deadlock broken", "ino", vw.ino, "session", vw.key.session, "seq", vw.key.seq, "cycle", cycle)
	lw.graph.Remove(victim)
	delete(lw.gwaits, victim)
	lw.ending[vw.key] = true
	lw.endWait(vw.key, syscall.EDEADLK)
	return true
}

// snapshot lists the queued waits for jfsctl locks ls.
func (lw *lockWaits) snapshot(ino, session uint64) []*jfspb.LockInfo {
	var out []*jfspb.LockInfo
	for _, w := range lw.n.fsm.Waits(ino) {
		if session != 0 && w.Session != session {
			continue
		}
		li := &jfspb.LockInfo{
			Ino: w.Ino, Owner: &jfspb.LockOwner{Session: w.Owner.Session, Owner: w.Owner.ID},
			Type: fsm.WireLockType(w.Type), Pid: w.Pid, SinceNs: w.Since, Waiting: true,
			Kind: jfspb.LockKind_LOCK_KIND_POSIX,
		}
		if w.Flock {
			li.Kind = jfspb.LockKind_LOCK_KIND_FLOCK
		} else {
			li.Start, li.Len = w.Range.Start, w.Range.Len()
		}
		out = append(out, li)
	}
	return out
}

// newPosixWaiter prepares a blocking F_SETLKW; ok is false for a request
// the state machine will refuse anyway (bad type or range, unlock), or that
// cannot wait (no seq to find it by), which is then simply proposed.
func newPosixWaiter(r *jfspb.SetLkRequest) (*waiter, bool) {
	typ, ok := fsm.LockType(r.Type)
	if !ok || typ == rangelock.Unlock || r.Header == nil || r.Header.Seq == 0 {
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
	if !ok || typ == rangelock.Unlock || r.Header == nil || r.Header.Seq == 0 {
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
