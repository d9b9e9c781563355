// Package grants is the leader's table of coherent cache grants: which
// sessions may cache which inodes' attributes and which directory entries,
// which keys are being changed, and which changes still wait for whom.
//
// It is a pure core (cluster/DESIGN.md "Coherent caches"): it takes events
// (a read asks for a grant, an entry changed keys, a session acknowledged,
// a session lapsed) and returns decisions (grant or not, send these
// invalidations, these changes are complete). It has no goroutines, clocks
// or RPCs, and is not safe for concurrent use: the caller serialises calls.
package grants

import "sort"

// Entry names a directory entry.
type Entry struct {
	Parent uint64
	Name   string
}

// Event is an invalidation for one session: drop the attributes of Inos
// and the entries Entries, and acknowledge Seq.
type Event struct {
	Session uint64
	Seq     uint64
	Inos    []uint64
	Entries []Entry
}

// Token is a grant being handed out: Confirm tells whether it still holds
// after the read. The zero Token is no grant.
type Token struct {
	sid   uint64
	ino   uint64
	entry Entry
	isEnt bool
	id    uint64
}

// Valid reports whether t is a grant at all.
func (t Token) Valid() bool { return t.id != 0 }

// DefaultFanout is how many entry grants one directory may have before it
// falls back to no entry grants (issue 12: "huge fan-out").
const DefaultFanout = 10000

type session struct {
	// ready: the session's stream delivered a reset and the session
	// acknowledged it; only a ready session is granted anything.
	ready bool
	// wild: the session may cache anything this table does not know of
	// (it was granted by an earlier leader, or its stream was reset and
	// the reset is not acknowledged yet). Every change waits for it.
	wild     bool
	resetSeq uint64
	seq      uint64            // the last seq handed out on its stream
	waits    map[uint64]uint64 // seq -> change id waiting for its ack
	inos     map[uint64]uint64 // ino -> token id
	entries  map[Entry]uint64  // entry -> token id
}

type change struct {
	id        uint64
	writer    uint64
	inos      []uint64
	entries   []Entry
	waiting   map[uint64]bool // sessions still to acknowledge
	committed bool
}

// Table is the grant table. Use New.
type Table struct {
	fanout    int
	sessions  map[uint64]*session
	inoHold   map[uint64]map[uint64]bool // ino -> holders
	entryHold map[Entry]map[uint64]bool  // entry -> holders
	dirGrants map[uint64]int             // parent -> entry grants in it
	inoMarks  map[uint64]int
	entMarks  map[Entry]int
	changes   map[uint64]*change
	nextTok   uint64
}

// New returns an empty table; fanout <= 0 means DefaultFanout.
func New(fanout int) *Table {
	if fanout <= 0 {
		fanout = DefaultFanout
	}
	return &Table{fanout: fanout, sessions: map[uint64]*session{},
		inoHold: map[uint64]map[uint64]bool{}, entryHold: map[Entry]map[uint64]bool{},
		dirGrants: map[uint64]int{}, inoMarks: map[uint64]int{}, entMarks: map[Entry]int{},
		changes: map[uint64]*change{}}
}

func (t *Table) sess(sid uint64) *session {
	s := t.sessions[sid]
	if s == nil {
		s = &session{waits: map[uint64]uint64{}, inos: map[uint64]uint64{}, entries: map[Entry]uint64{}}
		t.sessions[sid] = s
	}
	return s
}

// Wild marks sessions that may cache what this table does not know: a new
// leader calls it with every live session that registered as coherent.
// Every change waits for them until they acknowledge a reset, lapse, or
// EndWild.
func (t *Table) Wild(sids ...uint64) {
	for _, sid := range sids {
		t.sess(sid).wild = true
	}
}

// EndWild ends the wildness of every session (a new leader's wait of one
// session TTL is over: nothing an earlier leader granted is cached any
// more) and returns the changes that are complete now.
func (t *Table) EndWild() []uint64 {
	var sids []uint64
	for sid, s := range t.sessions {
		if s.wild {
			s.wild = false
			sids = append(sids, sid)
		}
	}
	return t.release(sids...)
}

