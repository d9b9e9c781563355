package fsm

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// Lock wait queues. A blocking lock request proposed with queue set
// (SetLkRequest.queue, FlockRequest.queue) that cannot be granted when it is
// applied waits in its inode's queue in the state, and its stored answer is
// "queued". The apply of any change that may free a range (an unlock, a
// released lock owner or flock, a waiter leaving, a session ending) grants,
// in the same transaction, the waiters that now can be granted
// (rangelock.Table.Grant) and stores each one's answer as granted: a hand-off
// costs the one log entry that freed the lock. The leader hears of every
// wait that ended through the wait listener (SetWaitListener) and answers
// the blocked RPC; a client that retries its request (same session and seq)
// at any leader gets the stored answer, "queued" included, and waits there.
//
// Layout: lockwait (ino ‖ id) -> session ‖ seq ‖ since (ns) ‖ command type
// (u32) ‖ request body, where id is the log index of the entry that queued
// the request, so key order is arrival order; waitkey (session ‖ seq) ->
// ino ‖ id, to find a wait by its request.

const lockWaitHeaderLen = 8 + 8 + 8 + 4

// Wait is a queued lock request, as the state machine keeps it.
type Wait struct {
	Ino          uint64
	Session, Seq uint64
	Since        int64 // the time of the entry that queued it, ns
	MaybeOFD     bool  // SetLkRequest.maybe_ofd
	rangelock.Waiter
}

// WaitEnd is the end of a queued wait, reported to the wait listener after
// the batch that ended it commits: Errno 0 for a grant, else the answer the
// request got (EINTR cancelled, EDEADLK a deadlock's victim, ESTALE its
// session ended, ENOENT its inode was freed).
type WaitEnd struct {
	Session, Seq uint64
	Errno        syscall.Errno
}

// SetWaitListener installs fn, called after every committed batch that
// ended queued waits, with those ends in log order. fn runs on the apply
// path: it must not block. Call it before the first ApplyBatch.
func (f *FSM) SetWaitListener(fn func([]WaitEnd)) { f.waitListener = fn }

// decodeWait decodes a lockwait record of key k.
func decodeWait(k, v []byte) (Wait, bool) {
	if len(k) != 16 || len(v) < lockWaitHeaderLen {
		return Wait{}, false
	}
	w := Wait{
		Ino:     binary.BigEndian.Uint64(k),
		Session: binary.BigEndian.Uint64(v), Seq: binary.BigEndian.Uint64(v[8:]),
		Since: int64(binary.BigEndian.Uint64(v[16:])),
	}
	w.ID = binary.BigEndian.Uint64(k[8:])
	body := v[lockWaitHeaderLen:]
	switch jfspb.CommandType(binary.BigEndian.Uint32(v[24:])) {
	case jfspb.CommandType_COMMAND_TYPE_SETLK:
		var r jfspb.SetLkRequest
		if proto.Unmarshal(body, &r) != nil {
			return Wait{}, false
		}
		typ, ok := LockType(r.Type)
		rng, err := rangelock.NewRange(r.Start, r.Len)
		if !ok || typ == rangelock.Unlock || err != nil {
			return Wait{}, false
		}
		w.Owner = rangelock.Owner{Session: w.Session, ID: r.Owner}
		w.Type, w.Range, w.Pid, w.MaybeOFD = typ, rng, r.Pid, r.MaybeOfd
	case jfspb.CommandType_COMMAND_TYPE_FLOCK:
		var r jfspb.FlockRequest
		if proto.Unmarshal(body, &r) != nil {
			return Wait{}, false
		}
		typ, ok := LockType(r.Type)
		if !ok || typ == rangelock.Unlock {
			return Wait{}, false
		}
		w.Owner = rangelock.Owner{Session: w.Session, ID: r.Fh}
		w.Flock, w.Type, w.Range, w.Pid = true, typ, rangelock.Whole, r.Pid
	default:
		return Wait{}, false
	}
	return w, true
}

// queue returns ino's waiters in arrival order.
func (t *txn) queue(ino uint64) []Wait {
	var out []Wait
	t.scan(bucketLockWait, u64(ino), func(k, v []byte) bool {
		w, ok := decodeWait(k, v)
		if !ok {
			t.fail(fmt.Errorf("fsm: corrupt lock wait record %x", k))
			return false
		}
		out = append(out, w)
		return true
	})
	return out
}

