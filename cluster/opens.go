package cluster

import (
	"sync"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// openTable is the leader's memory of open files: which handle (session,
// fh) has which inode open. Open and Release change it without the log; it
// decides which orphans (inodes without a name, fsm/orphans.go) may be
// freed. See DESIGN.md "Open files".
//
// A new leader's table is empty, so it is not trusted to free anything
// until it is complete: every live session has reported its open files
// (ReportOpens, asked for by the heartbeat's answer) since this leader took
// office, or has ended. Sessions registered with this leader (their id,
// the index of their Register entry, is past the log's end when it took
// office) count as reported: each of their opens went through it. All
// methods are safe for concurrent use; none blocks.
type openTable struct {
	mu       sync.Mutex
	active   bool                     // this node is the ready leader
	since    uint64                   // the log's last index when it took office
	handles  map[openHandle]uint64    // (session, fh) -> ino
	count    map[uint64]int           // ino -> handles that have it open
	sessions map[uint64]int           // session -> its handles
	reported map[uint64]bool          // sessions heard from since start
	pinned   map[uint64]chan struct{} // inos a FreeOrphans in flight may free; closed when it is done
}

type openHandle struct{ session, fh uint64 }

func newOpenTable() *openTable {
	return &openTable{handles: map[openHandle]uint64{}, count: map[uint64]int{},
		sessions: map[uint64]int{}, reported: map[uint64]bool{}, pinned: map[uint64]chan struct{}{}}
}

// start empties the table for a node that has just become leader, with
// lastIndex the last index of its log: it knows no open, and no session
// registered before has reported.
func (o *openTable) start(lastIndex uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.active = true
	o.since = lastIndex
	o.reset()
}

// stop empties the table: the node no longer leads, and another leader may
// see opens and closes this one would not hear of.
func (o *openTable) stop() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.active = false
	o.reset()
}

func (o *openTable) reset() {
	clear(o.handles)
	clear(o.count)
	clear(o.sessions)
	clear(o.reported)
}

// add records that (session, fh) has ino open. o.mu must be held.
func (o *openTable) add(session, fh, ino uint64) {
	h := openHandle{session, fh}
	if old, ok := o.handles[h]; ok {
		if old == ino {
			return
		}
		o.drop(h, old)
	}
	o.handles[h] = ino
	o.count[ino]++
	o.sessions[session]++
}

// drop forgets handle h of ino. o.mu must be held.
func (o *openTable) drop(h openHandle, ino uint64) {
	delete(o.handles, h)
	if o.count[ino]--; o.count[ino] <= 0 {
		delete(o.count, ino)
	}
	if o.sessions[h.session]--; o.sessions[h.session] <= 0 {
		delete(o.sessions, h.session)
	}
}

// open records an open of ino by (session, fh) before the open checks that
// ino exists. ok is false when this node is not the ready leader. A
// non-nil wait is closed when a FreeOrphans that may free ino is done: the
// open must check ino only after that, and then finds it gone.
func (o *openTable) open(session, fh, ino uint64) (wait <-chan struct{}, ok bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.active {
		return nil, false
	}
	o.add(session, fh, ino)
	if c := o.pinned[ino]; c != nil {
		return c, true
	}
	return nil, true
}

// opened records an open that a Create or Open entry made (the state
// machine's open listener). It is ignored on a node that is not the ready
// leader.
func (o *openTable) opened(session, fh, ino uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.active {
		o.add(session, fh, ino)
	}
}

// release forgets handle (session, fh). It returns the inode it had open
// and whether that was the inode's last handle (0, false if the handle
// was unknown).
func (o *openTable) release(session, fh uint64) (ino uint64, last bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	h := openHandle{session, fh}
	ino, ok := o.handles[h]
	if !ok {
		return 0, false
	}
	o.drop(h, ino)
	return ino, o.count[ino] == 0
}

