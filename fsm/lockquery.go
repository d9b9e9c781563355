package fsm

import (
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
// (rng is then ignored), POSIX locks otherwise. The leader uses it to queue
// blocked requests and to build the wait-for graph; each owner appears once,
// in the table's order.
func (f *FSM) LockHolders(ino uint64, flock bool, owner rangelock.Owner, typ rangelock.Type, rng rangelock.Range) []LockHolder {
	if flock {
		f.tableMu.RLock()
		owners, err := f.table.FlockConflicts(ino, owner, typ)
		f.tableMu.RUnlock()
		if err != nil || len(owners) == 0 {
			return nil
		}
		// The pids are in bolt; read them without holding the table lock.
		out := make([]LockHolder, 0, len(owners))
		f.view(func(t *txn) error {
			for _, o := range owners {
				rec, _ := decodeFlock(t.b(bucketFlock).Get(key3(ino, o.Session, o.ID)))
				out = append(out, LockHolder{Owner: o, Pid: rec.pid})
			}
			return nil
		})
		return out
	}
	f.tableMu.RLock()
	defer f.tableMu.RUnlock()
	owners, err := f.table.Conflicts(ino, owner, typ, rng)
	if err != nil || len(owners) == 0 {
		return nil
	}
	pid := make(map[rangelock.Owner]uint32, len(owners)) // looked up, never iterated
	for _, l := range f.table.Locks(ino) {
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
