package fsm

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// Lock delegation. An inode whose locks only one session uses may have them
// delegated to that session: its mount then keeps them in a table of its
// own and answers lock, unlock and F_GETLK without the log. The state
// records only the delegation: deleg (ino -> session) and delegsess
// (session ‖ ino -> empty). While an inode is delegated, the cluster's
// table holds no lock on it at all: the lock that was granted with the
// delegation moved to the mount, and every lock request on the inode, from
// any session (the holder's own included: a request its mount sent before
// it knew), is answered EAGAIN with deleg_busy and not stored, so the
// leader recalls the delegation and applies the request again. DESIGN.md
// gives the reasons.
//
// A delegation is made only by the apply of a granted lock request that
// the leader marked delegate, when, before that request, the inode had no
// lock and no waiter of anyone: the mount's table then starts from the one
// lock it was just granted, which it computes from its own request, so
// both tables agree without the lock being sent back. It ends by
// DelegReturn (the mount's locks replayed into the table, in one entry), by
// the end of the session (void: its locks go with it, as today), or with
// the inode.

// delegatedTo returns the session ino's locks are delegated to, or 0.
func (t *txn) delegatedTo(ino uint64) uint64 {
	sid, _ := t.delegation(ino)
	return sid
}

// delegation returns the session ino's locks are delegated to and the seq
// of its request that made the delegation (0 in a record written before
// the seq was kept); 0, 0 when ino is not delegated.
func (t *txn) delegation(ino uint64) (sid, seq uint64) {
	v := t.b(bucketDeleg).Get(u64(ino))
	switch len(v) {
	case 8:
		return binary.BigEndian.Uint64(v), 0
	case 16:
		return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:])
	}
	return 0, 0
}

// lockFree reports whether ino has no lock and no waiter of anyone.
func (t *txn) lockFree(ino uint64) bool {
	return len(t.f.table.Locks(ino)) == 0 && len(t.f.table.Flocks(ino)) == 0 &&
		len(t.queue(ino)) == 0
}

// delegate records that ino's locks are delegated to session sid by its
// request seq, and takes sid's locks on ino (the one just granted) out of
// the table: the mount keeps them. Called only when lockFree held before
// the grant. The seq names the delegation: a return names it, so that a
// late return of an earlier delegation of the same session cannot end
// this one (applyDelegReturn).
func (t *txn) delegate(ino, sid, seq uint64) {
	for _, l := range t.f.table.Locks(ino) {
		t.f.table.ReleasePosix(ino, l.Owner)
	}
	for _, fl := range t.f.table.Flocks(ino) {
		if _, err := t.f.table.Flock(ino, fl.Owner, rangelock.Unlock); err != nil {
			t.fail(err)
		}
	}
	t.del(bucketPlock, u64(ino))
	t.deletePrefix(bucketFlock, u64(ino))
	t.put(bucketDeleg, u64(ino), key2(sid, seq))
	t.put(bucketDelegSess, key2(sid, ino), nil)
}

// undelegate ends the delegation of ino, if any.
func (t *txn) undelegate(ino uint64) {
	if sid := t.delegatedTo(ino); sid != 0 {
		t.del(bucketDeleg, u64(ino))
		t.del(bucketDelegSess, key2(sid, ino))
	}
}

// voidSessionDelegs ends every delegation of session sid, which is ending:
// the locks its mount held under them go with the session, as its other
// locks do.
func (t *txn) voidSessionDelegs(sid uint64) {
	var inos []uint64
	t.scan(bucketDelegSess, u64(sid), func(k, _ []byte) bool {
		if len(k) == 16 {
			inos = append(inos, binary.BigEndian.Uint64(k[8:]))
		}
		return true
	})
	for _, ino := range inos {
		t.undelegate(ino)
	}
}

