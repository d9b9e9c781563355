package cluster

import (
	"context"
	"errors"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/internal/mtls"
	"github.com/jfs-dev/jfs/rangelock"
)

// Lock delegation, the leader's side (DESIGN.md "Lock delegation"). The
// state machine records which session an inode's locks are delegated to
// (fsm/deleg.go); the leader decides when to offer one (delegate on a lock
// request), recalls one when another request needs the inode, holds that
// request until the inode is no longer delegated (or, after an eviction,
// fenced: the fence is in the state too), and keeps, in memory only: the
// recall streams of the sessions, the recalls not yet answered, and the
// time of each inode's last recall (no new delegation for redelegateAfter,
// so that two mounts taking turns do not make every lock a recall).

// redelegateAfter is how long after a recall an inode is not delegated again.
const redelegateAfter = time.Second

// maxRecalledAt is the size of the map of recall times past which the
// recall times older than redelegateAfter are dropped.
const maxRecalledAt = 4096

// reportTimeout bounds how long jfsctl locks ls waits for a mount to
// report the locks it holds under a delegation.
const reportTimeout = 500 * time.Millisecond

type delegs struct {
	n *Node

	mu         sync.Mutex
	streams    map[uint64]*recallStream // session -> its recall stream
	recalling  map[uint64]uint64        // ino -> session asked to return it
	recalledAt map[uint64]time.Time     // ino -> its last recall
	changed    chan struct{}            // closed when a batch changed locks
	reports    map[uint64]chan *jfspb.DelegReportRequest
	nextReport uint64
}

// recallStream is one session's open DelegRecalls call.
type recallStream struct {
	sid  uint64
	out  chan *jfspb.DelegRecall
	done chan struct{} // closed to end the call
	once sync.Once
}

func (rs *recallStream) end() { rs.once.Do(func() { close(rs.done) }) }

func newDelegs(n *Node) *delegs {
	return &delegs{n: n, streams: map[uint64]*recallStream{}, recalling: map[uint64]uint64{},
		recalledAt: map[uint64]time.Time{}, changed: make(chan struct{}),
		reports: map[uint64]chan *jfspb.DelegReportRequest{}}
}

// locksChanged is called after every batch that changed some inode's
// locks or delegation: the requests held for a recall look again. It must
// not block.
func (d *delegs) locksChanged() {
	d.mu.Lock()
	close(d.changed)
	d.changed = make(chan struct{})
	d.mu.Unlock()
}

// mayDelegate reports whether a lock request on ino may be offered the
// inode's delegation: not recalled within redelegateAfter.
func (d *delegs) mayDelegate(ino uint64) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	if t, ok := d.recalledAt[ino]; ok {
		if time.Since(t) < redelegateAfter {
			return false
		}
		delete(d.recalledAt, ino)
	}
	return true
}

// awaitFree returns once ino is not delegated and no evicted session may
// still answer its locks locally: it recalls a delegation and waits for its
// return, or for the end of its session. Only a ready leader waits; another
// node answers ErrNotLeader, for the client to find the leader.
func (d *delegs) awaitFree(ctx context.Context, ino uint64) error {
	return d.awaitFreeOr(ctx, ino, nil)
}

// errCanceledWhileRecalling: a blocking request was interrupted while it
// waited for a recall, before it was proposed.
var errCanceledWhileRecalling = errors.New("cluster: lock request interrupted while a delegation was recalled")

// awaitFreeOr is awaitFree that also ends, with errCanceledWhileRecalling,
// when canceled (looked at after every change of locks, and after every
// cancel) reports true.
func (d *delegs) awaitFreeOr(ctx context.Context, ino uint64, canceled func() bool) error {
	for {
		d.mu.Lock()
		changed := d.changed
		d.mu.Unlock()
		holder := d.n.fsm.Delegation(ino)
		fence := d.fence(ino)
		if (holder != 0 || !fence.IsZero()) && canceled != nil && canceled() {
			return errCanceledWhileRecalling
		}
		if holder == 0 {
			d.mu.Lock()
			delete(d.recalling, ino) // answered: a later delegation is recalled afresh
			d.mu.Unlock()
			if fence.IsZero() {
				return nil
			}
		}
		if !d.n.ready() {
			return ErrNotLeader
		}
		if err := d.waitTurn(ctx, ino, holder, fence, changed); err != nil {
			return err
		}
	}
}

