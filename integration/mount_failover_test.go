package integration

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// TestMountKillLeader: a writer keeps creating, writing and reading back
// files through a mount while the leader is killed with SIGKILL; it sees no
// error, and every file it was told was written is there and complete.
func TestMountKillLeader(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	c := pc.client(t)
	var acked []int
	var maxGap time.Duration
	const killAt = 25 // the leader is killed once this write is acknowledged
	kill := make(chan struct{})
	writeN := func(from, to int) {
		t.Helper()
		last := time.Now()
		for i := from; i < to; i++ {
			p := m.path(fmt.Sprintf("f%d", i))
			if err := os.WriteFile(p, content(i), 0o644); err != nil {
				t.Fatalf("write f%d: %v", i, err)
			}
			got, err := os.ReadFile(p)
			if err != nil || !bytes.Equal(got, content(i)) {
				t.Fatalf("read back f%d: %d bytes, %v", i, len(got), err)
			}
			acked = append(acked, i)
			maxGap = max(maxGap, time.Since(last))
			last = time.Now()
			if i == killAt {
				close(kill)
			}
		}
	}
	writeN(0, 20)
	leader := pc.leader(t, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-kill // in the middle of the writes below
		pc.kill(leader)
	}()
	writeN(20, 80)
	<-done
	t.Logf("killed leader %s; longest pause of the writer: %v", leader.id, maxGap)
	if got := pc.leader(t, c); got == leader {
		t.Fatalf("killed node %s still leads", leader.id)
	}
	for _, i := range acked {
		got, err := os.ReadFile(m.path(fmt.Sprintf("f%d", i)))
		if err != nil || !bytes.Equal(got, content(i)) {
			t.Fatalf("f%d after the failover: %d bytes, %v; want %d bytes", i, len(got), err, len(content(i)))
		}
	}
	ents, err := os.ReadDir(m.dir)
	if err != nil || len(ents) != len(acked) {
		t.Fatalf("%d entries after the failover (%v), want %d", len(ents), err, len(acked))
	}
}
