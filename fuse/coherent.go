package fuse

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// Coherent caches (DESIGN.md "Coherent caches"): the kernel keeps the
// attributes and entries the leader granted for as long as the session's
// lease lasts (at most CacheMax), because the leader tells this mount,
// through the session's CacheWatch stream, before anything it granted
// changes; the mount drops the kernel's copy and acknowledges.

// Lease is what the coherent caches need of the session beside its id: the
// moment before which the cluster cannot have expired it
// (client.Session.LeaseUntil).
type Lease interface {
	LeaseUntil() (id uint64, until time.Time)
}

// streamSilence is how long a stream may stay silent (no event, no ping)
// before the mount takes it for broken.
const streamSilence = 3 * time.Second

type entryKey struct {
	parent uint64
	name   string
}

type entryGrant struct {
	ino   uint64
	until time.Time
}

// coherent is the mount's half: the stream keeper and the record of what
// the kernel was told it may cache.
type coherent struct {
	fs  *FS
	max time.Duration

	mu     sync.Mutex
	ready  uint64 // the session whose stream is reset and acknowledged; 0: none
	gen    uint64 // grows at every event, reset and broken stream
	inos   map[uint64]time.Time
	entrys map[entryKey]entryGrant

	events atomic.Uint64 // invalidation events handled (tests, metrics)
}

func newCoherent(fs *FS, max time.Duration) *coherent {
	if max <= 0 {
		max = time.Minute
	}
	return &coherent{fs: fs, max: max, inos: map[uint64]time.Time{}, entrys: map[entryKey]entryGrant{}}
}

// begin is called before a read that may be granted: it returns the
// session the read is made for, whether to ask for a grant (only once the
// session's stream is reset and acknowledged) and the generation the
// answer must still find. The session goes with every read, granted or
// not: the leader does not make a mount's read wait for that mount's own
// acknowledgement (cluster/grants.Table.Blocks).
func (co *coherent) begin() (sid uint64, may bool, gen uint64) {
	co.mu.Lock()
	defer co.mu.Unlock()
	s := co.fs.opts.Session
	if s == nil {
		return 0, false, co.gen
	}
	sid = s.ID()
	return sid, co.ready != 0 && co.ready == sid, co.gen
}

// timeout is how long the kernel may keep an answer granted to session
// sid, read at generation gen: until the session's lease ends, at most
// max; 0 when an event, a reset or a broken stream came in between (the
// answer may predate a change the mount was told of already). It records
// the grant (ino's attributes, and the entry when e is set) so that an
// event, a reset or a broken stream drops it from the kernel.
func (co *coherent) timeout(sid, gen uint64, ino uint64, e *entryKey) time.Duration {
	l, ok := co.fs.opts.Session.(Lease)
	if !ok {
		return 0
	}
	id, until := l.LeaseUntil()
	now := time.Now()
	d := min(until.Sub(now), co.max)
	if id != sid || d <= 0 {
		return 0
	}
	co.mu.Lock()
	defer co.mu.Unlock()
	if co.gen != gen || co.ready != sid {
		return 0
	}
	end := now.Add(d)
	if co.inos[ino].Before(end) {
		co.inos[ino] = end
	}
	if e != nil {
		co.entrys[*e] = entryGrant{ino: ino, until: end}
	}
	co.fs.opts.Metrics.cacheGrants.Inc()
	return d
}

// drop tells the kernel to forget the attributes of inos and the entries
// named; every entry recorded as naming one of inos goes too. An entry is
// dropped before the attributes: the kernel's entry invalidation waits for
// a lookup in flight in that directory, after which the inode it made is
// known and its attributes can be dropped.
func (co *coherent) drop(inos []uint64, entries []entryKey, all bool) {
	s := co.fs.server.Load()
	co.mu.Lock()
	co.gen++
	now := time.Now()
	var ents []entryKey
	var drop []uint64
	if all {
		for e := range co.entrys {
			ents = append(ents, e)
		}
		for ino := range co.inos {
			drop = append(drop, ino)
		}
		clear(co.entrys)
		clear(co.inos)
	} else {
		want := make(map[uint64]bool, len(inos))
		for _, ino := range inos {
			want[ino] = true
			delete(co.inos, ino)
		}
		drop = inos
		ents = append(ents, entries...)
		for e, g := range co.entrys {
			if want[g.ino] {
				ents = append(ents, e)
			}
			if want[g.ino] || now.After(g.until) {
				delete(co.entrys, e)
			}
		}
		for _, e := range entries {
			delete(co.entrys, e)
		}
		for ino, until := range co.inos {
			if now.After(until) {
				delete(co.inos, ino)
			}
		}
	}
	co.mu.Unlock()
	if s == nil {
		return
	}
	for _, e := range ents {
		if st := s.EntryNotify(e.parent, e.name); !st.Ok() && st != fuse.ENOENT {
			co.fs.log.Warn("dropping the kernel's entry failed", "parent", e.parent, "name", e.name, "status", st)
		}
	}
	for _, ino := range drop {
		co.fs.invalidateAttr(ino)
	}
}

