package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"slices"
	"syscall"

	bolt "go.etcd.io/bbolt"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// POSIX record locks. The rangelock.Table in memory decides; bolt keeps, per
// inode, one value listing the inode's locks in the table's list order
// (rangelock.Table.Locks), each with the time its owner first took a lock on
// the inode. Replaying that list with Table.Set in order rebuilds the same
// table, owner order included, which F_GETLK can observe.

const plockRecordLen = 8 + 8 + 1 + 8 + 8 + 4 + 8

type plockRecord struct {
	lock  rangelock.Lock
	since int64
}

func encodePlocks(rs []plockRecord) []byte {
	b := make([]byte, 0, len(rs)*plockRecordLen)
	for _, r := range rs {
		l := r.lock
		b = binary.BigEndian.AppendUint64(b, l.Owner.Session)
		b = binary.BigEndian.AppendUint64(b, l.Owner.ID)
		b = append(b, byte(l.Type))
		b = binary.BigEndian.AppendUint64(b, uint64(l.Start))
		b = binary.BigEndian.AppendUint64(b, uint64(l.End))
		b = binary.BigEndian.AppendUint32(b, l.Pid)
		b = binary.BigEndian.AppendUint64(b, uint64(r.since))
	}
	return b
}

func decodePlocks(b []byte) ([]plockRecord, bool) {
	if len(b)%plockRecordLen != 0 {
		return nil, false
	}
	out := make([]plockRecord, 0, len(b)/plockRecordLen)
	for ; len(b) > 0; b = b[plockRecordLen:] {
		l := rangelock.Lock{
			Owner: rangelock.Owner{Session: binary.BigEndian.Uint64(b), ID: binary.BigEndian.Uint64(b[8:])},
			Type:  rangelock.Type(b[16]),
			Range: rangelock.Range{Start: int64(binary.BigEndian.Uint64(b[17:])), End: int64(binary.BigEndian.Uint64(b[25:]))},
			Pid:   binary.BigEndian.Uint32(b[33:]),
		}
		if l.Type != rangelock.Read && l.Type != rangelock.Write || l.Range.Validate() != nil {
			return nil, false
		}
		out = append(out, plockRecord{l, int64(binary.BigEndian.Uint64(b[37:]))})
	}
	return out, true
}

// savePlocks stores ino's POSIX locks as the table now holds them. An owner
// that held locks before keeps its since; a new owner's since is now.
func (t *txn) savePlocks(ino uint64) {
	old, ok := decodePlocks(t.b(bucketPlock).Get(u64(ino)))
	if !ok {
		t.fail(errCorruptRecord("plock", ino))
		return
	}
	since := make(map[rangelock.Owner]int64, len(old)) // looked up, never iterated
	for _, r := range old {
		since[r.lock.Owner] = r.since
	}
	locks := t.f.table.Locks(ino)
	if len(locks) == 0 {
		t.del(bucketPlock, u64(ino))
		return
	}
	rs := make([]plockRecord, len(locks))
	for i, l := range locks {
		s, held := since[l.Owner]
		if !held {
			s = t.now
		}
		rs[i] = plockRecord{l, s}
	}
	t.put(bucketPlock, u64(ino), encodePlocks(rs))
}

// lockRange converts fcntl's start and length: EINVAL or EOVERFLOW.
func lockRange(start, length int64) (rangelock.Range, syscall.Errno) {
	r, err := rangelock.NewRange(start, length)
	switch {
	case errors.Is(err, rangelock.ErrOverflow):
		return r, syscall.EOVERFLOW
	case err != nil:
		return r, syscall.EINVAL
	}
	return r, 0
}