// IsWild reports whether sid is wild.
func (t *Table) IsWild(sid uint64) bool { return t.sessions[sid] != nil && t.sessions[sid].wild }

// AnyWild reports whether any session is wild.
func (t *Table) AnyWild() bool {
	for _, s := range t.sessions {
		if s.wild {
			return true
		}
	}
	return false
}

// OpenStream starts a new stream for sid and returns its first event, the
// reset. The session's grants are forgotten (the reset drops them) and it
// is wild until it acknowledges the reset.
func (t *Table) OpenStream(sid uint64) Event {
	s := t.sess(sid)
	t.dropGrants(sid, s)
	s.ready = false
	s.wild = true
	s.seq++
	s.resetSeq = s.seq
	return Event{Session: sid, Seq: s.seq}
}

// StreamClosed records that sid's stream ended: it is granted nothing
// until a new stream's reset is acknowledged. Its grants stay: changes
// wait for that reset, or for its lapse.
func (t *Table) StreamClosed(sid uint64) {
	if s := t.sessions[sid]; s != nil {
		s.ready = false
	}
}

// Ack records that sid acknowledged every event up to seq, and returns
// the changes that are complete now.
func (t *Table) Ack(sid, seq uint64) []uint64 {
	s := t.sessions[sid]
	if s == nil || seq > s.seq {
		return nil
	}
	if s.resetSeq != 0 && seq >= s.resetSeq {
		// The mount dropped everything after every earlier event: every
		// change that waits for it is done with it.
		s.resetSeq = 0
		s.ready = true
		s.wild = false
		clear(s.waits)
		return t.release(sid)
	}
	var ids []uint64
	for q, id := range s.waits {
		if q <= seq {
			delete(s.waits, q)
			ids = append(ids, id)
		}
	}
	var done []uint64
	for _, id := range ids {
		if c := t.changes[id]; c != nil {
			delete(c.waiting, sid)
			done = append(done, t.maybeDone(c)...)
		}
	}
	return sorted(done)
}

// Gone records that sid's session surely lapsed (or ended and its lapse
// time passed): its kernel trusts nothing it cached. It returns the
// changes that are complete now.
func (t *Table) Gone(sid uint64) []uint64 {
	s := t.sessions[sid]
	if s == nil {
		return nil
	}
	t.dropGrants(sid, s)
	delete(t.sessions, sid)
	return t.release(sid)
}