// waitTurn recalls ino from holder (when not 0) and waits for the next
// change of locks, or, without a holder, for the fence to lapse.
func (d *delegs) waitTurn(ctx context.Context, ino, holder uint64, fence time.Time, changed <-chan struct{}) error {
	var timer <-chan time.Time
	if holder != 0 {
		d.recall(ino, holder)
	} else {
		t := time.NewTimer(time.Until(fence))
		defer t.Stop()
		timer = t.C
	}
	select {
	case <-changed:
	case <-timer:
	case <-ctx.Done():
		return ctx.Err()
	case <-d.n.stopped:
		return ErrShutdown
	}
	return nil
}

// fence returns until when an evicted session may still answer ino's locks
// locally (the state's fence, on this leader's clock); zero when none may.
func (d *delegs) fence(ino uint64) time.Time {
	ns := d.n.fsm.DelegFence(ino)
	if ns == 0 {
		return time.Time{}
	}
	t := time.Unix(0, ns)
	if !time.Now().Before(t) {
		return time.Time{}
	}
	return t
}

// recall asks session sid to return ino, once per stream: a stream that
// connects later is sent every recall of its session still unanswered.
func (d *delegs) recall(ino, sid uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	now := time.Now()
	if len(d.recalledAt) >= maxRecalledAt {
		for i, t := range d.recalledAt { // the times that no longer matter
			if now.Sub(t) >= redelegateAfter {
				delete(d.recalledAt, i)
			}
		}
	}
	d.recalledAt[ino] = now
	if d.recalling[ino] == sid {
		return
	}
	d.recalling[ino] = sid
	d.n.metrics.Load().countDeleg("recalled")
	if rs := d.streams[sid]; rs != nil {
		d.send(rs, &jfspb.DelegRecall{Ino: ino})
	}
}

// send queues m on rs without blocking; a stream too slow to take it is
// ended, and its mount connects again and is sent every recall afresh.
// Called with d.mu held.
func (d *delegs) send(rs *recallStream, m *jfspb.DelegRecall) {
	select {
	case rs.out <- m:
	default:
		rs.end()
	}
}

// dropSession ends the recall stream of an ended session and forgets its
// recalls.
func (d *delegs) dropSession(sid uint64) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if rs := d.streams[sid]; rs != nil {
		rs.end()
		delete(d.streams, sid)
	}
	for ino, s := range d.recalling {
		if s == sid {
			delete(d.recalling, ino)
		}
	}
}

// endAll ends every recall stream: this node stops leading.
func (d *delegs) endAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for sid, rs := range d.streams {
		rs.end()
		delete(d.streams, sid)
	}
	clear(d.recalling)
}

// serve runs the recall stream of session sid until ctx ends, the session
// ends or the node stops leading.
func (d *delegs) serve(ctx context.Context, sid uint64, send func(*jfspb.DelegRecall) error) error {
	rs := &recallStream{sid: sid, out: make(chan *jfspb.DelegRecall, 1024), done: make(chan struct{})}
	d.mu.Lock()
	if old := d.streams[sid]; old != nil {
		old.end()
	}
	d.streams[sid] = rs
	for ino, s := range d.recalling {
		if s == sid {
			d.send(rs, &jfspb.DelegRecall{Ino: ino})
		}
	}
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		if d.streams[sid] == rs {
			delete(d.streams, sid)
		}
		d.mu.Unlock()
	}()
	// Looked at once the stream is registered: a session that ends later
	// ends it (dropSession runs after the end's apply); one that ended
	// since the caller looked would otherwise keep it open for good, and
	// its mount, listening on it, would never hear the recalls of the
	// session it registered next.
	if d.n.fsm.Session(sid) == nil {
		return status.Errorf(codes.FailedPrecondition, "session %d is not alive", sid)
	}
	if err := send(&jfspb.DelegRecall{}); err != nil { // tells the mount it is connected
		return err
	}
	for {
		select {
		case m := <-rs.out:
			if err := send(m); err != nil {
				return err
			}
		case <-rs.done:
			return status.Error(codes.Unavailable, "recall stream ended")
		case <-ctx.Done():
			return ctx.Err()
		case <-d.n.stopped:
			return ErrShutdown
		case <-d.n.caches.draining: // EndStreams: the node stops serving
			return status.Error(codes.Unavailable, "recall stream ended: the node stops")
		}
	}
}

