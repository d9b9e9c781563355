package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestSettingsReplicatedFromCreation starts three nodes with different
// settings flags: the cluster takes one node's settings as a whole, every
// replica applies with them (equal digests after writes), and an operator
// changes them through the log.
func TestSettingsReplicatedFromCreation(t *testing.T) {
	flags := [][]string{
		{"--block-size", "16K", "--capacity", "1G", "--max-inodes", "1000"},
		{"--block-size", "4K", "--capacity", "2G", "--max-inodes", "2000"},
		{"--block-size", "128K", "--capacity", "3G", "--max-inodes", "3000"},
	}
	pc := startProcClusterEach(t, 3, func(i int) []string { return flags[i] })
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	data := make([]byte, 100<<10)
	for i := range data {
		data[i] = byte(i % 251)
	}
	if err := writeFile(ctx, c, "f", data); err != nil {
		t.Fatal(err)
	}
	st, err := c.StatFS(ctx, &jfspb.StatFSRequest{})
	if err != nil || st.Errno != 0 {
		t.Fatalf("statfs: %v %v", err, st)
	}
	type triple struct {
		bs          uint32
		total, inos uint64
	}
	got := triple{st.BlockSize, st.TotalBytes, st.TotalInodes}
	if got != (triple{16 << 10, 1 << 30, 1000}) && got != (triple{4 << 10, 2 << 30, 2000}) && got != (triple{128 << 10, 3 << 30, 3000}) {
		t.Fatalf("statfs reports block size %d, %d bytes, %d inodes: not one node's settings", got.bs, got.total, got.inos)
	}
	waitSameDigest(t, c, pc.procs)

	// A quota below what is stored plus another 100 KiB: ENOSPC.
	out, errOut, err := jfsctl(t, pc.servers(), "settings", "set", "--capacity", fmt.Sprint(150<<10), "--max-inodes", "10")
	if want := fmt.Sprintf("block size %d, capacity %d, max inodes 10", got.bs, 150<<10); err != nil || !strings.Contains(out, want) {
		t.Fatalf("jfsctl settings set: %v %s %s, want %q", err, out, errOut, want)
	}
	var set *jfspb.SetSettingsResponse
	if err := writeFile(ctx, c, "g", data); err == nil || !strings.Contains(err.Error(), syscall.ENOSPC.Error()) {
		t.Fatalf("writing 100 KiB past a 150 KiB quota: %v, want ENOSPC", err)
	}
	if st, err := c.StatFS(ctx, &jfspb.StatFSRequest{}); err != nil || st.TotalBytes != 150<<10 || st.TotalInodes != 10 {
		t.Fatalf("statfs after the change: %v %v", err, st)
	}
	// The block size cannot change under stored data.
	err = c.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) (err error) {
		set, err = a.SetSettings(ctx, &jfspb.SetSettingsRequest{Settings: &jfspb.Settings{BlockSize: 2 * got.bs}})
		return err
	})
	if err != nil || syscall.Errno(set.Errno) != syscall.EBUSY {
		t.Fatalf("changing the block size: %v %v, want EBUSY", err, set)
	}
	waitSameDigest(t, c, pc.procs)
	if got := mustReadFile(t, c, "f"); string(got) != string(data) {
		t.Fatal("f reads back different data")
	}
}

// TestStatFSReportsLeaderDisk: with no capacity set, statfs (and df on a
// mount) reports the free space of the leader's data directory, not a
// made-up petabyte.
func TestStatFSReportsLeaderDisk(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	leader := pc.leader(t, c)
	st, err := c.StatFS(ctx, &jfspb.StatFSRequest{})
	if err != nil || st.Errno != 0 {
		t.Fatalf("statfs: %v %v", err, st)
	}
	var disk syscall.Statfs_t
	if err := syscall.Statfs(leader.dataDir, &disk); err != nil {
		t.Fatal(err)
	}
	free := disk.Bavail * uint64(disk.Bsize)
	// Others share the disk: allow it to move by 1 GiB meanwhile.
	near := func(a, b uint64) bool { return max(a, b)-min(a, b) <= 1<<30 }
	if !near(st.FreeBytes, free) || st.TotalBytes != st.UsedBytes+st.FreeBytes {
		t.Errorf("statfs reports %d bytes total, %d free; the leader's disk has %d free", st.TotalBytes, st.FreeBytes, free)
	}
	if st.TotalInodes > st.UsedInodes+disk.Ffree+1<<20 {
		t.Errorf("statfs reports %d inodes; the leader's disk has %d free", st.TotalInodes, disk.Ffree)
	}

	m := startMount(t, pc)
	var fs syscall.Statfs_t
	if err := syscall.Statfs(m.dir, &fs); err != nil {
		t.Fatal(err)
	}
	if got := fs.Bavail * uint64(fs.Bsize); !near(got, free) {
		t.Errorf("df on the mount shows %d bytes available; the leader's disk has %d free", got, free)
	}
}
