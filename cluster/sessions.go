package cluster

import (
	"context"
	"sync"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// sessionTimers keeps a TTL timer per client session on the leader only.
// Heartbeats reset a timer in memory and never touch the log, so they are
// cheap and contend on nothing but this map. A lapsed timer makes the leader
// propose "expire session", whose apply releases the session's locks, ends
// its opens and frees its sustained inodes. A new leader restarts every
// timer with the full TTL: a client is never expired for heartbeats it sent
// to a previous leader.
type sessionTimers struct {
	n   *Node
	ttl time.Duration

	mu       sync.Mutex
	active   bool
	deadline map[uint64]time.Time
	lastBeat map[uint64]time.Time
	expiring map[uint64]bool
}

func newSessionTimers(n *Node, ttl time.Duration) *sessionTimers {
	return &sessionTimers{n: n, ttl: ttl, deadline: map[uint64]time.Time{},
		lastBeat: map[uint64]time.Time{}, expiring: map[uint64]bool{}}
}

// start arms a timer for every session in the state machine; the node has
// just become a ready leader.
func (st *sessionTimers) start() {
	sessions := st.n.fsm.Sessions()
	st.mu.Lock()
	defer st.mu.Unlock()
	now := time.Now()
	st.active = true
	clear(st.deadline)
	clear(st.expiring)
	for _, s := range sessions {
		st.deadline[s.Id] = now.Add(st.ttl)
	}
}

// stop forgets every timer: the node no longer leads.
func (st *sessionTimers) stop() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.active = false
	clear(st.deadline)
	clear(st.lastBeat)
	clear(st.expiring)
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
		st.mu.Unlock()
		for _, sid := range lapsed {
			go st.expire(sid)
		}
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
