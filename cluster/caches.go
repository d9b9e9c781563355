package cluster

import (
	"context"
	"math/rand/v2"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster/grants"
	"github.com/jfs-dev/jfs/fsm"
)

// caches wires the grant table (cluster/grants) to raft, the sessions'
// streams and the clock (DESIGN.md "Coherent caches"). Leader only: it is
// active from just before the node becomes a ready leader until it stops
// leading.
type caches struct {
	n      *Node
	ttl    time.Duration
	margin time.Duration // added to the TTL for a new leader's wait
	ping   time.Duration // a stream hears at least this often

	mu      sync.Mutex
	t       *grants.Table
	active  bool
	epoch   uint64    // grows at every start and stop
	settle  time.Time // a new leader's wait ends at the latest then
	failed  map[uint64]bool
	streams map[uint64]*cacheStream
	ended   map[uint64]time.Time // sessions closed or evicted: when they surely lapsed
	// cleared is closed and replaced whenever a change completes, a new
	// leader settles, or the caches stop.
	cleared chan struct{}
	// unsettled: sessions registered as coherent before this leader took
	// office that have not acknowledged a reset to it (see settled).
	unsettled map[uint64]bool
	// draining is closed when the node stops serving (EndStreams): every
	// stream ends, so that a graceful stop of the server does not wait for
	// them.
	draining  chan struct{}
	drainOnce sync.Once
	// waitHook, when set (tests), is told each time a request starts to
	// wait: "read" (a change of what it read), "write" (its change) or
	// "settle" (a new leader's wait).
	waitHook func(kind string)
}

// waiting tells the test hook that a request waits.
func (c *caches) waiting(kind string) {
	c.mu.Lock()
	fn := c.waitHook
	c.mu.Unlock()
	if fn != nil {
		fn(kind)
	}
}

// cacheStream is the current stream of one session.
type cacheStream struct {
	sid   uint64
	id    uint64
	wake  chan struct{} // has a buffer of one: events are queued
	queue []grants.Event
	gone  chan struct{} // closed when the stream must end (leadership lost, replaced)
}

func newCaches(n *Node) *caches {
	ttl := n.cfg.SessionTTL
	return &caches{n: n, ttl: ttl, margin: max(ttl/10, 100*time.Millisecond), ping: 500 * time.Millisecond,
		t: grants.New(n.cfg.CacheFanout), streams: map[uint64]*cacheStream{}, ended: map[uint64]time.Time{},
		cleared: make(chan struct{}), unsettled: map[uint64]bool{}, draining: make(chan struct{})}
}

// EndStreams ends every cache stream and lock-recall stream of the node,
// now and from now on: call it before a graceful stop of the node's gRPC
// server, which would otherwise wait for these long-lived calls while the
// node still leads, refuses heartbeats and runs its session timers (a
// short-TTL session expired that way). Mounts move to another node.
func (n *Node) EndStreams() { n.caches.drainOnce.Do(func() { close(n.caches.draining) }) }

// broadcast wakes everyone waiting for a change. c.mu must be held.
func (c *caches) broadcast() {
	close(c.cleared)
	c.cleared = make(chan struct{})
}

// start makes the caches active: the node is about to serve as leader.
// Every live session that registered as coherent may hold grants of an
// earlier leader that this one does not know: until it acknowledged a
// reset on a stream to this leader, or one session TTL (and a margin)
// passed, every change waits for it, and reads and writes wait (settled).
// By then every kernel timeout handed out under an earlier leader has run
// out, since a mount bounds them by its session lease, which ends one TTL
// after the last heartbeat it sent to an earlier leader.
func (c *caches) start() {
	// Read before the lock: apply holds the state's lock while it waits
	// for c.mu (changed). Every session of an earlier term is in the state
	// by now: the node applied its own first entries before it got here.
	sessions := c.n.fsm.Sessions()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = true
	c.epoch++
	c.t = grants.New(c.n.cfg.CacheFanout)
	clear(c.ended)
	clear(c.unsettled)
	c.settle = time.Now().Add(c.ttl + c.margin)
	for _, s := range sessions {
		if s.GetCoherent() {
			c.t.Wild(s.Id)
			c.unsettled[s.Id] = true
		}
	}
	c.broadcast()
}

// stop ends every stream and forgets every grant: the node no longer
// leads. Writes waiting for their changes fail with ErrNotLeader; their
// clients retry at the new leader, which waits as start says.
func (c *caches) stop() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.active = false
	c.epoch++
	for sid, s := range c.streams {
		close(s.gone)
		delete(c.streams, sid)
	}
	c.t = grants.New(c.n.cfg.CacheFanout)
	clear(c.unsettled)
	c.broadcast()
}