// applySetLk is F_SETLK for owner (session, req.Owner): ENOENT; EINVAL for an
// unknown type or a bad range; EBADF when the caller could not open the
// file for the lock's access (mayLock); EOVERFLOW; EAGAIN on conflict, with
// the conflicting owners in the kernel's list order. With req.Queue (a
// blocking request with a seq), a lock that conflicts with a held lock or an
// earlier waiter is queued instead: EINPROGRESS with queued set
// (lockwait.go).
func (t *txn) applySetLk(req *jfspb.SetLkRequest) *jfspb.SetLkResponse {
	ino := req.GetIno()
	n := t.inode(ino)
	if n == nil {
		return &jfspb.SetLkResponse{Errno: eno(syscall.ENOENT)}
	}
	typ, ok := LockType(req.GetType())
	if !ok {
		return &jfspb.SetLkResponse{Errno: eno(syscall.EINVAL)}
	}
	if e := n.mayLock(req.GetHeader().GetCred(), req.GetType(), false); e != 0 {
		return &jfspb.SetLkResponse{Errno: eno(e)}
	}
	r, e := lockRange(req.GetStart(), req.GetLen())
	if e != 0 {
		return &jfspb.SetLkResponse{Errno: eno(e)}
	}
	if t.delegatedTo(ino) != 0 || t.fenced(ino, t.now, true) {
		return &jfspb.SetLkResponse{Errno: eno(syscall.EAGAIN), DelegBusy: true}
	}
	o := rangelock.Owner{Session: t.session, ID: req.GetOwner()}
	// Delegated with the grant when nobody else holds or waits (deleg.go).
	fresh := req.GetDelegate() && typ != rangelock.Unlock && t.lockFree(ino)
	if req.GetQueue() && typ != rangelock.Unlock && t.seq > 0 &&
		t.mustQueue(ino, rangelock.Waiter{Owner: o, Type: typ, Range: r, Pid: req.GetPid()}) {
		t.enqueue(ino, jfspb.CommandType_COMMAND_TYPE_SETLK, &jfspb.SetLkRequest{
			Ino: ino, Owner: req.GetOwner(), Type: req.GetType(), Start: req.GetStart(), Len: req.GetLen(),
			Pid: req.GetPid(), MaybeOfd: req.GetMaybeOfd(),
		})
		return &jfspb.SetLkResponse{Errno: eno(syscall.EINPROGRESS), Queued: true}
	}
	conflicts, err := t.f.table.Set(ino, o, typ, r, req.GetPid())
	if err != nil {
		return &jfspb.SetLkResponse{Errno: eno(syscall.EINVAL)}
	}
	if len(conflicts) > 0 {
		return &jfspb.SetLkResponse{Errno: eno(syscall.EAGAIN), Conflicts: wireOwners(conflicts)}
	}
	if fresh {
		t.delegate(ino, t.session, t.seq)
		return &jfspb.SetLkResponse{Delegated: true}
	}
	t.savePlocks(ino)
	return &jfspb.SetLkResponse{}
}

// applyReleaseLockOwner drops every POSIX lock of (session, req.Owner) on
// ino. It always succeeds.
func (t *txn) applyReleaseLockOwner(req *jfspb.ReleaseLockOwnerRequest) *jfspb.ReleaseLockOwnerResponse {
	if sid := t.delegatedTo(req.GetIno()); sid != 0 && sid == t.session {
		// The owner's locks may be in its mount's table: recalled first.
		return &jfspb.ReleaseLockOwnerResponse{Errno: eno(syscall.EAGAIN), DelegBusy: true}
	}
	if t.f.table.ReleasePosix(req.GetIno(), rangelock.Owner{Session: t.session, ID: req.GetOwner()}) {
		t.savePlocks(req.GetIno())
	}
	return &jfspb.ReleaseLockOwnerResponse{}
}

// releaseSessionLocks drops every lock held by owners of session sid.
// Its waits end (ESTALE: a fenced session is never granted a lock), and the
// waits of others that this lets in are granted.
func (t *txn) releaseSessionLocks(sid uint64) {
	t.voidSessionDelegs(sid)
	t.endSessionWaits(sid)
	for _, ino := range t.f.table.ReleaseSession(sid) {
		t.savePlocks(ino)
		t.deletePrefix(bucketFlock, key2(ino, sid))
	}
	t.grantAll()
}

// dropLocks drops every lock on ino, which is being freed, and ends its
// waits with ENOENT.
func (t *txn) dropLocks(ino uint64) {
	t.endInodeWaits(ino)
	t.undelegate(ino)
	t.del(bucketDelegFence, u64(ino))
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
}

// GetLk is F_GETLK: the first lock that keeps (req.Session, req.Owner) from
// taking req.Type over the range, or type UNLOCK when none does. ENOENT;
// EINVAL for UNLOCK or an unknown type or a bad range; EOVERFLOW.
func (f *FSM) GetLk(req *jfspb.GetLkRequest) *jfspb.GetLkResponse {
	return read(f, func(t *txn) *jfspb.GetLkResponse {
		fail := func(e syscall.Errno) *jfspb.GetLkResponse { return &jfspb.GetLkResponse{Errno: eno(e)} }
		if t.inode(req.GetIno()) == nil {
			return fail(syscall.ENOENT)
		}
		typ, ok := LockType(req.GetType())
		if !ok || typ == rangelock.Unlock {
			return fail(syscall.EINVAL)
		}
		if t.delegatedTo(req.GetIno()) != 0 {
			return &jfspb.GetLkResponse{DelegBusy: true}
		}
		r, e := lockRange(req.GetStart(), req.GetLen())
		if e != 0 {
			return fail(e)
		}
		f.tableMu.RLock()
		l, found, err := f.table.Test(req.GetIno(), rangelock.Owner{Session: req.GetSession(), ID: req.GetOwner()}, typ, r)
		f.tableMu.RUnlock()
		switch {
		case err != nil:
			return fail(syscall.EINVAL)
		case !found:
			return &jfspb.GetLkResponse{Type: jfspb.LockType_LOCK_TYPE_UNLOCK}
		}
		return &jfspb.GetLkResponse{
			Type: WireLockType(l.Type), Start: l.Start, Len: l.Len(), Pid: l.Pid,
			Holder: &jfspb.LockOwner{Session: l.Owner.Session, Owner: l.Owner.ID},
		}
	})
}

