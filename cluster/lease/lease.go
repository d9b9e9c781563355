// Package lease decides for how long a raft leader may serve reads without
// asking its followers (cluster/DESIGN.md § "Reads under a lease" gives the
// argument). It is a pure core: it takes events (a confirmation round that
// was sent at some time and what the followers answered, a leadership
// transfer that is about to start) and answers questions (is the lease valid
// at this time, should it be renewed now). It reads no clock, starts no
// goroutine and sends nothing; the caller passes times read from a monotonic
// clock and is responsible for calling it from one goroutine at a time.
package lease

import (
	"slices"
	"time"
)

// Answer is one follower's answer to a confirmation round.
type Answer struct {
	// Term is the follower's current raft term.
	Term uint64
	// Leader: the follower named the asking node as its leader.
	Leader bool
	// SinceContact is how long before answering the follower last had a
	// successful contact from a leader (raft's LastContact).
	SinceContact time.Duration
	// Promise is the follower's raft HeartbeatTimeout if it keeps the
	// start rule (it takes no part in raft for that long after it starts),
	// zero if it promises nothing.
	Promise time.Duration
}

// Config are a Lease's constants.
type Config struct {
	// Drift bounds how much faster one node's monotonic clock may run than
	// another's, as a fraction (0.01: 1%).
	Drift float64
	// Margin is taken off every lease on top of the drift.
	Margin time.Duration
	// RenewBefore: a lease with less than this left wants renewal.
	RenewBefore time.Duration
}

// Lease is the leader's read lease. The zero value holds no lease; set
// Config before use.
type Lease struct {
	Config

	term    uint64    // the newest term an event spoke of
	until   time.Time // the lease holds before this instant, in term
	blocked bool      // a transfer started in term: no lease for the rest of it
}

// sync moves the lease to term: a newer term starts from nothing. It reports
// whether the event belongs to the current term (false: an older term's,
// to be ignored).
func (l *Lease) sync(term uint64) bool {
	switch {
	case term < l.term:
		return false
	case term > l.term:
		l.term, l.until, l.blocked = term, time.Time{}, false
	}
	return true
}

// Round records a confirmation round of term that the leader sent at sent and
// the answers it has from followers; need is how many followers must vouch
// for a majority (voters/2). It extends the lease to what the answers allow
// and reports whether they allow one ending after sent.
//
// A follower vouches when it answered in term, named this leader, and
// promised; it then grants no vote to another candidate (short of a
// leadership transfer) before Promise−SinceContact after it answered, on
// its clock, so before sent + (Promise−SinceContact)·(1−Drift) on ours. The
// lease ends at the need-th latest of those bounds, less Margin: the leader
// and any need of the vouching followers are a majority.
func (l *Lease) Round(term uint64, sent time.Time, need int, answers []Answer) bool {
	if !l.sync(term) || l.blocked {
		return false
	}
	if need <= 0 {
		// A single voter: no other node can be elected without a
		// configuration change, which goes through this leader's log.
		// Such a leader still confirms nothing; it needs no lease.
		return false
	}
	var ends []time.Time
	for _, a := range answers {
		if a.Term != term || !a.Leader || a.Promise <= 0 || a.SinceContact >= a.Promise {
			continue
		}
		left := time.Duration(float64(a.Promise-a.SinceContact) * (1 - l.Drift))
		ends = append(ends, sent.Add(left-l.Margin))
	}
	if len(ends) < need {
		return false
	}
	slices.SortFunc(ends, func(a, b time.Time) int { return b.Compare(a) })
	end := ends[need-1]
	if !end.After(sent) {
		return false
	}
	if end.After(l.until) {
		l.until = end
	}
	return true
}

// Transfer records that a leadership transfer of term is about to start. The
// lease ends at once and no round of term grants one again: the transfer's
// target asks for votes that followers grant even while they know a leader.
func (l *Lease) Transfer(term uint64) {
	if l.sync(term) {
		l.until, l.blocked = time.Time{}, true
	}
}

// Valid reports whether the leader of term may serve a read at now without
// asking the followers.
func (l *Lease) Valid(term uint64, now time.Time) bool {
	return term == l.term && !l.blocked && now.Before(l.until)
}

// Renew reports whether a valid lease of term should be renewed at now: less
// than RenewBefore is left. An expired lease is not renewed in the
// background; the next read confirms and so renews it.
func (l *Lease) Renew(term uint64, now time.Time) bool {
	return l.Valid(term, now) && l.until.Sub(now) < l.RenewBefore
}

// Until is when the lease of term ends; zero when it holds none.
func (l *Lease) Until(term uint64) time.Time {
	if term != l.term || l.blocked {
		return time.Time{}
	}
	return l.until
}
