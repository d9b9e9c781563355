package cluster

import (
	"context"
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
// (SessionsAlive, stamped with its clock). A new leader starts each timer
// from the session's last stamp (or its registration), not from the moment
// it took office, and gives every session at least a grace of one election
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
	heard     map[uint64]bool // heartbeats since the last SessionsAlive record
	recorded  time.Time       // when the last SessionsAlive record was proposed
	proposing bool            // a SessionsAlive proposal is in flight
}

func newSessionTimers(n *Node, ttl time.Duration) *sessionTimers {
	election := n.cfg.ElectionTimeout
	return &sessionTimers{n: n, ttl: ttl, aliveEvery: min(ttl/4, election), grace: election,
		deadline: map[uint64]time.Time{}, lastBeat: map[uint64]time.Time{},
		expiring: map[uint64]bool{}, heard: map[uint64]bool{}}
}

// start arms a timer for every session in the state machine; the node has
// just become a ready leader. A session's timer runs from the last time a
// leader recorded it alive (or its registration), but gives it at least
// the grace to find this leader.
func (st *sessionTimers) start() {
	sessions := st.n.fsm.Sessions()
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	st.active = true
	clear(st.deadline)
	clear(st.expiring)
	clear(st.heard)
	st.recorded = now
	for _, s := range sessions {
		st.deadline[s.Id] = startDeadline(s, st.ttl, st.grace, now)
	}
}

// startDeadline is when a new leader that took office at now expires s
// unless it hears from it: ttl after the session was last known alive, but
// not before now+grace.
func startDeadline(s *jfspb.Session, ttl, grace time.Duration, now time.Time) time.Time {
	alive := time.Unix(0, max(s.GetAliveNs(), s.GetCreatedNs()))
	return later(alive.Add(ttl), now.Add(grace))
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
	clear(st.heard)
}

// beat resets sid's timer. It reports false when the session is unknown (it
// expired, or never was), which the client hears as ESTALE.
func (st *sessionTimers) beat(sid uint64) bool {
	st.mu.Lock()
	_, known := st.deadline[sid]
	active := st.active
	st.mu.Unlock()
	if !active {
		return false
	}
	if !known && st.n.fsm.Session(sid) == nil {
		return false
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.expiring[sid] {
		return false
	}
	now := time.Now()
	st.deadline[sid] = now.Add(st.ttl)
	st.lastBeat[sid] = now
	st.heard[sid] = true
	return true
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
	every := min(max(st.ttl/10, 50*time.Millisecond), time.Second)
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
		alive := st.takeHeard(now)
		st.mu.Unlock()
		for _, sid := range lapsed {
			go st.expire(sid)
		}
		if alive != nil {
			go st.recordAlive(alive)
		}
	}
}

// takeHeard returns, in order, the sessions heard from since the last
// SessionsAlive record when one is due, and forgets them; nil when none is
// due or nobody was heard. st.mu must be held.
func (st *sessionTimers) takeHeard(now time.Time) []uint64 {
	if !st.active || st.proposing || len(st.heard) == 0 || now.Sub(st.recorded) < st.aliveEvery {
		return nil
	}
	alive := make([]uint64, 0, len(st.heard))
	for sid := range st.heard {
		alive = append(alive, sid)
	}
	slices.Sort(alive)
	clear(st.heard)
	st.recorded = now
	st.proposing = true
	return alive
}

// recordAlive proposes one SessionsAlive entry for the sessions in alive.
// If it fails they count as heard again, for the next record.
func (st *sessionTimers) recordAlive(alive []uint64) {
	ctx, cancel := context.WithTimeout(context.Background(), st.n.cfg.ApplyTimeout)
	defer cancel()
	_, err := st.n.Propose(ctx, cmdSessionsAlive, nil, &jfspb.SessionsAliveRequest{Sessions: alive})
	st.mu.Lock()
	defer st.mu.Unlock()
	st.proposing = false
	if err != nil {
		if st.active {
			for _, sid := range alive {
				st.heard[sid] = true
			}
		}
		st.n.log.Warn("recording live sessions failed", "sessions", len(alive), "error", err)
	}
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
}

// forget drops sid's timer after the session was closed or evicted.
func (st *sessionTimers) forget(sid uint64) {
	st.mu.Lock()
	delete(st.deadline, sid)
	delete(st.lastBeat, sid)
	st.mu.Unlock()
	st.n.locks.dropSession(sid)
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