func waiters(ws []Wait) []rangelock.Waiter {
	out := make([]rangelock.Waiter, len(ws))
	for i, w := range ws {
		out[i] = w.Waiter
	}
	return out
}

// mustQueue reports whether a blocking request w (its ID unset) on ino
// must wait.
func (t *txn) mustQueue(ino uint64, w rangelock.Waiter) bool {
	must, err := t.f.table.MustQueue(ino, w, waiters(t.queue(ino)))
	return err == nil && must
}

// enqueue puts the request (t.session, t.seq) of type typ at the end of ino's
// queue. The header is not stored: the key and the record name the request.
func (t *txn) enqueue(ino uint64, typ jfspb.CommandType, req proto.Message) {
	body, err := marshalOpts.Marshal(req)
	if err != nil {
		t.fail(err)
		return
	}
	v := make([]byte, 0, lockWaitHeaderLen+len(body))
	v = binary.BigEndian.AppendUint64(v, t.session)
	v = binary.BigEndian.AppendUint64(v, t.seq)
	v = binary.BigEndian.AppendUint64(v, uint64(t.now))
	v = binary.BigEndian.AppendUint32(v, uint32(typ))
	t.put(bucketLockWait, key2(ino, t.index), append(v, body...))
	t.put(bucketWaitKey, key2(t.session, t.seq), key2(ino, t.index))
}

// endWait takes w out of its queue, stores errno (0: granted) as its
// request's answer when its session lives, and reports the end.
func (t *txn) endWait(w Wait, errno syscall.Errno) {
	t.del(bucketLockWait, key2(w.Ino, w.ID))
	t.del(bucketWaitKey, key2(w.Session, w.Seq))
	if t.sessionRecord(w.Session) != nil {
		typ := jfspb.CommandType_COMMAND_TYPE_SETLK
		var resp response = &jfspb.SetLkResponse{Errno: eno(errno)}
		if w.Flock {
			typ = jfspb.CommandType_COMMAND_TYPE_FLOCK
			resp = &jfspb.FlockResponse{Errno: eno(errno)}
		}
		v, err := marshalOpts.Marshal(resp)
		if err != nil {
			t.fail(err)
			return
		}
		t.put(bucketResult, key2(w.Session, w.Seq), append(binary.BigEndian.AppendUint32(nil, uint32(typ)), v...))
	}
	t.f.pendingEnds = append(t.f.pendingEnds, WaitEnd{Session: w.Session, Seq: w.Seq, Errno: errno})
}

// grantWaiters grants the waiters of ino that can be granted now, in queue
// order, and records their locks. Called after every change that may free
// a range of ino; a no-op when none can (one bolt seek when none waits).
func (t *txn) grantWaiters(ino uint64) {
	q := t.queue(ino)
	if len(q) == 0 {
		return
	}
	posix := false
	for _, i := range t.f.table.Grant(ino, waiters(q)) {
		w := q[i]
		if w.Flock {
			t.put(bucketFlock, key3(ino, w.Owner.Session, w.Owner.ID), flockRecord{w.Type, w.Pid, t.now}.encode())
		} else {
			posix = true
		}
		t.endWait(w, 0)
	}
	if posix {
		t.savePlocks(ino)
	}
}

// grantAll runs grantWaiters on every inode with waiters.
func (t *txn) grantAll() {
	var inos []uint64
	t.scan(bucketLockWait, nil, func(k, _ []byte) bool {
		ino := binary.BigEndian.Uint64(k)
		if len(inos) == 0 || inos[len(inos)-1] != ino {
			inos = append(inos, ino)
		}
		return true
	})
	for _, ino := range inos {
		t.grantWaiters(ino)
	}
}

// waitOf returns the queued wait of request (sid, seq).
func (t *txn) waitOf(sid, seq uint64) (Wait, bool) {
	v := t.b(bucketWaitKey).Get(key2(sid, seq))
	if len(v) != 16 {
		return Wait{}, false
	}
	k := append([]byte(nil), v...)
	w, ok := decodeWait(k, t.b(bucketLockWait).Get(k))
	if !ok {
		t.fail(fmt.Errorf("fsm: corrupt lock wait record %x", k))
	}
	return w, ok
}

