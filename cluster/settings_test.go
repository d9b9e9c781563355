package cluster_test

import (
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// TestAdminSetSettingsRefusesInitial: initial settings are the first
// leader's to propose; a client asking for them gets EINVAL and nothing
// changes.
func TestAdminSetSettingsRefusesInitial(t *testing.T) {
	c := clustertest.NewCluster(t, 1)
	n := c.Leader()
	s := cluster.NewServer(n)
	before, _ := n.FSM().Settings()
	r, err := s.SetSettings(t.Context(), &jfspb.SetSettingsRequest{Settings: &jfspb.Settings{BlockSize: 2 * before.BlockSize, Capacity: 1 << 30}, Initial: true})
	if err != nil || syscall.Errno(r.Errno) != syscall.EINVAL {
		t.Fatalf("initial SetSettings from a client: %v %v, want EINVAL", err, r)
	}
	if after, _ := n.FSM().Settings(); !proto.Equal(after, before) {
		t.Fatalf("settings changed from %v to %v", before, after)
	}
}