// applyDelegReturn gives the delegation of req.Ino back with the session's
// locks: they enter the table in the mount's order, and waiters they do
// not block are granted (afterLockChange). A return of a delegation the
// session does not hold changes nothing (returned false), nor does one
// whose deleg_seq names another delegation than the one held: a return
// whose answer was lost, sent again after the inode was delegated to the
// session anew, must not end the new delegation (whose locks are in the
// mount's new table) with the old one's locks. EINVAL for a lock with a
// bad type or range: then nothing is changed either.
func (t *txn) applyDelegReturn(req *jfspb.DelegReturnRequest) *jfspb.DelegReturnResponse {
	ino := req.GetIno()
	sid, seq := t.delegation(ino)
	if sid != t.session || t.session == 0 || (req.GetDelegSeq() != 0 && seq != 0 && req.GetDelegSeq() != seq) {
		return &jfspb.DelegReturnResponse{}
	}
	type posix struct {
		o   rangelock.Owner
		typ rangelock.Type
		r   rangelock.Range
		pid uint32
	}
	var ps []posix
	var fs []*jfspb.DelegLock
	for _, l := range req.GetLocks() {
		typ, ok := LockType(l.GetType())
		if !ok || typ == rangelock.Unlock {
			return &jfspb.DelegReturnResponse{Errno: eno(syscall.EINVAL)}
		}
		if l.GetFlock() {
			fs = append(fs, l)
			continue
		}
		r, e := lockRange(l.GetStart(), l.GetLen())
		if e != 0 {
			return &jfspb.DelegReturnResponse{Errno: eno(syscall.EINVAL)}
		}
		ps = append(ps, posix{rangelock.Owner{Session: t.session, ID: l.GetOwner()}, typ, r, l.GetPid()})
	}
	// The returned locks are checked on a table of their own first: the
	// cluster's holds none on ino, so only they can conflict, and a mount
	// that sends locks that do must not stop the node.
	check := rangelock.NewTable()
	for _, p := range ps {
		if c, err := check.Set(ino, p.o, p.typ, p.r, p.pid); err != nil || len(c) > 0 {
			return &jfspb.DelegReturnResponse{Errno: eno(syscall.EINVAL)}
		}
	}
	for _, l := range fs {
		typ, _ := LockType(l.GetType())
		if c, err := check.Flock(ino, rangelock.Owner{Session: t.session, ID: l.GetOwner()}, typ); err != nil || len(c) > 0 {
			return &jfspb.DelegReturnResponse{Errno: eno(syscall.EINVAL)}
		}
	}
	t.undelegate(ino)
	if t.inode(ino) == nil {
		return &jfspb.DelegReturnResponse{Returned: true} // freed meanwhile: its locks went with it
	}
	for _, p := range ps {
		if c, err := t.f.table.Set(ino, p.o, p.typ, p.r, p.pid); err != nil || len(c) > 0 {
			t.fail(fmt.Errorf("fsm: returned lock of %s on inode %d does not fit (conflicts %v, error %v)", p.o, ino, c, err))
			return nil
		}
	}
	if len(ps) > 0 {
		t.savePlocks(ino)
	}
	for _, l := range fs {
		o := rangelock.Owner{Session: t.session, ID: l.GetOwner()}
		typ, _ := LockType(l.GetType())
		if c, err := t.f.table.Flock(ino, o, typ); err != nil || len(c) > 0 {
			t.fail(fmt.Errorf("fsm: returned flock of %s on inode %d does not fit (conflicts %v, error %v)", o, ino, c, err))
			return nil
		}
		t.put(bucketFlock, key3(ino, o.Session, o.ID), flockRecord{typ, l.GetPid(), t.now}.encode())
	}
	return &jfspb.DelegReturnResponse{Returned: true}
}

// Delegation returns the session ino's locks are delegated to, or 0 (also
// when the state cannot be read).
func (f *FSM) Delegation(ino uint64) uint64 {
	var sid uint64
	f.view(func(t *txn) error { sid = t.delegatedTo(ino); return nil })
	return sid
}

// Deleg is a delegation: ino's locks are delegated to Session.
type Deleg struct {
	Ino, Session uint64
}

// Delegations lists the delegations of session sid (every session's when
// 0), by inode.
func (f *FSM) Delegations(sid uint64) []Deleg {
	var out []Deleg
	f.view(func(t *txn) error {
		out = nil
		if sid != 0 {
			t.scan(bucketDelegSess, u64(sid), func(k, _ []byte) bool {
				if len(k) == 16 {
					out = append(out, Deleg{Ino: binary.BigEndian.Uint64(k[8:]), Session: sid})
				}
				return true
			})
			return nil
		}
		t.scan(bucketDeleg, nil, func(k, v []byte) bool {
			if len(k) == 8 && len(v) >= 8 {
				out = append(out, Deleg{Ino: binary.BigEndian.Uint64(k), Session: binary.BigEndian.Uint64(v)})
			}
			return true
		})
		return nil
	})
	return out
}

// fenceDelegs fences every inode delegated to session sid, which an
// operator evicts, until until (ns, the leader's clock): its mount may go
// on answering their locks locally until its lease runs out, so every lock
// request on them is busy until an entry stamped at or after until
// (fenced). Kept in the state, so that a new leader holds them too.
func (t *txn) fenceDelegs(sid uint64, until int64) {
	var inos []uint64
	t.scan(bucketDelegSess, u64(sid), func(k, _ []byte) bool {
		if len(k) == 16 {
			inos = append(inos, binary.BigEndian.Uint64(k[8:]))
		}
		return true
	})
	for _, ino := range inos {
		t.put(bucketDelegFence, u64(ino), u64(uint64(until)))
	}
}

// fenced reports whether ino is fenced at now (ns); a fence that has
// lapsed is dropped when apply (write set) finds it.
func (t *txn) fenced(ino uint64, now int64, write bool) bool {
	v := t.b(bucketDelegFence).Get(u64(ino))
	if len(v) != 8 {
		return false
	}
	if now < int64(binary.BigEndian.Uint64(v)) {
		return true
	}
	if write {
		t.del(bucketDelegFence, u64(ino))
	}
	return false
}

// DelegFence returns until when (Unix ns) ino is fenced for an evicted
// holder, 0 when it is not.
func (f *FSM) DelegFence(ino uint64) int64 {
	var until int64
	f.view(func(t *txn) error {
		if v := t.b(bucketDelegFence).Get(u64(ino)); len(v) == 8 {
			until = int64(binary.BigEndian.Uint64(v))
		}
		return nil
	})
	return until
}
