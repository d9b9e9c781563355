package fsm

import (
	bolt "go.etcd.io/bbolt"

	"github.com/jfs-dev/jfs/rangelock"
)

// LockHolder is a lock that stands in the way of a request: its owner and
// the pid that took it.
type LockHolder struct {
	Owner rangelock.Owner
	Pid   uint32
}

// LockHolders lists, without changing anything, the holders of the locks on
// ino that keep owner from taking typ over rng: flocks when flock is set
// (rng is then ignored), POSIX locks otherwise. The leader uses it to build
// the wait-for graph; each owner appears once, in the table's order.
func (f *FSM) LockHolders(ino uint64, flock bool, owner rangelock.Owner, typ rangelock.Type, rng rangelock.Range) []LockHolder {
	holders, _, _, _ := f.WaitState(ino, flock, owner, typ, rng)
	return holders
}

// WaitState reads, from one state (no batch is applied meanwhile), what
// LockHolders answers, the waits queued on ino (as Waits), and the applied
// index of that state. ok is false if the state cannot be read.
func (f *FSM) WaitState(ino uint64, flock bool, owner rangelock.Owner, typ rangelock.Type, rng rangelock.Range) (holders []LockHolder, queue []Wait, applied uint64, ok bool) {
	// The order of apply: dbMu, then tableMu; apply holds tableMu until its
	// batch counts as applied, so under it the table, the bolt file and the
	// applied index agree.
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return nil, nil, 0, false
	}
	f.tableMu.RLock()
	defer f.tableMu.RUnlock()
	applied = f.applied.Load()
	err := GuardFault(f.path, func() error {
		return f.db.View(func(tx *bolt.Tx) error {
			t := newTxn(f, tx, 0, 0, 0)
			holders = t.lockHolders(ino, flock, owner, typ, rng)
			queue = t.queue(ino)
			return t.err
		})
	})
	return holders, queue, applied, err == nil
}

// lockHolders is LockHolders in t; the caller holds tableMu.
func (t *txn) lockHolders(ino uint64, flock bool, owner rangelock.Owner, typ rangelock.Type, rng rangelock.Range) []LockHolder {
	table := t.f.table
	if flock {
		owners, err := table.FlockConflicts(ino, owner, typ)
		if err != nil || len(owners) == 0 {
			return nil
		}
		out := make([]LockHolder, 0, len(owners))
		for _, o := range owners {
			rec, _ := decodeFlock(t.b(bucketFlock).Get(key3(ino, o.Session, o.ID)))
			out = append(out, LockHolder{Owner: o, Pid: rec.pid})
		}
		return out
	}
	owners, err := table.Conflicts(ino, owner, typ, rng)
	if err != nil || len(owners) == 0 {
		return nil
	}
	pid := make(map[rangelock.Owner]uint32, len(owners)) // looked up, never iterated
	for _, l := range table.Locks(ino) {
		if _, seen := pid[l.Owner]; !seen {
			pid[l.Owner] = l.Pid
		}
	}
	out := make([]LockHolder, len(owners))
	for i, o := range owners {
		out[i] = LockHolder{Owner: o, Pid: pid[o]}
	}
	return out
}
