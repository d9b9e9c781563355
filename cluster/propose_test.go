package cluster_test

import (
	"context"
	"errors"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// TestProposeDoneContext: a context that is already done proposes nothing
// and returns its error. Before, an expired deadline became a negative
// timeout for raft.Apply, which then enqueued the entry with no time limit
// and it committed.
func TestProposeDoneContext(t *testing.T) {
	c := clustertest.NewCluster(t, 3)
	leader := c.Leader()
	sess := mustRegister(t, leader, "a")

	expired, cancel := context.WithDeadline(context.Background(), time.Now().Add(-time.Second))
	defer cancel()
	canceled, cancel2 := context.WithCancel(context.Background())
	cancel2()
	for i, tc := range []struct {
		name string
		ctx  context.Context
		want error
	}{
		{"expired", expired, context.DeadlineExceeded},
		{"canceled", canceled, context.Canceled},
	} {
		h, req := mkdir(sess, uint64(i+1), tc.name)
		if _, err := leader.Propose(tc.ctx, jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req); !errors.Is(err, tc.want) {
			t.Fatalf("%s context: Propose returned %v, want %v", tc.name, err, tc.want)
		}
	}
	// A later proposal commits after anything the two calls enqueued.
	h, req := mkdir(sess, 3, "after")
	if r := mustPropose[*jfspb.MkdirResponse](t, leader, jfspb.CommandType_COMMAND_TYPE_MKDIR, h, req); r.Errno != 0 {
		t.Fatalf("mkdir after: errno %d", r.Errno)
	}
	for _, name := range []string{"expired", "canceled"} {
		if r := mustLookup(t, leader, 1, name); r.Errno != int32(syscall.ENOENT) {
			t.Errorf("%s: a proposal with a done context was applied (lookup errno %d)", name, r.Errno)
		}
	}
}
