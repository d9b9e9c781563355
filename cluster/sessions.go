package cluster

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// sessionTimers keeps a TTL timer per client session on the leader only.
// Heartbeats reset a timer in memory and never touch the log, so they are
// cheap and contend on nothing but this map. A lapsed timer makes the leader
// propose "expire session", whose apply releases the session's locks, ends
// its opens and frees its sustained inodes.
//
// So that leader changes cannot postpone an expiry for ever, the leader
// records in the log, at most once per aliveEvery and only when it heard
// from anyone, which sessions it heard from since its previous record
// (SessionsAlive, stamped with its clock), and answers a heartbeat only once
// the record listing it is committed. A new leader starts each timer from
// the session's last stamp (or its registration), not from the moment it
// took office, and gives every session at least a grace of one election
// timeout to reach it. See DESIGN.md "Sessions and fencing" for the bound.
type sessionTimers struct {
	n          *Node
	ttl        time.Duration
	aliveEvery time.Duration // at most this long between SessionsAlive records
	grace      time.Duration // a new leader's least time for a session to reach it

	mu        sync.Mutex
	active    bool
	deadline  map[uint64]time.Time
	lastBeat  map[uint64]time.Time
	expiring  map[uint64]bool
	pending   *aliveBatch // heartbeats waiting for the next SessionsAlive record
	recorded  time.Time   // when the last SessionsAlive record was proposed
	proposing bool        // a SessionsAlive proposal is in flight
}

// aliveBatch is the heartbeats that one SessionsAlive record will
// acknowledge: their answers wait until done is closed, and err says
// whether the record was committed.
type aliveBatch struct {
	sids map[uint64]bool
	done chan struct{}
	err  error
}

func (b *aliveBatch) finish(err error) {
	b.err = err
	close(b.done)
}

// wait waits for the record that acknowledges the heartbeat.
func (b *aliveBatch) wait(ctx context.Context) error {
	select {
	case <-b.done:
		return b.err
	case <-ctx.Done():
		return ctx.Err()
	}
}

func newSessionTimers(n *Node, ttl time.Duration) *sessionTimers {
	election := n.cfg.ElectionTimeout
	return &sessionTimers{n: n, ttl: ttl, aliveEvery: min(ttl/4, election/2), grace: election,
		deadline: map[uint64]time.Time{}, lastBeat: map[uint64]time.Time{},
		expiring: map[uint64]bool{}}
}

// start arms a timer for every session in the state machine; the node has
// just become a ready leader. A session's timer runs from the last time a
// leader recorded it alive (or its registration), but gives it at least
// the grace to find this leader.
//
// outage is how long the cluster may have been without a leader before
// this one (see Node.lastLeaderSeen): no client could heartbeat then, so
// it is added to every session's last stamp.
func (st *sessionTimers) start(outage time.Duration) {
	// Active before the sessions are read, under the lock: a session
	// registered meanwhile is either read here or added by add() once
	// this returns, never missed.
	st.mu.Lock()
	defer st.mu.Unlock()
	st.active = true
	sessions := st.n.fsm.Sessions()
	now := time.Now()
	clear(st.deadline)
	clear(st.expiring)
	st.failPending()
	// The first heartbeats this leader hears are recorded at the next tick:
	// a leader that does not last long still leaves them in the log.
	st.recorded = time.Time{}
	for _, s := range sessions {
		st.deadline[s.Id] = startDeadline(s, st.ttl, st.grace, now, outage)
	}
}

// startDeadline is when a new leader that took office at now, after a time
// without any leader of outage, expires s unless it hears from it. The
// session counts as alive at its last stamp plus outage (it could not
// heartbeat while no leader was there); then it expires ttl after that, but
// not before now+grace, so that a live client has time to find this
// leader; and never later than ttl+grace after that, so that leaders
// changing faster than the grace cannot postpone the expiry of a dead
// client for ever.
func startDeadline(s *jfspb.Session, ttl, grace time.Duration, now time.Time, outage time.Duration) time.Time {
	alive := time.Unix(0, max(s.GetAliveNs(), s.GetCreatedNs())).Add(max(outage, 0))
	d := later(alive.Add(ttl), now.Add(grace))
	if limit := alive.Add(ttl + grace); d.After(limit) {
		d = limit
	}
	return d
}

func later(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// stop forgets every timer: the node no longer leads.
func (st *sessionTimers) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.active = false
	clear(st.deadline)
	clear(st.lastBeat)
	clear(st.expiring)
	st.failPending()
}

// failPending fails the heartbeats waiting for a record that this node
// will not make; their clients retry at the leader. st.mu must be held.
func (st *sessionTimers) failPending() {
	if st.pending != nil {
		st.pending.finish(ErrNotLeader)
		st.pending = nil
	}
}