// changed is the state machine's change listener: it runs in apply,
// before the batch commits. Leader only.
func (c *caches) changed(changes []fsm.Change) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active {
		return
	}
	for _, ch := range changes {
		entries := make([]grants.Entry, len(ch.Entries))
		for i, e := range ch.Entries {
			entries[i] = grants.Entry{Parent: e.Parent, Name: e.Name}
		}
		for _, ev := range c.t.Change(ch.Index, ch.Session, ch.Inos, entries) {
			c.n.metrics.Load().countCacheEvent()
			if s := c.streams[ev.Session]; s != nil {
				s.queue = append(s.queue, ev)
				select {
				case s.wake <- struct{}{}:
				default:
				}
			}
			// A session without a stream gets the event with its next
			// stream's reset, or lapses.
		}
	}
}

// committed: every entry up to index is visible to readers.
func (c *caches) committed(index uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active {
		c.finish(c.t.Committed(index))
	}
}

// finish wakes the waiters of completed changes. c.mu must be held.
func (c *caches) finish(done []uint64) {
	if len(done) > 0 {
		c.broadcast()
	}
}

// waitChange waits until the change of log entry index, and every earlier
// change of the same session, reached every mount that cached what it
// changed (or that mount's session lapsed).
func (c *caches) waitChange(ctx context.Context, session, index uint64) error {
	for {
		c.mu.Lock()
		if !c.active {
			c.mu.Unlock()
			return ErrNotLeader
		}
		pending := c.t.PendingBy(session, index)
		ch := c.cleared
		c.mu.Unlock()
		if !pending {
			return nil
		}
		c.waiting("write")
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// settled waits until a new leader may answer: every session that was
// coherent when it took office reset its caches with it or lapsed, or the
// TTL wait is over. An answer before could show a state that a mount
// still caches an older version of, granted by an earlier leader.
//
// sid is the session asking (0: none). A read (write false) of a session
// that has not reset yet does not wait: its mount's reset may wait for the
// kernel's directory lock that this very read holds. A write waits for
// every other session, never for its own.
func (c *caches) settled(ctx context.Context, sid uint64, write bool) error {
	for {
		c.mu.Lock()
		if !c.active {
			c.mu.Unlock()
			return ErrNotLeader
		}
		n := len(c.unsettled)
		if c.unsettled[sid] {
			n--
			if !write {
				n = 0
			}
		}
		ch := c.cleared
		c.mu.Unlock()
		if n == 0 {
			return nil
		}
		c.waiting("settle")
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// grantIno and grantEntry register a grant before a read; see grants.
func (c *caches) grantIno(sid, ino uint64) grants.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active || sid == 0 {
		return grants.Token{}
	}
	return c.t.GrantIno(sid, ino)
}

func (c *caches) grantEntry(sid, parent uint64, name []byte) grants.Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active || sid == 0 {
		return grants.Token{}
	}
	return c.t.GrantEntry(sid, grants.Entry{Parent: parent, Name: string(name)})
}

// afterRead waits until no change of what a read read is in progress (a
// read that saw a change before every cache dropped the old state must not
// be answered: a reader on a mount that still had it could then see the
// old state after this one saw the new), and then reports whether every
// token still holds.
//
// reader is the session of the mount that reads (0: none): a change that
// waits for the reader's own acknowledgement does not make it wait
// (grants.Table.Blocks says why).
func (c *caches) afterRead(ctx context.Context, reader uint64, inos []uint64, entries []grants.Entry, toks ...grants.Token) (bool, error) {
	for {
		c.mu.Lock()
		if !c.active {
			c.mu.Unlock()
			return false, ErrNotLeader
		}
		if !c.t.Blocks(reader, inos, entries) {
			ok := len(toks) > 0
			for _, tok := range toks {
				ok = ok && c.t.Confirm(tok)
			}
			c.mu.Unlock()
			return ok, nil
		}
		ch := c.cleared
		c.mu.Unlock()
		c.n.metrics.Load().countCacheReadWait()
		c.waiting("read")
		select {
		case <-ch:
		case <-ctx.Done():
			return false, ctx.Err()
		}
	}
}

// open starts a new stream for sid and returns it with its reset event.
func (c *caches) open(sid uint64) (*cacheStream, *jfspb.CacheEvent, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active {
		return nil, nil, false
	}
	if old := c.streams[sid]; old != nil {
		close(old.gone)
	}
	s := &cacheStream{sid: sid, id: rand.Uint64() | 1, wake: make(chan struct{}, 1), gone: make(chan struct{})}
	c.streams[sid] = s
	ev := c.t.OpenStream(sid)
	return s, &jfspb.CacheEvent{Seq: ev.Seq, Reset_: true, Stream: s.id}, true
}

// closeStream forgets s unless a newer stream replaced it. The session
// keeps its grants: its mount drops them when its next stream resets, or
// its session lapses.
func (c *caches) closeStream(s *cacheStream) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.streams[s.sid] == s {
		delete(c.streams, s.sid)
		// No stream, no new grant: the session's next stream resets.
		c.t.StreamClosed(s.sid)
	}
}

// take returns the events queued on s as one (seq: the last one's), or
// nil when none are.
func (c *caches) take(s *cacheStream) *jfspb.CacheEvent {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(s.queue) == 0 {
		return nil
	}
	out := &jfspb.CacheEvent{Stream: s.id}
	seenI := map[uint64]bool{}
	seenE := map[grants.Entry]bool{}
	for _, ev := range s.queue {
		out.Seq = max(out.Seq, ev.Seq)
		for _, ino := range ev.Inos {
			if !seenI[ino] {
				seenI[ino] = true
				out.Inos = append(out.Inos, ino)
			}
		}
		for _, e := range ev.Entries {
			if !seenE[e] {
				seenE[e] = true
				out.Entries = append(out.Entries, &jfspb.CacheEntryKey{Parent: e.Parent, Name: []byte(e.Name)})
			}
		}
	}
	s.queue = nil
	return out
}

// ack records sid's acknowledgement of seq on stream id.
func (c *caches) ack(sid, id, seq uint64) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.streams[sid]
	if !c.active || s == nil || s.id != id {
		return false
	}
	done := c.t.Ack(sid, seq)
	if c.unsettled[sid] && !c.t.IsWild(sid) {
		delete(c.unsettled, sid)
		c.broadcast()
	}
	c.finish(done)
	return true
}

