package client

import (
	"math/rand/v2"
	"slices"
	"testing"
)

// Several writes of one session in flight at once (a mount's pipelined
// buffered writes): no header may acknowledge a request still in flight,
// since the cluster forgets the result of an acknowledged request and
// would apply a retry of it again; and every answered request is
// acknowledged in the end.
func TestHeaderAcksNothingInFlight(t *testing.T) {
	c, err := New(Config{Servers: []string{"127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	r := rand.New(rand.NewPCG(1, 2))
	type req struct {
		seq  uint64
		done func(answered, applied bool)
	}
	var flying []req
	answered := map[uint64]bool{}
	acked := map[uint64]bool{}
	for range 5000 {
		if len(flying) < 8 && (len(flying) == 0 || r.IntN(2) == 0) {
			h, done := c.header()
			for _, f := range flying {
				if h.Acked >= f.seq || slices.Contains(h.AckedSeqs, f.seq) {
					t.Fatalf("request %d acknowledges %d, still in flight (acked %d, acked_seqs %v)", h.Seq, f.seq, h.Acked, h.AckedSeqs)
				}
			}
			for s := range answered {
				if s <= h.Acked || slices.Contains(h.AckedSeqs, s) {
					acked[s] = true
				}
			}
			flying = append(flying, req{h.Seq, done})
			continue
		}
		i := r.IntN(len(flying)) // answers come in any order
		f := flying[i]
		flying = slices.Delete(flying, i, i+1)
		f.done(true, true)
		answered[f.seq] = true
	}
	for _, f := range flying {
		f.done(true, true)
		answered[f.seq] = true
	}
	h, _ := c.header()
	for s := range answered {
		if !acked[s] && s > h.Acked && !slices.Contains(h.AckedSeqs, s) {
			t.Fatalf("answered request %d is never acknowledged (last acked %d)", s, h.Acked)
		}
	}
}
