package cluster

import (
	"context"
	"time"

	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster/lease"
)

// The read lease (DESIGN.md, "Reads under a lease"): the decisions are made
// by the pure core in package lease; this file feeds it the rounds of
// confirmations, the transfers and the time, and starts renewals.

// LeaseDrift bounds how much faster one node's monotonic clock may run than
// another's: every lease is shortened by this fraction.
const LeaseDrift = 0.01

// leaseMargin is taken off every lease on top of the drift.
const leaseMargin = 10 * time.Millisecond

// leaseState is the node's read lease and what is counted about it.
type leaseState struct {
	core     lease.Lease
	renewing bool // a renewal round is out
}

func newLeaseCore(cfg Config) lease.Lease {
	return lease.Lease{Config: lease.Config{
		Drift:  LeaseDrift,
		Margin: leaseMargin,
		// A lease lasts about HeartbeatTimeout less the followers' time
		// since contact (a heartbeat interval at most, a tenth of it):
		// renewing in its second half leaves a round time to come back.
		RenewBefore: cfg.HeartbeatTimeout / 2,
	}}
}

// now is the node's clock for leases: monotonic, running while the process
// is stopped (SIGSTOP), so a leader that was frozen finds its lease over.
func (n *Node) now() time.Time {
	if n.cfg.Clock != nil {
		return n.cfg.Clock()
	}
	return time.Now()
}

// leaseRound feeds a round of term, sent at sent, that got answers from
// followers of which need must vouch, to the lease.
func (n *Node) leaseRound(term uint64, sent time.Time, need int, answers []*jfspb.ConfirmTermResponse) {
	if !n.cfg.ReadLease {
		return
	}
	in := make([]lease.Answer, 0, len(answers))
	for _, a := range answers {
		in = append(in, lease.Answer{
			Term:         a.Term,
			Leader:       a.LeaderId == n.cfg.ID,
			SinceContact: time.Duration(a.SinceContactNs),
			Promise:      time.Duration(a.HeartbeatTimeoutNs),
		})
	}
	n.leaseMu.Lock()
	n.lease.core.Round(term, sent, need, in)
	n.leaseMu.Unlock()
}

// underLease reports whether a read in term may be served at this moment
// without a round, and starts a renewal in the background when the lease
// nears its end.
func (n *Node) underLease(term uint64) bool {
	if !n.cfg.ReadLease {
		return false
	}
	now := n.now()
	n.leaseMu.Lock()
	valid := n.lease.core.Valid(term, now)
	renew := n.lease.core.Renew(term, now) && !n.lease.renewing
	if renew {
		n.lease.renewing = true
	}
	n.leaseMu.Unlock()
	if renew {
		n.renewLease(term)
	}
	return valid
}

// renewLease sends a round of confirmations in the background.
func (n *Node) renewLease(term uint64) {
	done := func() {
		n.leaseMu.Lock()
		n.lease.renewing = false
		n.leaseMu.Unlock()
	}
	select {
	case <-n.stopped:
		done()
		return
	default:
	}
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer done()
		ctx, cancel := context.WithTimeout(context.Background(), confirmTimeout)
		defer cancel()
		// A failed renewal needs nothing: the lease runs out, and the
		// next read confirms or learns that this node no longer leads.
		_ = n.confirmLeadership(ctx, term, roundRenew)
	}()
}

// endLease ends the lease of the current term for good, before a leadership
// transfer starts: the transfer's target asks for votes that the followers
// grant although they know a leader.
func (n *Node) endLease() {
	term := n.raft.CurrentTerm()
	n.leaseMu.Lock()
	n.lease.core.Transfer(term)
	n.leaseMu.Unlock()
}

// LeaseUntil is when this node's read lease in its current term ends; zero
// when it holds none.
func (n *Node) LeaseUntil() time.Time {
	term := n.raft.CurrentTerm()
	n.leaseMu.Lock()
	defer n.leaseMu.Unlock()
	return n.lease.core.Until(term)
}

// TransferLeadership ends the read lease, then hands leadership to the voter
// id at addr, or to any voter when id is empty. Every transfer of this
// node's leadership goes through here.
func (n *Node) TransferLeadership(id raft.ServerID, addr raft.ServerAddress) raft.Future {
	n.endLease()
	return startTransfer(n.raft, id, addr)
}

// startTransfer starts a leadership transfer; tests replace it to refuse
// transfers.
var startTransfer = func(r *raft.Raft, id raft.ServerID, addr raft.ServerAddress) raft.Future {
	if id == "" {
		return r.LeadershipTransfer()
	}
	return r.LeadershipTransferToServer(id, addr)
}

// ReadStats counts how the leader's read checks were answered.
type ReadStats struct {
	Lease     uint64 // under the lease, with no round
	Confirmed uint64 // after a round of confirmations
	// Rounds of confirmations sent: for a read without a lease, and to
	// renew a lease in the background.
	ReadRounds, RenewRounds uint64
}

// ReadStats returns the node's read-check counts since it started.
func (n *Node) ReadStats() ReadStats {
	return ReadStats{
		Lease: n.leaseReads.Load(), Confirmed: n.confirmedReads.Load(),
		ReadRounds: n.rounds[roundRead].Load(), RenewRounds: n.rounds[roundRenew].Load(),
	}
}

// startRuleDelay is how long a node that has raft state waits after it
// started before raft runs, when it keeps the start rule: a node that
// restarted has forgotten its leader and would vote at once, breaking the
// promise its answers gave the leader's lease before it stopped. Zero for a
// node without raft state (it promised nothing) or with leases off.
func (n *Node) startRuleDelay(existing bool) time.Duration {
	if !existing || !n.cfg.ReadLease {
		return 0
	}
	from := n.began
	if !n.cfg.Started.IsZero() && n.cfg.Started.Before(from) {
		from = n.cfg.Started
	}
	return time.Until(from.Add(time.Duration(float64(n.cfg.HeartbeatTimeout) * (1 + LeaseDrift))))
}