// Locks lists every held flock and POSIX lock, by inode, flocks first, for
// operators; req filters by inode and session (0: any).
func (f *FSM) Locks(req *jfspb.ListLocksRequest) *jfspb.ListLocksResponse {
	return read(f, func(t *txn) *jfspb.ListLocksResponse {
		var out []*jfspb.LockInfo
		prefix := []byte(nil)
		if req.GetIno() != 0 {
			prefix = u64(req.GetIno())
		}
		keep := func(ino, sid uint64) bool {
			return (req.GetIno() == 0 || ino == req.GetIno()) && (req.GetSession() == 0 || sid == req.GetSession())
		}
		t.scan(bucketFlock, prefix, func(k, v []byte) bool {
			r, ok := decodeFlock(v)
			if len(k) != 24 || !ok {
				t.fail(fmt.Errorf("fsm: corrupt flock record %x", k))
				return false
			}
			ino, sid := binary.BigEndian.Uint64(k), binary.BigEndian.Uint64(k[8:])
			if keep(ino, sid) {
				out = append(out, &jfspb.LockInfo{
					Ino: ino, Kind: jfspb.LockKind_LOCK_KIND_FLOCK,
					Owner: &jfspb.LockOwner{Session: sid, Owner: binary.BigEndian.Uint64(k[16:])},
					Type:  WireLockType(r.typ), Pid: r.pid, SinceNs: r.since,
				})
			}
			return true
		})
		t.scan(bucketPlock, prefix, func(k, v []byte) bool {
			rs, ok := decodePlocks(v)
			if len(k) != 8 || !ok {
				t.fail(fmt.Errorf("fsm: corrupt plock record %x", k))
				return false
			}
			ino := binary.BigEndian.Uint64(k)
			for _, r := range rs {
				if keep(ino, r.lock.Owner.Session) {
					out = append(out, &jfspb.LockInfo{
						Ino: ino, Kind: jfspb.LockKind_LOCK_KIND_POSIX,
						Owner: &jfspb.LockOwner{Session: r.lock.Owner.Session, Owner: r.lock.Owner.ID},
						Type:  WireLockType(r.lock.Type), Start: r.lock.Start, Len: r.lock.Len(),
						Pid: r.lock.Pid, SinceNs: r.since,
					})
				}
			}
			return true
		})
		slices.SortStableFunc(out, func(a, b *jfspb.LockInfo) int {
			switch {
			case a.Ino < b.Ino:
				return -1
			case a.Ino > b.Ino:
				return 1
			}
			return int(a.Kind) - int(b.Kind)
		})
		return &jfspb.ListLocksResponse{Locks: out}
	})
}

// loadTable rebuilds the lock table from the state in db.
func loadTable(db *bolt.DB) (*rangelock.Table, error) {
	table := rangelock.NewTable()
	err := db.View(func(tx *bolt.Tx) error {
		t := newTxn(nil, tx, 0, 0, 0)
		var err error
		t.scan(bucketPlock, nil, func(k, v []byte) bool {
			rs, ok := decodePlocks(v)
			if len(k) != 8 || !ok {
				err = fmt.Errorf("fsm: corrupt plock record %x", k)
				return false
			}
			ino := binary.BigEndian.Uint64(k)
			for _, r := range rs {
				c, serr := table.Set(ino, r.lock.Owner, r.lock.Type, r.lock.Range, r.lock.Pid)
				if serr != nil || len(c) > 0 {
					err = fmt.Errorf("fsm: stored lock %s on inode %d does not replay (conflicts %v, error %v)", r.lock, ino, c, serr)
					return false
				}
			}
			return true
		})
		if err != nil {
			return err
		}
		return loadFlocks(t, table)
	})
	if err != nil {
		return nil, fmt.Errorf("fsm: rebuild lock table: %w", err)
	}
	return table, nil
}