// forget drops the record of grants without telling the kernel.
func (co *coherent) forget() {
	co.mu.Lock()
	co.gen++
	clear(co.inos)
	clear(co.entrys)
	co.mu.Unlock()
}

// setReady says whether the stream of sid is reset and acknowledged.
func (co *coherent) setReady(sid uint64) {
	co.mu.Lock()
	co.ready = sid
	co.gen++
	co.mu.Unlock()
	if sid != 0 {
		co.fs.opts.Metrics.cacheReady.Set(1)
	} else {
		co.fs.opts.Metrics.cacheReady.Set(0)
	}
}

// run keeps the session's stream to the leader until ctx ends.
func (co *coherent) run(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		s := co.fs.opts.Session
		if s == nil {
			return
		}
		sid := s.ID()
		if err := co.serve(ctx, sid); err != nil && ctx.Err() == nil {
			co.fs.log.Debug("cache stream ended", "session", sid, "error", err)
			select {
			case <-ctx.Done():
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
	}
}

// serve runs one stream: reset, then events until it breaks. Whatever it
// ends with, the kernel has dropped everything granted under it.
func (co *coherent) serve(ctx context.Context, sid uint64) error {
	defer func() {
		co.setReady(0)
		if ctx.Err() != nil {
			co.forget() // unmounting: the kernel's caches go with the mount
			return
		}
		co.drop(nil, nil, true)
	}()
	st, err := co.fs.c.WatchCaches(ctx, sid)
	if err != nil {
		return err
	}
	defer st.Close()
	watchdog := time.AfterFunc(streamSilence, st.Close)
	defer watchdog.Stop()
	if err := co.handle(ctx, sid, st.First); err != nil {
		return err
	}
	co.setReady(sid)
	for {
		ev, err := st.Recv()
		if err != nil {
			return err
		}
		watchdog.Reset(streamSilence)
		if s := co.fs.opts.Session; s == nil || s.ID() != sid {
			return errors.New("the session changed")
		}
		if err := co.handle(ctx, sid, ev); err != nil {
			return err
		}
	}
}

// handle drops what ev names from the kernel and acknowledges it; a ping
// needs nothing.
func (co *coherent) handle(ctx context.Context, sid uint64, ev *jfspb.CacheEvent) error {
	if ev.Seq == 0 {
		return nil
	}
	if ev.Reset_ {
		co.drop(nil, nil, true)
	} else {
		ents := make([]entryKey, len(ev.Entries))
		for i, e := range ev.Entries {
			ents[i] = entryKey{e.Parent, string(e.Name)}
		}
		co.drop(ev.Inos, ents, false)
	}
	co.events.Add(1)
	co.fs.opts.Metrics.cacheEvents.Inc()
	actx, cancel := context.WithTimeout(ctx, streamSilence)
	defer cancel()
	return co.fs.c.AckCaches(actx, sid, ev.Stream, ev.Seq)
}

// Run keeps the coherent caches' stream to the leader until ctx ends; a
// mount in coherent mode runs it for its whole life. Without coherent
// caches it returns at once.
func (fs *FS) RunCaches(ctx context.Context) {
	if fs.coh != nil {
		fs.coh.run(ctx)
	}
}

// CacheEvents is how many invalidation events (resets included) the mount
// handled.
func (fs *FS) CacheEvents() uint64 {
	if fs.coh == nil {
		return 0
	}
	return fs.coh.events.Load()
}

var _ Lease = (*client.Session)(nil)
