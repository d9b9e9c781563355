package lease

import (
	"testing"
	"time"
)

// ms is a point on the test's clock, in milliseconds since its start.
type ms int

var t0 = time.Unix(1000, 0)

func at(m ms) time.Time { return t0.Add(time.Duration(m) * time.Millisecond) }

// step is one event or question of a script; want is the answer expected
// from Round, Valid or Renew.
type step struct {
	op      string // round, transfer, valid, renew
	term    uint64
	at      ms // round: when it was sent; valid, renew: now
	need    int
	answers []Answer
	want    bool
}

func ok(term uint64, since, promise time.Duration) Answer {
	return Answer{Term: term, Leader: true, SinceContact: since, Promise: promise}
}

func run(t *testing.T, steps []step) *Lease {
	t.Helper()
	l := &Lease{Config: Config{Drift: 0.01, Margin: 10 * time.Millisecond, RenewBefore: 400 * time.Millisecond}}
	for i, s := range steps {
		var got bool
		switch s.op {
		case "round":
			got = l.Round(s.term, at(s.at), s.need, s.answers)
		case "transfer":
			l.Transfer(s.term)
			got = s.want
		case "valid":
			got = l.Valid(s.term, at(s.at))
		case "renew":
			got = l.Renew(s.term, at(s.at))
		default:
			t.Fatalf("step %d: unknown op %q", i, s.op)
		}
		if got != s.want {
			t.Fatalf("step %d (%s term %d at %dms): %v, want %v; lease until %v", i, s.op, s.term, s.at, got, s.want,
				l.Until(s.term).Sub(t0))
		}
	}
	return l
}

const sec = time.Second

func TestLeaseScripts(t *testing.T) {
	for _, tc := range []struct {
		name  string
		steps []step
	}{
		{"no lease before any round", []step{
			{op: "valid", term: 2, at: 0, want: false},
			{op: "renew", term: 2, at: 0, want: false},
		}},
		{"one follower of two vouches: lease from its contact", []step{
			// (1000-100)*0.99 - 10 = 881ms after sending.
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 100*time.Millisecond, sec)}, want: true},
			{op: "valid", term: 2, at: 880, want: true},
			{op: "valid", term: 2, at: 881, want: false},
			{op: "valid", term: 3, at: 100, want: false},
		}},
		{"the best vouching follower counts when one suffices", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 900*time.Millisecond, sec), ok(2, 0, sec)}, want: true},
			{op: "valid", term: 2, at: 979, want: true},
			{op: "valid", term: 2, at: 980, want: false},
		}},
		{"five voters: the second best of the followers", []step{
			{op: "round", term: 2, at: 0, need: 2, answers: []Answer{ok(2, 0, sec), ok(2, 500*time.Millisecond, sec), ok(2, 800*time.Millisecond, sec)}, want: true},
			{op: "valid", term: 2, at: 484, want: true}, // 500*0.99-10 = 485
			{op: "valid", term: 2, at: 485, want: false},
		}},
		{"too few vouch", []step{
			{op: "round", term: 2, at: 0, need: 2, answers: []Answer{ok(2, 0, sec)}, want: false},
			{op: "valid", term: 2, at: 1, want: false},
		}},
		{"answers that do not vouch", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{
				ok(3, 0, sec),                    // another term
				{Term: 2, Promise: sec},          // another leader, or none
				ok(2, 0, 0),                      // no promise (no start rule)
				ok(2, 2*sec, sec),                // no contact for longer than its timeout
				ok(2, 995*time.Millisecond, sec), // ends before it was sent
			}, want: false},
			{op: "valid", term: 2, at: 0, want: false},
		}},
		{"the follower's own heartbeat timeout counts", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 0, 200*time.Millisecond)}, want: true},
			{op: "valid", term: 2, at: 187, want: true}, // 200*0.99-10 = 188
			{op: "valid", term: 2, at: 188, want: false},
		}},
		{"a frozen leader's lease has ended when it resumes", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 0, sec)}, want: true},
			{op: "valid", term: 2, at: 5000, want: false},
			{op: "renew", term: 2, at: 5000, want: false},
		}},
		{"renewal is wanted near the end, and extends", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 0, sec)}, want: true}, // until 980
			{op: "renew", term: 2, at: 500, want: false},
			{op: "renew", term: 2, at: 600, want: true},
			{op: "round", term: 2, at: 600, need: 1, answers: []Answer{ok(2, 50*time.Millisecond, sec)}, want: true},
			{op: "valid", term: 2, at: 1500, want: true}, // 600 + 940.5 - 10
			{op: "renew", term: 2, at: 1100, want: false},
		}},
		{"an older round that finishes late does not shorten the lease", []step{
			{op: "round", term: 2, at: 600, need: 1, answers: []Answer{ok(2, 0, sec)}, want: true}, // until 1580
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 0, sec)}, want: true},
			{op: "valid", term: 2, at: 1500, want: true},
		}},
		{"a transfer ends the lease for the rest of the term", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 0, sec)}, want: true},
			{op: "transfer", term: 2},
			{op: "valid", term: 2, at: 1, want: false},
			{op: "round", term: 2, at: 10, need: 1, answers: []Answer{ok(2, 0, sec)}, want: false},
			{op: "valid", term: 2, at: 20, want: false},
			// The next term of leadership starts afresh.
			{op: "round", term: 4, at: 30, need: 1, answers: []Answer{ok(4, 0, sec)}, want: true},
			{op: "valid", term: 4, at: 40, want: true},
		}},
		{"a newer term forgets the old lease; older events are ignored", []step{
			{op: "round", term: 2, at: 0, need: 1, answers: []Answer{ok(2, 0, sec)}, want: true},
			{op: "transfer", term: 1},
			{op: "valid", term: 2, at: 10, want: true},
			{op: "round", term: 3, at: 20, need: 1, answers: nil, want: false},
			{op: "valid", term: 2, at: 30, want: false},
			{op: "valid", term: 3, at: 30, want: false},
			{op: "round", term: 2, at: 40, need: 1, answers: []Answer{ok(2, 0, sec)}, want: false},
			{op: "valid", term: 3, at: 50, want: false},
		}},
		{"a single voter gets no lease", []step{
			{op: "round", term: 2, at: 0, need: 0, want: false},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) { run(t, tc.steps) })
	}
}

// TestLeaseNeverOutlivesAVouchingFollower: a granted lease ends no later than
// the bounds of at least need vouching followers: with the leader they are a
// majority none of whom votes for another node before the lease ends.
func TestLeaseNeverOutlivesAVouchingFollower(t *testing.T) {
	for seed := range 200 {
		l := &Lease{Config: Config{Drift: 0.01}}
		need := 1 + seed%3
		var answers []Answer
		for i := range 2 * need {
			answers = append(answers, ok(5, time.Duration((seed*7+i*131)%1200)*time.Millisecond, sec))
		}
		if !l.Round(5, t0, need, answers) {
			continue
		}
		end := l.Until(5)
		covering := 0
		for _, a := range answers {
			bound := t0.Add(time.Duration(float64(a.Promise-a.SinceContact) * 0.99))
			if a.SinceContact < a.Promise && !bound.Before(end) {
				covering++
			}
		}
		if covering < need {
			t.Fatalf("seed %d: lease until %v is covered by %d followers, need %d", seed, end.Sub(t0), covering, need)
		}
	}
}