// Waiting lists the sessions that some change waits for.
func (t *Table) Waiting() []uint64 {
	m := map[uint64]bool{}
	for _, c := range t.changes {
		for sid := range c.waiting {
			m[sid] = true
		}
	}
	out := make([]uint64, 0, len(m))
	for sid := range m {
		out = append(out, sid)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// release takes sids out of every change's wait and returns the changes
// complete now.
func (t *Table) release(sids ...uint64) []uint64 {
	var done []uint64
	for _, c := range t.changes {
		for _, sid := range sids {
			delete(c.waiting, sid)
		}
		done = append(done, t.maybeDone(c)...)
	}
	return sorted(done)
}

func sorted(ids []uint64) []uint64 {
	sort.Slice(ids, func(i, j int) bool { return ids[i] < ids[j] })
	return ids
}

func (t *Table) dropGrants(sid uint64, s *session) {
	for ino := range s.inos {
		unhold(t.inoHold, ino, sid)
	}
	for e := range s.entries {
		if unhold(t.entryHold, e, sid) {
			t.dirGrants[e.Parent]--
			if t.dirGrants[e.Parent] <= 0 {
				delete(t.dirGrants, e.Parent)
			}
		}
	}
	clear(s.inos)
	clear(s.entries)
}

// unhold takes sid out of k's holders in m, and reports whether it was one.
func unhold[K comparable](m map[K]map[uint64]bool, k K, sid uint64) bool {
	h := m[k]
	if !h[sid] {
		return false
	}
	delete(h, sid)
	if len(h) == 0 {
		delete(m, k)
	}
	return true
}

// GrantIno registers, before the read, that sid may cache ino's
// attributes. The zero Token means no grant: the session is not ready,
// or ino is being changed.
func (t *Table) GrantIno(sid, ino uint64) Token {
	s := t.sessions[sid]
	if s == nil || !s.ready || t.inoMarks[ino] > 0 {
		return Token{}
	}
	t.nextTok++
	s.inos[ino] = t.nextTok
	h := t.inoHold[ino]
	if h == nil {
		h = map[uint64]bool{}
		t.inoHold[ino] = h
	}
	h[sid] = true
	return Token{sid: sid, ino: ino, id: t.nextTok}
}

// GrantEntry registers, before the read, that sid may cache the entry e.
// No grant for a session that is not ready, an entry being changed, or a
// directory with the fan-out's worth of entry grants already.
func (t *Table) GrantEntry(sid uint64, e Entry) Token {
	s := t.sessions[sid]
	if s == nil || !s.ready || t.entMarks[e] > 0 {
		return Token{}
	}
	h := t.entryHold[e]
	if !h[sid] && t.dirGrants[e.Parent] >= t.fanout {
		return Token{}
	}
	t.nextTok++
	s.entries[e] = t.nextTok
	if h == nil {
		h = map[uint64]bool{}
		t.entryHold[e] = h
	}
	if !h[sid] {
		h[sid] = true
		t.dirGrants[e.Parent]++
	}
	return Token{sid: sid, entry: e, isEnt: true, id: t.nextTok}
}

// Confirm reports, after the read, whether tok still holds: no change took
// it and no change marks its key. A grant that does not hold is withdrawn
// (the answer carries none); a change that took it has sent the session
// an invalidation already.
func (t *Table) Confirm(tok Token) bool {
	if !tok.Valid() {
		return false
	}
	s := t.sessions[tok.sid]
	if s == nil {
		return false
	}
	if tok.isEnt {
		return s.entries[tok.entry] == tok.id && t.entMarks[tok.entry] == 0
	}
	return s.inos[tok.ino] == tok.id && t.inoMarks[tok.ino] == 0
}

// InoMarked and EntryMarked report whether a change of the key is in
// progress: a read that saw one waits until it is not.
func (t *Table) InoMarked(ino uint64) bool   { return t.inoMarks[ino] > 0 }
func (t *Table) EntryMarked(e Entry) bool    { return t.entMarks[e] > 0 }
func (t *Table) Pending(id uint64) bool      { return t.changes[id] != nil }
func (t *Table) Holders(ino uint64) int      { return len(t.inoHold[ino]) }
func (t *Table) EntryHolders(e Entry) int    { return len(t.entryHold[e]) }
func (t *Table) DirGrants(parent uint64) int { return t.dirGrants[parent] }

// Change records that the log entry id (made by session writer, 0 for
// none) changed inos and entries. It runs before the change is visible to
// readers: it marks the keys, takes every grant on them, and returns one
// event for each other holder. The writer's own grants are dropped without
// an event (its kernel changed its own view). The change is complete once
// Committed was called and every holder acknowledged or is Gone; every
// wild session counts as a holder of everything.
func (t *Table) Change(id, writer uint64, inos []uint64, entries []Entry) []Event {
	c := &change{id: id, writer: writer, waiting: map[uint64]bool{}}
	per := map[uint64]*Event{}
	ev := func(sid uint64) *Event {
		e := per[sid]
		if e == nil {
			e = &Event{Session: sid}
			per[sid] = e
		}
		return e
	}
	seenIno := map[uint64]bool{}
	for _, ino := range inos {
		if seenIno[ino] {
			continue
		}
		seenIno[ino] = true
		c.inos = append(c.inos, ino)
		t.inoMarks[ino]++
		for sid := range t.inoHold[ino] {
			delete(t.sessions[sid].inos, ino)
			if sid != writer {
				e := ev(sid)
				e.Inos = append(e.Inos, ino)
			}
		}
		delete(t.inoHold, ino)
	}
	seenEnt := map[Entry]bool{}
	for _, en := range entries {
		if seenEnt[en] {
			continue
		}
		seenEnt[en] = true
		c.entries = append(c.entries, en)
		t.entMarks[en]++
		for sid := range t.entryHold[en] {
			delete(t.sessions[sid].entries, en)
			t.dirGrants[en.Parent]--
			if sid != writer {
				e := ev(sid)
				e.Entries = append(e.Entries, en)
			}
		}
		if t.dirGrants[en.Parent] <= 0 {
			delete(t.dirGrants, en.Parent)
		}
		delete(t.entryHold, en)
	}
	var out []Event
	sids := make([]uint64, 0, len(per))
	for sid := range per {
		sids = append(sids, sid)
	}
	sort.Slice(sids, func(i, j int) bool { return sids[i] < sids[j] })
	for _, sid := range sids {
		s := t.sessions[sid]
		e := per[sid]
		s.seq++
		e.Seq = s.seq
		s.waits[s.seq] = id
		c.waiting[sid] = true
		out = append(out, *e)
	}
	for sid, s := range t.sessions {
		if s.wild && sid != writer {
			c.waiting[sid] = true
		}
	}
	t.changes[id] = c
	return out
}

// Committed records that the changes up to id are visible to readers, and
// returns those complete now. A change is never complete before it is
// committed: a read between the marks and the commit reads the old state.
func (t *Table) Committed(id uint64) []uint64 {
	var done []uint64
	for cid, c := range t.changes {
		if cid <= id && !c.committed {
			c.committed = true
			done = append(done, t.maybeDone(c)...)
		}
	}
	return sorted(done)
}

func (t *Table) maybeDone(c *change) []uint64 {
	if !c.committed || len(c.waiting) > 0 || t.changes[c.id] != c {
		return nil
	}
	delete(t.changes, c.id)
	for _, ino := range c.inos {
		if t.inoMarks[ino]--; t.inoMarks[ino] <= 0 {
			delete(t.inoMarks, ino)
		}
	}
	for _, e := range c.entries {
		if t.entMarks[e]--; t.entMarks[e] <= 0 {
			delete(t.entMarks, e)
		}
	}
	return []uint64{c.id}
}

// PendingBy reports whether the change of entry id, or any earlier change
// of session writer, is not complete: the answer to writer's request id
// (or to a retry of it, which changes nothing itself) waits for them.
func (t *Table) PendingBy(writer, id uint64) bool {
	for cid, c := range t.changes {
		if cid == id || (cid < id && writer != 0 && c.writer == writer) {
			return true
		}
	}
	return false
}

// Blocks reports whether a read by session reader of inos and entries
// must wait: a change of one of them is not committed yet, or waits for
// some session other than reader. A change that waits for the reader
// itself does not make it wait: the reader's mount may be unable to
// acknowledge until this very read is answered (the kernel holds the
// directory's lock for a lookup in flight, and dropping an entry of that
// directory takes the lock), so waiting could deadlock.
func (t *Table) Blocks(reader uint64, inos []uint64, entries []Entry) bool {
	if len(t.changes) == 0 {
		return false
	}
	for _, c := range t.changes {
		if !touches(c, inos, entries) {
			continue
		}
		if !c.committed || (reader == 0 || !c.waiting[reader]) && len(c.waiting) > 0 {
			return true
		}
	}
	return false
}

func touches(c *change, inos []uint64, entries []Entry) bool {
	for _, a := range c.inos {
		for _, b := range inos {
			if a == b {
				return true
			}
		}
	}
	for _, a := range c.entries {
		for _, b := range entries {
			if a == b {
				return true
			}
		}
	}
	return false
}
