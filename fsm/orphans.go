package fsm

import (
	"encoding/binary"
	"slices"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Orphans: inodes without a name that a session may still have open.
//
// Entries of older versions count opens in the replicated open table, and
// free an inode with its last name, or with its last open, whichever comes
// last. A leader of this version keeps open files in its memory instead
// (LogEntry.leader_opens; cluster/DESIGN.md "Open files"), which apply
// cannot see: under its entries an inode that loses its last name is kept
// as an orphan (nlink 0, listed in sustained, as before) and freed only by
// FreeOrphans, which the leader proposes once its memory shows no open of
// it. An O_TMPFILE file is an orphan from birth. An orphan still open in
// the replicated table (an open recorded by an older version) is never
// freed by FreeOrphans; its last replicated close, or its session's end,
// leaves it to the next FreeOrphans.

// unused reports whether ino, which just lost its last name, may be freed
// at once: under an older version's entry when no session has it open in
// the replicated table; under a leaderOpens entry, whose apply cannot see
// the leader's opens, only as its FreeHint allows: the hint names ino, no
// logged open of ino came after the hint's index, and no older version's
// open remains.
func (t *txn) unused(ino uint64) bool {
	if !t.leaderOpens {
		return !t.isOpen(ino)
	}
	h := t.freeHint
	if h == nil || h.GetIno() != ino || t.isOpen(ino) {
		return false
	}
	v := t.b(bucketOpened).Get(u64(ino))
	return len(v) != 8 || binary.BigEndian.Uint64(v) <= h.GetUnopenedSince()
}

// isOrphan reports whether n (of ino) is an orphan that FreeOrphans may
// free: no name, listed in sustained, not open in the replicated table.
func (t *txn) isOrphan(ino uint64, n *inode) bool {
	return n != nil && n.Nlink == 0 && t.b(bucketSustained).Get(u64(ino)) != nil && !t.isOpen(ino)
}

// applyFreeOrphans frees each listed inode that is an orphan (isOrphan)
// and skips the others: one may have been freed or named (an O_TMPFILE
// given a name by Link) since the leader listed it.
func (t *txn) applyFreeOrphans(req *jfspb.FreeOrphansRequest) *jfspb.FreeOrphansResponse {
	var freed uint64
	for _, ino := range req.GetInos() {
		if n := t.inode(ino); t.isOrphan(ino, n) {
			t.freeInode(ino, n)
			freed++
		}
		if t.err != nil {
			return nil
		}
	}
	return &jfspb.FreeOrphansResponse{Freed: freed}
}

// MaxFreeOrphans bounds the inodes of one FreeOrphansRequest (and so the
// work of one apply; each inode's data is freed in steps as a removal's).
const MaxFreeOrphans = 1024

// Orphans returns up to limit orphans (see isOrphan), in inode order.
func (f *FSM) Orphans(limit int) []uint64 {
	var out []uint64
	f.view(func(t *txn) error {
		out = nil
		t.scan(bucketSustained, nil, func(k, _ []byte) bool {
			ino := binary.BigEndian.Uint64(k)
			if t.isOrphan(ino, t.inode(ino)) {
				out = append(out, ino)
			}
			return len(out) < limit
		})
		return nil
	})
	return out
}

// CheckOpen answers an open that the leader keeps in memory: ESTALE for a
// session that is not live, else the errnos of checkOpen, and the inode's
// attributes. It changes nothing: O_TRUNC is the caller's to apply.
func (f *FSM) CheckOpen(session uint64, req *jfspb.OpenRequest) *jfspb.OpenResponse {
	return read(f, func(t *txn) *jfspb.OpenResponse {
		if t.sessionRecord(session) == nil {
			return &jfspb.OpenResponse{Errno: eno(syscall.ESTALE)}
		}
		ino := req.GetIno()
		n := t.inode(ino)
		if e := checkOpen(ino, n, req.GetFlags(), req.GetHeader().GetCred()); e != 0 {
			return &jfspb.OpenResponse{Errno: eno(e)}
		}
		return &jfspb.OpenResponse{Attr: n.attr(ino)}
	})
}

// ReleaseNeedsLog reports whether a release of ino by session must go
// through the log: it drops a lock (the flock of (session, fh) when asked,
// or a POSIX lock on ino of one of the listed owners), or session has ino
// open in the replicated table (an open recorded by an older version). A
// release that needs none of this only ends an open in the leader's
// memory.
func (f *FSM) ReleaseNeedsLog(session uint64, r *jfspb.ReleaseRequest) bool {
	ino := r.GetIno()
	if len(r.GetLockOwners()) > 0 && f.holdsPosix(ino, session, r.GetLockOwners()) {
		return true
	}
	need := false
	f.view(func(t *txn) error {
		need = t.openCount(ino, session) > 0 ||
			(r.GetReleaseFlock() && t.b(bucketFlock).Get(key3(ino, session, r.GetFh())) != nil)
		return nil
	})
	return need
}

// holdsPosix reports whether any of owners of session holds a POSIX lock
// on ino.
func (f *FSM) holdsPosix(ino, session uint64, owners []uint64) bool {
	f.tableMu.RLock()
	defer f.tableMu.RUnlock()
	for _, l := range f.table.Locks(ino) {
		if l.Owner.Session == session && slices.Contains(owners, l.Owner.ID) {
			return true
		}
	}
	return false
}
