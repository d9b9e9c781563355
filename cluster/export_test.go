package cluster

import (
	"context"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// FailTransfers makes the first n leadership transfers of a corrupt leader
// fail. Call it before the nodes start; restore, after they stopped, puts
// the real transfer back. failed tells how many transfers were refused.
func FailTransfers(n int) (failed func() int, restore func()) {
	real := transferLeadership
	var tried atomic.Int64
	transferLeadership = func(r *raft.Raft) raft.Future {
		if tried.Add(1) <= int64(n) {
			return failedFuture{}
		}
		return real(r)
	}
	return func() int { return int(min(tried.Load(), int64(n))) },
		func() { transferLeadership = real }
}

type failedFuture struct{}

func (failedFuture) Error() error { return raft.ErrLeadershipTransferInProgress }

// OFDMarks is the number of lock owners n's lock waits keep marked as
// maybe open file descriptions.
func OFDMarks(n *Node) int { return n.locks.ofdMarks() }

// RefuseTransfers makes every transfer started by Node.TransferLeadership
// fail without starting, until restore is called.
func RefuseTransfers() (restore func()) {
	real := startTransfer
	startTransfer = func(*raft.Raft, raft.ServerID, raft.ServerAddress) raft.Future { return failedFuture{} }
	return func() { startTransfer = real }
}

// SetCacheWaitHook installs fn, told each time a request on n starts to
// wait for the coherent caches: "read", "write" or "settle". Call it
// before the requests it is to hear of.
func SetCacheWaitHook(n *Node, fn func(kind string)) {
	n.caches.mu.Lock()
	n.caches.waitHook = fn
	n.caches.mu.Unlock()
}

// SessionLeaseEnd is when n, leading, would expire session sid.
func SessionLeaseEnd(n *Node, sid uint64) time.Time {
	d, _ := n.sessions.deadlineOf(sid)
	return d
}

// ServeRecalls serves a recall stream of session sid on n, as DelegRecalls
// does once it found the session alive.
func ServeRecalls(ctx context.Context, n *Node, sid uint64, send func(*jfspb.DelegRecall) error) error {
	return n.deleg.serve(ctx, sid, send)
}
