package integration

import (
	"bytes"
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestBigTruncateAndUnlinkFreeInBackground truncates and removes files of
// thousands of blocks on real nodes: the cut data never reads back, the
// leader frees the blocks in the background until the used bytes are
// what is left, and the replicas end equal.
func TestBigTruncateAndUnlinkFreeInBackground(t *testing.T) {
	pc := startProcCluster(t, 3, "--block-size", "4K")
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	data := make([]byte, 16<<20) // 4096 blocks
	for i := range data {
		data[i] = byte(i%251) + 1
	}
	create := func(name string) uint64 {
		t.Helper()
		cr, err := c.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte(name), Mode: 0o644,
			Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
		if err != nil || cr.Errno != 0 {
			t.Fatalf("create %s: %v %v", name, err, cr)
		}
		if n, _, err := c.WriteAt(ctx, cr.Attr.Ino, 1, 0, data); err != nil || n != len(data) {
			t.Fatalf("write %s: %d %v", name, n, err)
		}
		if r, err := c.Release(ctx, &jfspb.ReleaseRequest{Ino: cr.Attr.Ino, Fh: 1}); err != nil || r.Errno != 0 {
			t.Fatalf("release %s: %v %v", name, err, r)
		}
		return cr.Attr.Ino
	}
	setSize := func(ino, size uint64) {
		t.Helper()
		r, err := c.SetAttr(ctx, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE), Size: size})
		if err != nil || r.Errno != 0 {
			t.Fatalf("truncate to %d: %v %v", size, err, r)
		}
	}
	used := func() uint64 {
		t.Helper()
		st, err := c.StatFS(ctx, &jfspb.StatFSRequest{})
		if err != nil || st.Errno != 0 {
			t.Fatalf("statfs: %v %v", err, st)
		}
		return st.UsedBytes
	}
	f := create("f")
	create("g")
	if u := used(); u != 2*uint64(len(data)) {
		t.Fatalf("used bytes %d after writing two files of %d", u, len(data))
	}

	setSize(f, 10)
	setSize(f, uint64(len(data)))
	got, err := c.ReadAt(ctx, f, 0, len(data))
	if err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(data[:10]), make([]byte, len(data)-10)...)
	if !bytes.Equal(got, want) {
		t.Fatal("after truncating to 10 bytes and extending, the cut data reads back")
	}
	if r, err := c.Unlink(ctx, &jfspb.UnlinkRequest{Parent: 1, Name: []byte("g")}); err != nil || r.Errno != 0 {
		t.Fatalf("unlink g: %v %v", err, r)
	}
	// The leader frees the dead blocks by itself.
	if !waitFor(60*time.Second, func() bool { return used() == 10 }) {
		t.Fatalf("used bytes %d a minute after the truncate and unlink, want 10", used())
	}
	waitSameDigest(t, c, pc.procs)
	if got, err := c.ReadAt(ctx, f, 0, len(data)); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("after freeing, f reads differently: %v", err)
	}
}
