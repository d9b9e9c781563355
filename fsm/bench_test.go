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
	for _, noSync := range []bool{false, true} {
		for _, batch := range []int{1, 64} {
			b.Run(fmt.Sprintf("batch=%d/nosync=%v", batch, noSync), func(b *testing.B) {
				opts := Options{NoSync: noSync}
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