// report asks the holder of ino's delegation for the locks it holds, and
// waits up to reportTimeout; nil when it did not answer.
func (d *delegs) report(ctx context.Context, ino, sid uint64) *jfspb.DelegReportRequest {
	d.mu.Lock()
	rs := d.streams[sid]
	if rs == nil {
		d.mu.Unlock()
		return nil
	}
	d.nextReport++
	id := d.nextReport
	ch := make(chan *jfspb.DelegReportRequest, 1)
	d.reports[id] = ch
	d.send(rs, &jfspb.DelegRecall{Ino: ino, ReportId: id})
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		delete(d.reports, id)
		d.mu.Unlock()
	}()
	t := time.NewTimer(reportTimeout)
	defer t.Stop()
	select {
	case r := <-ch:
		return r
	case <-t.C:
	case <-ctx.Done():
	}
	return nil
}

// reported hands a mount's report to the listing waiting for it.
func (d *delegs) reported(r *jfspb.DelegReportRequest) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if ch := d.reports[r.ReportId]; ch != nil {
		select {
		case ch <- r:
		default:
		}
	}
}

// delegatedLocks lists the delegations for jfsctl locks ls, filtered as
// ListLocksRequest filters: each holder's locks as its mount reports them,
// or one entry without a type for the delegation when the mount reports
// none or does not answer (delegation_unknown).
func (d *delegs) delegatedLocks(ctx context.Context, ino, session uint64) []*jfspb.LockInfo {
	var out []*jfspb.LockInfo
	for _, dl := range d.n.fsm.Delegations(session) {
		if ino != 0 && dl.Ino != ino {
			continue
		}
		r := d.report(ctx, dl.Ino, dl.Session)
		if r == nil || !r.Held || len(r.Locks) == 0 {
			out = append(out, &jfspb.LockInfo{Ino: dl.Ino, Owner: &jfspb.LockOwner{Session: dl.Session}, Delegated: true,
				DelegationUnknown: r == nil || !r.Held})
			continue
		}
		for _, l := range r.Locks {
			li := &jfspb.LockInfo{
				Ino: dl.Ino, Owner: &jfspb.LockOwner{Session: dl.Session, Owner: l.Owner}, Type: l.Type,
				Pid: l.Pid, Delegated: true, Kind: jfspb.LockKind_LOCK_KIND_POSIX, Start: l.Start, Len: l.Len,
			}
			if l.Flock {
				li.Kind, li.Start, li.Len = jfspb.LockKind_LOCK_KIND_FLOCK, 0, 0
			}
			out = append(out, li)
		}
	}
	return out
}

// ---- the RPCs ----

