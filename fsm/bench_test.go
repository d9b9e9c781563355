package fsm

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// BenchmarkApply applies creates (each of a new file in one directory) in
// batches of one and of 64 entries, with and without fsync per commit.
func BenchmarkApply(b *testing.B) {
	for _, syncCommits := range []bool{false, true} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("batch=%d/sync=%v", batch, syncCommits), func(b *testing.B) {
				opts := Options{SyncCommits: syncCommits}
				h := &harness{t: b, f: mustOpen(b, filepath.Join(b.TempDir(), "state.db"), opts), now: t0}
				h.sess = h.mustRegister("bench")
				entries := make([]Entry, 0, batch)
				b.ResetTimer()
				start := time.Now()
				for i := 0; i < b.N; i++ {
					h.seq++
					entries = append(entries, h.entry(cCreate, &jfspb.CreateRequest{
						Parent: RootIno, Name: fmt.Appendf(nil, "file-%d", i), Mode: 0o644, Fh: uint64(i),
					}, h.sess, h.seq, h.seq-1))
					if len(entries) == batch || i == b.N-1 {
						if _, err := h.f.ApplyBatch(entries); err != nil {
							b.Fatal(err)
						}
						entries = entries[:0]
					}
				}
				b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "ops/s")
			})
		}
	}
}

// BenchmarkChecksum verifies the checksum of a write entry of the largest
// size (MaxWrite): the cost the checksum adds to applying it on every node,
// and, as one more CRC pass, to sealing it on the leader.
func BenchmarkChecksum(b *testing.B) {
	data, err := Seal(&jfspb.LogEntry{Type: uint32(cWrite), Session: 1, Seq: 1, Body: make([]byte, MaxWrite)})
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if err := verifyChecksum(data); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLookupCred measures a lookup without credentials (no check) and
// with a non-root user's (search permission on the parent): the cost the
// check adds to the hottest read.
func BenchmarkLookupCred(b *testing.B) {
	h := mustHarness(b, Options{})
	h.mustCreate(RootIno, "f", false)
	for _, tc := range []struct {
		name string
		cred *jfspb.Cred
	}{{"none", nil}, {"user", &jfspb.Cred{Uid: 1000, Gid: 1000, Groups: []uint32{4, 24, 27}}}} {
		b.Run(tc.name, func(b *testing.B) {
			req := &jfspb.LookupRequest{Parent: RootIno, Name: []byte("f"), Cred: tc.cred}
			for b.Loop() {
				if r := h.f.Lookup(req); r.Errno != 0 {
					b.Fatal(r.Errno)
				}
			}
		})
	}
}
