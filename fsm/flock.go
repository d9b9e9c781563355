package fsm

import (
	"encoding/binary"
	"fmt"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// flock(2) locks. The rangelock.Table in memory decides; bolt keeps one
// record per held flock, key (ino, session, fh), value type (1 byte), pid
// (4), since (8): enough to rebuild the table and to show the lock.

const flockRecordLen = 1 + 4 + 8

type flockRecord struct {
	typ   rangelock.Type
	pid   uint32
	since int64
}

func (r flockRecord) encode() []byte {
	b := make([]byte, 0, flockRecordLen)
	b = append(b, byte(r.typ))
	b = binary.BigEndian.AppendUint32(b, r.pid)
	return binary.BigEndian.AppendUint64(b, uint64(r.since))
}

func decodeFlock(v []byte) (flockRecord, bool) {
	if len(v) != flockRecordLen || !rangelock.Type(v[0]).Valid() || v[0] == byte(rangelock.Unlock) {
		return flockRecord{}, false
	}
	return flockRecord{rangelock.Type(v[0]), binary.BigEndian.Uint32(v[1:]), int64(binary.BigEndian.Uint64(v[5:]))}, true
}

// LockType converts a wire lock type: false if unknown.
func LockType(t jfspb.LockType) (rangelock.Type, bool) {
	switch t {
	case jfspb.LockType_LOCK_TYPE_UNLOCK:
		return rangelock.Unlock, true
	case jfspb.LockType_LOCK_TYPE_READ:
		return rangelock.Read, true
	case jfspb.LockType_LOCK_TYPE_WRITE:
		return rangelock.Write, true
	}
	return 0, false
}

// WireLockType converts a lock type to its wire form.
func WireLockType(t rangelock.Type) jfspb.LockType {
	switch t {
	case rangelock.Read:
		return jfspb.LockType_LOCK_TYPE_READ
	case rangelock.Write:
		return jfspb.LockType_LOCK_TYPE_WRITE
	}
	return jfspb.LockType_LOCK_TYPE_UNLOCK
}

func wireOwners(os []rangelock.Owner) []*jfspb.LockOwner {
	out := make([]*jfspb.LockOwner, len(os))
	for i, o := range os {
		out[i] = &jfspb.LockOwner{Session: o.Session, Owner: o.ID}
	}
	return out
}

// heldFlock returns the type o holds on ino in the table, or Unlock.
func (t *txn) heldFlock(ino uint64, o rangelock.Owner) rangelock.Type {
	for _, fl := range t.f.table.Flocks(ino) {
		if fl.Owner == o {
			return fl.Type
		}
	}
	return rangelock.Unlock
}

// applyFlock is flock(2) for the open file (session, fh): ENOENT; EINVAL for
// an unknown type; EBADF when the caller could not open the file at all
// (mayLock); EAGAIN on conflict, with the owners in the way (a
// conflicting conversion has dropped the old lock, as on Linux). With
// req.Queue, a request that conflicts with a held flock or an earlier waiter
// is queued instead (a conversion has then dropped the old lock too):
// EINPROGRESS with queued set (lockwait.go).
func (t *txn) applyFlock(req *jfspb.FlockRequest) *jfspb.FlockResponse {
	ino := req.GetIno()
	n := t.inode(ino)
	if n == nil {
		return &jfspb.FlockResponse{Errno: eno(syscall.ENOENT)}
	}
	typ, ok := LockType(req.GetType())
	if !ok {
		return &jfspb.FlockResponse{Errno: eno(syscall.EINVAL)}
	}
	if e := n.mayLock(req.GetHeader().GetCred(), req.GetType(), true); e != 0 {
		return &jfspb.FlockResponse{Errno: eno(e)}
	}
	if t.delegatedTo(ino) != 0 || t.fenced(ino, t.now, true) {
		return &jfspb.FlockResponse{Errno: eno(syscall.EAGAIN), DelegBusy: true}
	}
	o := rangelock.Owner{Session: t.session, ID: req.GetFh()}
	fresh := req.GetDelegate() && typ != rangelock.Unlock && t.lockFree(ino)
	if req.GetQueue() && typ != rangelock.Unlock && t.seq > 0 && t.heldFlock(ino, o) != typ &&
		t.mustQueue(ino, rangelock.Waiter{Owner: o, Flock: true, Type: typ, Range: rangelock.Whole, Pid: req.GetPid()}) {
		t.dropFlock(ino, o)
		t.enqueue(ino, jfspb.CommandType_COMMAND_TYPE_FLOCK, &jfspb.FlockRequest{
			Ino: ino, Fh: req.GetFh(), Type: req.GetType(), Pid: req.GetPid(),
		})
		return &jfspb.FlockResponse{Errno: eno(syscall.EINPROGRESS), Queued: true}
	}
	before := t.heldFlock(ino, o)
	conflicts, err := t.f.table.Flock(ino, o, typ)
	if err != nil {
		return &jfspb.FlockResponse{Errno: eno(syscall.EINVAL)}
	}
	k := key3(ino, o.Session, o.ID)
	switch after := t.heldFlock(ino, o); {
	case after == rangelock.Unlock:
		t.del(bucketFlock, k)
	case after != before:
		t.put(bucketFlock, k, flockRecord{after, req.GetPid(), t.now}.encode())
	}
	if len(conflicts) > 0 {
		return &jfspb.FlockResponse{Errno: eno(syscall.EAGAIN), Conflicts: wireOwners(conflicts)}
	}
	if fresh {
		t.delegate(ino, t.session, t.seq)
		return &jfspb.FlockResponse{Delegated: true}
	}
	return &jfspb.FlockResponse{}
}

// dropFlock releases o's flock on ino, if any.
func (t *txn) dropFlock(ino uint64, o rangelock.Owner) {
	if _, err := t.f.table.Flock(ino, o, rangelock.Unlock); err != nil {
		t.fail(err)
	}
	t.del(bucketFlock, key3(ino, o.Session, o.ID))
}

// loadFlocks replays the stored flocks into table.
func loadFlocks(t *txn, table *rangelock.Table) error {
	var err error
	t.scan(bucketFlock, nil, func(k, v []byte) bool {
		r, ok := decodeFlock(v)
		if len(k) != 24 || !ok {
			err = fmt.Errorf("fsm: corrupt flock record %x", k)
			return false
		}
		ino := binary.BigEndian.Uint64(k)
		o := rangelock.Owner{Session: binary.BigEndian.Uint64(k[8:]), ID: binary.BigEndian.Uint64(k[16:])}
		c, ferr := table.Flock(ino, o, r.typ)
		if ferr != nil || len(c) > 0 {
			err = fmt.Errorf("fsm: stored flock of %s on inode %d does not replay (conflicts %v, error %v)", o, ino, c, ferr)
			return false
		}
		return true
	})
	return err
}