// report records the open files a session listed and, if the list is
// complete, that it reported. It reports false when this node is not the
// ready leader.
func (o *openTable) report(session uint64, handles map[uint64]uint64, complete bool) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.active {
		return false
	}
	for fh, ino := range handles {
		o.add(session, fh, ino)
	}
	if complete {
		o.reported[session] = true
	}
	return true
}

// hasReported reports whether session reported to this leader, or was
// registered with it.
func (o *openTable) hasReported(session uint64) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.known(session)
}

// known reports whether the table holds every open of session. o.mu must
// be held.
func (o *openTable) known(session uint64) bool {
	return o.reported[session] || session > o.since
}

// dropSession forgets every handle of an ended session.
func (o *openTable) dropSession(session uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.reported, session)
	if o.sessions[session] == 0 {
		return
	}
	for h, ino := range o.handles {
		if h.session == session {
			o.drop(h, ino)
		}
	}
}

// openFiles is how many handles session has open.
func (o *openTable) openFiles(session uint64) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.sessions[session]
}

// pinUnused returns the inodes of candidates that no handle has open, and
// pins them: an open of one waits until unpin (see open). It returns nil
// unless the table is complete: active, and every session of live has
// reported.
func (o *openTable) pinUnused(live, candidates []uint64) []uint64 {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.active {
		return nil
	}
	for _, sid := range live {
		if !o.known(sid) {
			return nil
		}
	}
	var out []uint64
	for _, ino := range candidates {
		if o.count[ino] == 0 && o.pinned[ino] == nil {
			o.pinned[ino] = make(chan struct{})
			out = append(out, ino)
		}
	}
	return out
}

// unpin ends the pins of inos: the FreeOrphans that listed them is applied,
// or failed.
func (o *openTable) unpin(inos []uint64) {
	o.mu.Lock()
	defer o.mu.Unlock()
	for _, ino := range inos {
		if c := o.pinned[ino]; c != nil {
			close(c)
			delete(o.pinned, ino)
		}
	}
}

// freeHint prepares the removal of name in parent: when the inode the name
// holds now has no open handle in memory and every live session is known
// (pinUnused), it pins the inode and returns a hint that lets the removal
// free it at once (fsm/orphans.go, unused). done must be called with the
// proposal's error once it returned. Without a hint (nil), the removal
// leaves an orphan for FreeOrphans.
//
// Why it is safe: the index is read before the table is checked, and the
// table before the command is proposed. An open that reaches the table
// before the check keeps the hint away; an Open request after it waits for
// the pin, that is until the removal is applied, and then finds the inode
// gone. An open made by a logged command (Create of the existing name,
// O_TRUNC) is applied either at or before the index read first, so its
// handle was in the table for the check (the open listener runs before
// the applied index moves), or after it, which the state machine sees
// (`opened`) and then keeps the inode. The name may meanwhile point at
// another inode: the hint names one, and apply frees only that one.
func (n *Node) freeHint(parent uint64, name []byte) (*jfspb.FreeHint, func(error)) {
	none := func(error) {}
	if !n.ready() {
		return nil, none
	}
	since := n.fsm.AppliedIndex()
	lr := n.fsm.Lookup(&jfspb.LookupRequest{Parent: parent, Name: name})
	ino := lr.GetAttr().GetIno()
	if lr.GetErrno() != 0 || ino == 0 {
		return nil, none
	}
	var live []uint64
	for _, s := range n.fsm.Sessions() {
		live = append(live, s.Id)
	}
	pinned := n.opens.pinUnused(live, []uint64{ino})
	if len(pinned) == 0 {
		return nil, none
	}
	return &jfspb.FreeHint{Ino: ino, UnopenedSince: since}, func(err error) {
		if err != nil {
			// The entry may still be applied: see freeOrphans.
			n.raft.Barrier(n.cfg.ApplyTimeout).Error()
		}
		n.opens.unpin(pinned)
	}
}
