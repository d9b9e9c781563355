package integration

import (
	"fmt"
	"os"
	"testing"
)

// BenchmarkSeedStatStorm is the seed scenario (seeds/000): 50 processes
// stat one file through one mount with the kernel's caches off, with and
// without the leader's read batching (jfsd --read-batching=false), its read
// lease (jfsd --read-lease=false) and the mount's merging of identical
// requests (jfs mount --read-merging=false).
// Each iteration is one storm of 50×4×50 stats; it reports the stats per
// second and, from the metrics, how many requests one state-machine read
// served. Run it with
//
//	go test ./integration/ -run '^$' -bench SeedStatStorm -benchtime 3x -v
func BenchmarkSeedStatStorm(b *testing.B) {
	for _, lease := range []bool{true, false} {
		for _, batching := range []bool{true, false} {
			for _, merging := range []bool{true, false} {
				b.Run(fmt.Sprintf("lease=%t/batching=%t/merging=%t", lease, batching, merging), func(b *testing.B) {
					pc := startProcCluster(b, 3, fmt.Sprintf("--read-batching=%t", batching), fmt.Sprintf("--read-lease=%t", lease))
					leader := pc.leader(b, pc.client(b))
					m := startMount(b, pc, "--cache-mode", "off", fmt.Sprintf("--read-merging=%t", merging))
					file := m.path("test_file.txt")
					mustWriteFile(b, file, []byte("hello\n"))
					if _, err := os.Stat(file); err != nil {
						b.Fatal(err)
					}
					const procs, reps, perCall = 50, 4, 50
					before := readStormMetrics(b, m, leader)
					b.ResetTimer()
					var secs float64
					for range b.N {
						secs += statStorm(b, file, procs, reps, perCall).Seconds()
					}
					b.StopTimer()
					d := readStormMetrics(b, m, leader).sub(before)
					b.ReportMetric(float64(b.N*procs*reps*perCall)/secs, "stats/s")
					b.ReportMetric(ratio(d.nodeReads, d.fsmReads), "received/fsm-read")
					b.ReportMetric(ratio(d.fuseGetattr+d.fuseLookup, d.fsmReads), "fuse-ops/fsm-read")
					b.ReportMetric(ratio(d.mergedGetattr+d.mergedLookup, d.fuseGetattr+d.fuseLookup), "merged/fuse-op")
					b.ReportMetric(ratio(d.batchSum, d.batchCount), "reads/batch")
					b.Logf("%d×%d stats: %v", b.N, procs*reps*perCall, d)
				})
			}
		}
	}
}