// sessionEnded records that sid was closed or evicted; its mount may be
// alive still and trust its caches until lapse.
func (c *caches) sessionEnded(sid uint64, lapse time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.active {
		c.ended[sid] = lapse
	}
}

// tick ends a new leader's wait when its time is up, and lets go of the
// sessions that surely lapsed.
func (c *caches) tick(now time.Time) {
	c.mu.Lock()
	active := c.active
	var waiting []uint64
	if active {
		waiting = c.t.Waiting()
	}
	c.mu.Unlock()
	if !active {
		return
	}
	var gone []uint64
	for _, sid := range waiting {
		if lapse, ok := c.lapseOf(sid); !ok || now.After(lapse) {
			gone = append(gone, sid)
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.active {
		return
	}
	for _, sid := range gone {
		c.finish(c.t.Gone(sid))
		if c.unsettled[sid] {
			delete(c.unsettled, sid)
			c.broadcast()
		}
	}
	if len(c.unsettled) > 0 && now.After(c.settle) {
		clear(c.unsettled)
		c.finish(c.t.EndWild())
		c.broadcast()
	}
	for sid, lapse := range c.ended {
		if now.After(lapse) {
			delete(c.ended, sid)
		}
	}
}

// lapseOf is when sid surely lapsed: its leader-side deadline (the last
// heartbeat this leader heard plus the TTL, or a new leader's start
// deadline), or for a session closed or evicted, the deadline it had
// then. ok is false for a session this leader does not know at all (it
// expired: its deadline passed).
func (c *caches) lapseOf(sid uint64) (time.Time, bool) {
	if d, ok := c.n.sessions.deadlineOf(sid); ok {
		return d, true
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	d, ok := c.ended[sid]
	return d, ok
}

// run ticks until stop closes.
func (c *caches) run(stop <-chan struct{}) {
	every := min(max(c.ttl/20, 20*time.Millisecond), 200*time.Millisecond)
	tk := time.NewTicker(every)
	defer tk.Stop()
	for {
		select {
		case <-stop:
			return
		case now := <-tk.C:
			c.tick(now)
		}
	}
}

// restored: the state was replaced by a snapshot (only a node that is
// behind, or jfsctl snapshot restore, does that). Every grant and every
// stream ends: the mounts reset, and a leader waits as a new one does.
func (c *caches) restored() {
	c.mu.Lock()
	active := c.active
	c.mu.Unlock()
	if active {
		c.stop()
		c.start()
	}
}

// waitAsking runs wait, a wait on a request's behalf for the caches, until
// shortly before ctx's deadline (the client's attempt timeout). If only
// that inner deadline ended it, the answer is UNAVAILABLE with AskAgain:
// the client sends the request again at once without suspecting this
// leader or counting the wait against its retry window, so a mount that
// holds a change up for as long as its session may live (a frozen mount,
// up to the session TTL) delays a request without failing it. Other errors
// become statuses as usual.
func (s *Server) waitAsking(ctx context.Context, why string, wait func(context.Context) error) error {
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		margin := min(recallAnswerMargin, time.Until(dl)/4)
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-margin))
		defer cancel()
	}
	err := wait(wctx)
	if err == nil {
		return nil
	}
	if wctx.Err() != nil && ctx.Err() == nil {
		if st, derr := status.New(codes.Unavailable, why).WithDetails(&jfspb.AskAgain{Why: why}); derr == nil {
			return st.Err()
		}
	}
	return s.toStatus(err)
}

// afterRead is caches.afterRead for a request handler (see waitAsking).
func (s *Server) afterRead(ctx context.Context, reader uint64, inos []uint64, entries []grants.Entry, toks ...grants.Token) (bool, error) {
	var ok bool
	err := s.waitAsking(ctx, "waiting for mounts to drop their caches of what was read", func(ctx context.Context) error {
		var err error
		ok, err = s.n.caches.afterRead(ctx, reader, inos, entries, toks...)
		return err
	})
	return ok, err
}
