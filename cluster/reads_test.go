package cluster_test

import (
	"context"
	"sync"
	"syscall"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

func counterSum(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() == name {
			for _, m := range mf.GetMetric() {
				sum += m.GetCounter().GetValue()
			}
		}
	}
	return sum
}

// TestReadsCoalesce: many concurrent identical getattr and lookup requests
// cost fewer state-machine reads than requests (counted from the node's
// metrics), and every answer is right.
func TestReadsCoalesce(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	reg := prometheus.NewRegistry()
	cluster.NewMetrics(leader, reg)
	s := cluster.NewServer(leader)
	cl := newLockClient(t, leader, "host")
	ino := cl.mustCreate("f")
	var wg sync.WaitGroup
	for i := 0; i < 40; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			for j := 0; j < 50; j++ {
				if i%2 == 0 {
					r, err := s.GetAttr(context.Background(), &jfspb.GetAttrRequest{Ino: ino})
					if err != nil || r.Errno != 0 || r.Attr.Ino != ino {
						t.Errorf("getattr: %v %v", err, r)
						return
					}
					continue
				}
				r, err := s.Lookup(context.Background(), &jfspb.LookupRequest{Parent: 1, Name: []byte("f"), Cred: &jfspb.Cred{}})
				if err != nil || r.Errno != 0 || r.Attr.Ino != ino {
					t.Errorf("lookup: %v %v", err, r)
					return
				}
			}
		}(i)
	}
	wg.Wait()
	received, done := counterSum(t, reg, "jfsd_reads_total"), counterSum(t, reg, "jfsd_fsm_reads_total")
	t.Logf("%v reads received, %v state-machine reads", received, done)
	if received != 2000 || done >= received {
		t.Fatalf("%v reads received, %v state-machine reads: want 2000 received and fewer state-machine reads", received, done)
	}
	// A missing name is answered, not shared with anything.
	if r, err := s.Lookup(context.Background(), &jfspb.LookupRequest{Parent: 1, Name: []byte("nope"), Cred: &jfspb.Cred{}}); err != nil || r.Errno != int32(syscall.ENOENT) {
		t.Fatalf("lookup of a missing name: %v %v", err, r)
	}
}