// endSessionWaits ends every wait of session sid with ESTALE.
func (t *txn) endSessionWaits(sid uint64) {
	var keys [][]byte
	t.scan(bucketWaitKey, u64(sid), func(k, _ []byte) bool {
		keys = append(keys, k)
		return true
	})
	for _, k := range keys {
		if w, ok := t.waitOf(sid, binary.BigEndian.Uint64(k[8:])); ok {
			t.endWait(w, syscall.ESTALE)
		}
	}
}

// endInodeWaits ends every wait on ino, which is being freed, with ENOENT.
func (t *txn) endInodeWaits(ino uint64) {
	for _, w := range t.queue(ino) {
		t.endWait(w, syscall.ENOENT)
	}
}

// applyEndLockWait ends the queued request (session, seq) with errno
// (EINTR or EDEADLK) and grants the waiters its leaving lets in: ENOENT if
// it is not queued (already granted or ended), EINVAL for another errno.
func (t *txn) applyEndLockWait(req *jfspb.EndLockWaitRequest) *jfspb.EndLockWaitResponse {
	e := syscall.Errno(req.GetErrno())
	if e != syscall.EINTR && e != syscall.EDEADLK {
		return &jfspb.EndLockWaitResponse{Errno: eno(syscall.EINVAL)}
	}
	w, ok := t.waitOf(req.GetSession(), req.GetSeq())
	if !ok {
		return &jfspb.EndLockWaitResponse{Errno: eno(syscall.ENOENT)}
	}
	t.endWait(w, e)
	t.grantWaiters(w.Ino)
	return &jfspb.EndLockWaitResponse{}
}

// afterLockChange grants the waiters that the command req, just applied,
// may have let in.
func (t *txn) afterLockChange(req proto.Message) {
	switch r := req.(type) {
	case *jfspb.SetLkRequest:
		t.grantWaiters(r.Ino)
	case *jfspb.FlockRequest:
		t.grantWaiters(r.Ino)
	case *jfspb.ReleaseLockOwnerRequest:
		t.grantWaiters(r.Ino)
	case *jfspb.DelegReturnRequest:
		t.grantWaiters(r.Ino)
	case *jfspb.ReleaseRequest:
		if r.ReleaseFlock || len(r.LockOwners) > 0 {
			t.grantWaiters(r.Ino)
		}
	case *jfspb.ReleaseBatchRequest:
		for _, rr := range r.Releases {
			if rr.ReleaseFlock || len(rr.LockOwners) > 0 {
				t.grantWaiters(rr.Ino)
			}
		}
	case *jfspb.CloseSessionRequest, *jfspb.ExpireSessionRequest:
		t.grantAll()
	}
}

// Waits lists the queued lock requests on ino (every inode when 0), by
// inode, then in arrival order. It returns nil if the state cannot be read.
func (f *FSM) Waits(ino uint64) []Wait {
	var out []Wait
	prefix := []byte(nil)
	if ino != 0 {
		prefix = u64(ino)
	}
	err := f.view(func(t *txn) error {
		out = nil
		t.scan(bucketLockWait, prefix, func(k, v []byte) bool {
			w, ok := decodeWait(k, v)
			if !ok {
				t.fail(fmt.Errorf("fsm: corrupt lock wait record %x", k))
				return false
			}
			out = append(out, w)
			return true
		})
		return nil
	})
	if err != nil {
		return nil
	}
	return out
}

// Answered reports whether the lock request (session, seq) was applied
// with a stored answer (granted, queued, refused), or its session is gone:
// either way the leader's record of its admission is out of date.
func (f *FSM) Answered(session, seq uint64) bool {
	_, answered := f.RequestState(session, seq)
	return answered
}

// RequestState tells, in one read, whether the lock request (session, seq)
// is queued, and whether it is answered (queued, granted, refused, or its
// session gone). A state that cannot be read counts as answered.
func (f *FSM) RequestState(session, seq uint64) (queued, answered bool) {
	answered = true
	f.view(func(t *txn) error {
		queued = t.b(bucketWaitKey).Get(key2(session, seq)) != nil
		answered = queued || t.b(bucketResult).Get(key2(session, seq)) != nil || t.b(bucketSession).Get(u64(session)) == nil
		return nil
	})
	return queued, answered
}

// WaitOf returns the queued wait of request (session, seq), if it is queued.
func (f *FSM) WaitOf(session, seq uint64) (Wait, bool) {
	var w Wait
	var ok bool
	if err := f.view(func(t *txn) error { w, ok = t.waitOf(session, seq); return nil }); err != nil {
		return Wait{}, false
	}
	return w, ok
}