// DelegRecalls streams the recalls of the caller's session. Only the ready
// leader serves it; a follower answers NotLeader. The first message has
// ino 0: the stream is open.
func (s *Server) DelegRecalls(r *jfspb.DelegRecallsRequest, ss jfspb.Meta_DelegRecallsServer) error {
	ctx := ss.Context()
	if s.n.cfg.TLS != nil {
		id, err := authorize(ctx, jfspb.Meta_DelegRecalls_FullMethodName)
		if err != nil {
			return err
		}
		if err := s.n.owns(id, r); err != nil {
			return err
		}
		if id.Role != mtls.RoleClient && id.Role != mtls.RoleAdmin {
			return status.Errorf(codes.PermissionDenied, "%s may not open a recall stream", id)
		}
	}
	if !s.n.ready() {
		return s.toStatus(ErrNotLeader)
	}
	if s.n.fsm.Session(r.Session) == nil {
		return status.Errorf(codes.FailedPrecondition, "session %d is not alive", r.Session)
	}
	return s.toStatus(s.n.deleg.serve(ctx, r.Session, ss.Send))
}

// DelegReturn gives a delegation back (a recall's answer, or the mount's
// own choice): one log entry with the session's locks on the inode.
func (s *Server) DelegReturn(ctx context.Context, r *jfspb.DelegReturnRequest) (*jfspb.DelegReturnResponse, error) {
	resp, err := propose[*jfspb.DelegReturnResponse](ctx, s, cmdDelegReturn, r.Header, r)
	if err == nil && resp.Returned {
		s.n.metrics.Load().countDeleg("returned")
	}
	if err == nil && resp.Errno == 0 {
		for _, l := range r.Locks {
			if l.MaybeOfd && !l.Flock {
				// The mark lasts while the owner holds a lock (pruneOFD).
				s.n.locks.markOFD(rangelock.Owner{Session: r.Header.GetSession(), ID: l.Owner}, r.Ino)()
			}
		}
	}
	return resp, err
}

// DelegReport is a mount's answer to a report request on its stream.
// Only the leader waits for reports: another node answers NotLeader, so
// that the client takes the answer to the leader instead of it being
// dropped here as if delivered.
func (s *Server) DelegReport(ctx context.Context, r *jfspb.DelegReportRequest) (*jfspb.DelegReportResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	s.n.deleg.reported(r)
	return &jfspb.DelegReportResponse{}, nil
}

// recallAnswerMargin is how long before its deadline a request that waits
// for a recall is answered "ask again" (errRecallPending), so that the
// client's attempt does not time out, which would make it suspect the
// leader.
const recallAnswerMargin = 300 * time.Millisecond

// awaitUndelegated is awaitFree for a request handler. A request with a
// deadline (a client's bounded attempt: a non-blocking lock request, or
// F_GETLK) that is still waiting shortly before it is answered UNAVAILABLE
// with a DelegRecall detail: the client asks the same leader again with
// the same request, without counting the wait against its retry window
// (client.retry). A blocking request has no deadline and simply waits.
func (s *Server) awaitUndelegated(ctx context.Context, ino uint64) error {
	return s.awaitUndelegatedOr(ctx, ino, nil)
}

// awaitUndelegatedOr is awaitUndelegated for a blocking request (h its
// header): an interrupt (CancelLockWait) that arrives while it waits for a
// recall ends it with EINTR (errCanceledWhileRecalling), before it is
// proposed, as an interrupt before the wait is queued does.
func (s *Server) awaitUndelegatedOr(ctx context.Context, ino uint64, h *jfspb.Header) error {
	var canceled func() bool
	if h != nil && h.Seq != 0 {
		key := waitKey{h.Session, h.Seq}
		canceled = func() bool { return s.n.locks.takeCancel(key) }
	}
	wctx := ctx
	if dl, ok := ctx.Deadline(); ok {
		var cancel context.CancelFunc
		wctx, cancel = context.WithDeadline(ctx, dl.Add(-recallAnswerMargin))
		defer cancel()
	}
	err := s.n.deleg.awaitFreeOr(wctx, ino, canceled)
	if err == nil || errors.Is(err, errCanceledWhileRecalling) {
		return err
	}
	if wctx.Err() != nil && ctx.Err() == nil {
		st, derr := status.New(codes.Unavailable, "waiting for the return of a lock delegation").WithDetails(&jfspb.DelegRecall{Ino: ino})
		if derr == nil {
			return st.Err()
		}
	}
	return s.toStatus(err)
}