// beat resets sid's timer. It returns false when the session is unknown
// (it expired, or never was), which the client hears as ESTALE. Otherwise
// the heartbeat is acknowledged once the SessionsAlive record that lists it
// is committed: wait on the batch returned. So every heartbeat a client saw
// succeed is in the log, and a later leader never starts the session's
// timer from an earlier time.
func (st *sessionTimers) beat(sid uint64) (*aliveBatch, bool) {
	st.mu.Lock()
	_, known := st.deadline[sid]
	active := st.active
	st.mu.Unlock()
	if !active {
		return nil, false
	}
	if !known && st.n.fsm.Session(sid) == nil {
		return nil, false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.expiring[sid] || !st.active {
		return nil, false
	}
	now := time.Now()
	st.deadline[sid] = now.Add(st.ttl)
	st.lastBeat[sid] = now
	if st.pending == nil {
		st.pending = &aliveBatch{sids: map[uint64]bool{}, done: make(chan struct{})}
	}
	st.pending.sids[sid] = true
	b := st.pending
	// When a record is due already, make it now rather than at the next
	// tick: a heartbeat after a quiet spell is answered after one commit.
	if due := st.takeHeard(now); due != nil {
		go st.recordAlive(due)
	}
	return b, true
}

// lastHeartbeat is when the leader last heard from sid (zero if not since it
// took office).
func (st *sessionTimers) lastHeartbeat(sid uint64) time.Time {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.lastBeat[sid]
}

// run expires lapsed sessions until stop closes.
func (st *sessionTimers) run(stop <-chan struct{}) {
	// Ticks at least twice per aliveEvery, so records are at most
	// aliveEvery and a half apart.
	every := min(max(st.ttl/10, 50*time.Millisecond), time.Second, max(st.aliveEvery/2, 10*time.Millisecond))
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-stop:
			return
		case <-tick.C:
		}
		now := time.Now()
		var lapsed []uint64
		st.mu.Lock()
		for sid, d := range st.deadline {
			if st.active && now.After(d) && !st.expiring[sid] {
				st.expiring[sid] = true
				lapsed = append(lapsed, sid)
			}
		}
		batch := st.takeHeard(now)
		st.mu.Unlock()
		for _, sid := range lapsed {
			go st.expire(sid)
		}
		if batch != nil {
			go st.recordAlive(batch)
		}
	}
}

// takeHeard returns the heartbeats waiting for a record when one is due,
// and starts a new batch; nil when none is due or nobody was heard. st.mu
// must be held.
func (st *sessionTimers) takeHeard(now time.Time) *aliveBatch {
	if !st.active || st.proposing || st.pending == nil || now.Sub(st.recorded) < st.aliveEvery {
		return nil
	}
	b := st.pending
	st.pending = nil
	st.recorded = now
	st.proposing = true
	return b
}

// recordAlive proposes one SessionsAlive entry for the sessions of b, in
// order, and then answers their heartbeats.
func (st *sessionTimers) recordAlive(b *aliveBatch) {
	alive := make([]uint64, 0, len(b.sids))
	for sid := range b.sids {
		alive = append(alive, sid)
	}
	slices.Sort(alive)
	ctx, cancel := context.WithTimeout(context.Background(), st.n.cfg.ApplyTimeout)
	defer cancel()
	_, err := st.n.Propose(ctx, cmdAlive, nil, &jfspb.SessionsAliveRequest{Sessions: alive})
	st.mu.Lock()
	st.proposing = false
	st.mu.Unlock()
	if err != nil {
		st.n.log.Warn("recording live sessions failed", "sessions", len(alive), "error", err)
		err = fmt.Errorf("%w: recording the heartbeat: %v", ErrNotLeader, err)
	}
	b.finish(err)
}

func (st *sessionTimers) expire(sid uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), st.n.cfg.ApplyTimeout)
	defer cancel()
	st.n.log.Info("session expired", "session", sid, "ttl", st.ttl)
	_, err := st.n.Propose(ctx, cmdExpire, nil, &jfspb.ExpireSessionRequest{SessionId: sid, Reason: "ttl"})
	st.mu.Lock()
	if err != nil {
		// Not applied (leadership lost, or shutting down): a later leader
		// restarts the timer.
		delete(st.expiring, sid)
		st.mu.Unlock()
		st.n.log.Warn("expiring session failed", "session", sid, "error", err)
		return
	}
	delete(st.deadline, sid)
	delete(st.lastBeat, sid)
	delete(st.expiring, sid)
	st.mu.Unlock()
	st.n.locks.dropSession(sid)
	st.n.deleg.dropSession(sid)
	st.n.opens.dropSession(sid)
	st.n.kickFree() // its orphans, and the sessions left to report
}

// deadlineOf is when this leader expires sid unless it hears from it: the
// moment after which sid surely lapsed, so no mount's lease on it
// (client.Session.LeaseUntil) lasts longer. ok is false for a session
// without a timer (expired, closed, or not known).
func (st *sessionTimers) deadlineOf(sid uint64) (time.Time, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	d, ok := st.deadline[sid]
	return d, ok
}

// forget drops sid's timer after the session was closed or evicted. Its
// mount may be alive still: its caches count it as lapsed only at the
// deadline it had.
func (st *sessionTimers) forget(sid uint64) {
	st.mu.Lock()
	if d, ok := st.deadline[sid]; ok {
		st.n.caches.sessionEnded(sid, d)
	}
	delete(st.deadline, sid)
	delete(st.lastBeat, sid)
	st.mu.Unlock()
	st.n.locks.dropSession(sid)
	st.n.deleg.dropSession(sid)
	st.n.opens.dropSession(sid)
	st.n.kickFree() // its orphans, and the sessions left to report
}

// add arms a timer for a session just registered.
func (st *sessionTimers) add(sid uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.active {
		now := time.Now()
		st.deadline[sid] = now.Add(st.ttl)
		st.lastBeat[sid] = now
	}
}
