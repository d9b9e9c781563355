package integration

import (
	"bytes"
	"context"
	"math"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// mustQuietLeader waits until every node has recorded its member entry (the
// last entries a starting cluster proposes by itself) and the leader has
// applied all it committed, and returns the leader and its commit index.
func mustQuietLeader(t *testing.T, pc *procCluster, c *client.Client) (*proc, uint64) {
	t.Helper()
	var leader *proc
	var st *jfspb.ClusterStatusResponse
	ok := waitFor(30*time.Second, func() bool {
		leader = pc.leader(t, c)
		var err error
		if st, err = statusOf(c, leader); err != nil || len(st.Members) != len(pc.procs) {
			return false
		}
		for _, m := range st.Members {
			if m.ApiAddr == "" {
				return false
			}
		}
		return st.AppliedIndex == st.CommitIndex
	})
	if !ok {
		t.Fatalf("the cluster did not settle: %v", st)
	}
	return leader, st.CommitIndex
}

// TestOversizedRequestsNeverReachTheLog sends requests whose sizes are out
// of bounds through the gRPC API and checks that each gets its errno from
// the leader and that the raft log did not grow.
func TestOversizedRequestsNeverReachTheLog(t *testing.T) {
	// No replica checks: their checkpoint entries would move the commit
	// index that the test watches.
	pc := startProcCluster(t, 3, "--integrity-check", "0")
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := writeFile(ctx, c, "f", []byte("x")); err != nil {
		t.Fatal(err)
	}
	lr, err := c.Lookup(ctx, &jfspb.LookupRequest{Parent: 1, Name: []byte("f")})
	if err != nil || lr.Errno != 0 {
		t.Fatalf("lookup f: %v errno %d", err, lr.GetErrno())
	}
	ino := lr.Attr.Ino
	leader, before := mustQuietLeader(t, pc, c)

	long := []byte(strings.Repeat("n", 256))
	for _, tc := range []struct {
		name string
		call func() (int32, error)
		want syscall.Errno
	}{
		{"setxattr 10 MiB value", func() (int32, error) {
			r, err := c.SetXattr(ctx, &jfspb.SetXattrRequest{Ino: ino, Name: []byte("user.big"), Value: make([]byte, 10<<20)})
			return r.GetErrno(), err
		}, syscall.E2BIG},
		{"setxattr 256-byte name", func() (int32, error) {
			r, err := c.SetXattr(ctx, &jfspb.SetXattrRequest{Ino: ino, Name: append([]byte("user."), long...), Value: []byte("v")})
			return r.GetErrno(), err
		}, syscall.ERANGE},
		{"write 10 MiB", func() (int32, error) {
			r, err := c.Write(ctx, &jfspb.WriteRequest{Ino: ino, Data: make([]byte, 10<<20), Fh: 1})
			return r.GetErrno(), err
		}, syscall.EFBIG},
		{"create 256-byte name", func() (int32, error) {
			r, err := c.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: long, Mode: 0o644, Fh: 2})
			return r.GetErrno(), err
		}, syscall.ENAMETOOLONG},
		{"mkdir 256-byte name", func() (int32, error) {
			r, err := c.Mkdir(ctx, &jfspb.MkdirRequest{Parent: 1, Name: long, Mode: 0o755})
			return r.GetErrno(), err
		}, syscall.ENAMETOOLONG},
		{"rename to 256-byte name", func() (int32, error) {
			r, err := c.Rename(ctx, &jfspb.RenameRequest{Parent: 1, Name: []byte("f"), NewParent: 1, NewName: long})
			return r.GetErrno(), err
		}, syscall.ENAMETOOLONG},
		{"symlink 8 KiB target", func() (int32, error) {
			r, err := c.Symlink(ctx, &jfspb.SymlinkRequest{Parent: 1, Name: []byte("l"), Target: make([]byte, 8<<10)})
			return r.GetErrno(), err
		}, syscall.ENAMETOOLONG},
		{"lookup 256-byte name", func() (int32, error) {
			r, err := c.Lookup(ctx, &jfspb.LookupRequest{Parent: 1, Name: long})
			return r.GetErrno(), err
		}, syscall.ENAMETOOLONG},
	} {
		got, err := tc.call()
		if err != nil {
			t.Errorf("%s: %v, want errno %v", tc.name, err, tc.want)
			continue
		}
		if syscall.Errno(got) != tc.want {
			t.Errorf("%s: errno %v, want %v", tc.name, syscall.Errno(got), tc.want)
		}
	}
	st, err := statusOf(c, leader)
	if err != nil {
		t.Fatal(err)
	}
	if st.CommitIndex != before {
		t.Errorf("the leader's commit index moved from %d to %d: oversized requests reached the log", before, st.CommitIndex)
	}
}

// TestHugeSparseReadIsShort reads 4 GiB of a sparse file in one request:
// the leader answers a short read of at most 4 MiB of zeros instead of
// allocating a response that cannot be sent.
func TestHugeSparseReadIsShort(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	if err := writeFile(ctx, c, "sparse", []byte("head")); err != nil {
		t.Fatal(err)
	}
	lr, err := c.Lookup(ctx, &jfspb.LookupRequest{Parent: 1, Name: []byte("sparse")})
	if err != nil || lr.Errno != 0 {
		t.Fatalf("lookup: %v errno %d", err, lr.GetErrno())
	}
	sr, err := c.SetAttr(ctx, &jfspb.SetAttrRequest{Ino: lr.Attr.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: 8 << 30})
	if err != nil || sr.Errno != 0 {
		t.Fatalf("truncate to 8 GiB: %v errno %d", err, sr.GetErrno())
	}
	rr, err := c.Read(ctx, &jfspb.ReadRequest{Ino: lr.Attr.Ino, Size: math.MaxUint32})
	if err != nil {
		t.Fatalf("read 4 GiB: %v", err)
	}
	if rr.Errno != 0 {
		t.Fatalf("read 4 GiB: errno %v", syscall.Errno(rr.Errno))
	}
	if n := len(rr.Data); n == 0 || n > 4<<20 {
		t.Fatalf("read 4 GiB answered %d bytes, want a short read of 1..4 MiB", n)
	}
	want := append([]byte("head"), make([]byte, len(rr.Data)-4)...)
	if !bytes.Equal(rr.Data, want) {
		t.Errorf("read data is not the head followed by zeros")
	}
}
