package cluster

import (
	"strings"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

func TestCheckRequest(t *testing.T) {
	name255, name256 := []byte(strings.Repeat("n", 255)), []byte(strings.Repeat("n", 256))
	long := strings.Repeat("h", maxShortString+1)
	for _, tc := range []struct {
		name string
		req  proto.Message
		want syscall.Errno
	}{
		{"create 255", &jfspb.CreateRequest{Name: name255}, 0},
		{"create 256", &jfspb.CreateRequest{Name: name256}, syscall.ENAMETOOLONG},
		{"lookup 256", &jfspb.LookupRequest{Name: name256}, syscall.ENAMETOOLONG},
		{"unlink 256", &jfspb.UnlinkRequest{Name: name256}, syscall.ENAMETOOLONG},
		{"rmdir 256", &jfspb.RmdirRequest{Name: name256}, syscall.ENAMETOOLONG},
		{"mknod 256", &jfspb.MknodRequest{Name: name256}, syscall.ENAMETOOLONG},
		{"link 256", &jfspb.LinkRequest{NewName: name256}, syscall.ENAMETOOLONG},
		{"rename from 256", &jfspb.RenameRequest{Name: name256, NewName: name255}, syscall.ENAMETOOLONG},
		{"symlink target max", &jfspb.SymlinkRequest{Name: name255, Target: make([]byte, fsm.MaxSymlinkLen)}, 0},
		{"symlink target past max", &jfspb.SymlinkRequest{Name: name255, Target: make([]byte, fsm.MaxSymlinkLen+1)}, syscall.ENAMETOOLONG},
		{"write max", &jfspb.WriteRequest{Data: make([]byte, fsm.MaxWrite)}, 0},
		{"write past max", &jfspb.WriteRequest{Data: make([]byte, fsm.MaxWrite+1)}, syscall.EFBIG},
		{"setxattr value max", &jfspb.SetXattrRequest{Name: []byte("user.a"), Value: make([]byte, fsm.MaxXattrValueLen)}, 0},
		{"setxattr value past max", &jfspb.SetXattrRequest{Name: []byte("user.a"), Value: make([]byte, fsm.MaxXattrValueLen+1)}, syscall.E2BIG},
		{"setxattr name past max", &jfspb.SetXattrRequest{Name: name256}, syscall.ERANGE},
		{"getxattr name past max", &jfspb.GetXattrRequest{Name: name256}, syscall.ERANGE},
		{"removexattr name past max", &jfspb.RemoveXattrRequest{Name: name256}, syscall.ERANGE},
		{"register host", &jfspb.RegisterRequest{Host: long}, syscall.E2BIG},
		{"expire reason", &jfspb.ExpireSessionRequest{Reason: long}, syscall.E2BIG},
		{"member address", &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "n1", ApiAddr: long}}, syscall.E2BIG},
		{"acks at the limit", &jfspb.MkdirRequest{Header: &jfspb.Header{AckedSeqs: make([]uint64, maxAckedSeqs)}}, 0},
		{"acks past the limit", &jfspb.MkdirRequest{Header: &jfspb.Header{AckedSeqs: make([]uint64, maxAckedSeqs+1)}}, syscall.EINVAL},
		{"no header", &jfspb.MkdirRequest{Name: name255}, 0},
		{"release owners at the limit", &jfspb.ReleaseRequest{LockOwners: make([]uint64, maxLockOwners)}, 0},
		{"release owners past the limit", &jfspb.ReleaseRequest{LockOwners: make([]uint64, maxLockOwners+1)}, syscall.EINVAL},
		{"release batch empty", &jfspb.ReleaseBatchRequest{}, syscall.EINVAL},
		{"release batch past the limit", &jfspb.ReleaseBatchRequest{Releases: make([]*jfspb.ReleaseRequest, fsm.MaxReleaseBatch+1)}, syscall.EINVAL},
		{"release batch, owners past the limit", &jfspb.ReleaseBatchRequest{Releases: []*jfspb.ReleaseRequest{{LockOwners: make([]uint64, maxLockOwners+1)}}}, syscall.EINVAL},
		{"blocking lock, acks past the limit", &jfspb.SetLkRequest{Block: true, Header: &jfspb.Header{AckedSeqs: make([]uint64, maxAckedSeqs+1)}}, syscall.EINVAL},
	} {
		if got := checkRequest(tc.req); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestClampRead(t *testing.T) {
	r := &jfspb.ReadRequest{Ino: 2, Offset: 7, Size: 1 << 31}
	c := clampRead(r)
	if c.Size != fsm.MaxRead || c.Ino != 2 || c.Offset != 7 || r.Size != 1<<31 {
		t.Fatalf("clamped %v from %v", c, r)
	}
	if small := (&jfspb.ReadRequest{Size: 10}); clampRead(small) != small {
		t.Fatal("a small read was copied")
	}
	if resp := errnoResponse[*jfspb.WriteResponse](syscall.EFBIG); resp.Errno != int32(syscall.EFBIG) {
		t.Fatalf("errno response %v", resp)
	}
}
