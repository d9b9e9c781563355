package integration

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// startProcClusterEach is startProcCluster with flags of each node's own:
// extra(i) for node i (from 0).
func startProcClusterEach(t *testing.T, n int, extra func(i int) []string) *procCluster {
	t.Helper()
	base := t.TempDir()
	pc := &procCluster{t: t}
	var initial []string
	for i := 1; i <= n; i++ {
		p := &proc{id: fmt.Sprintf("n%d", i), raftAddr: freeAddr(t), apiAddr: freeAddr(t), metricsAddr: freeAddr(t)}
		p.dataDir = filepath.Join(base, p.id)
		p.logPath = filepath.Join(base, p.id+".log")
		initial = append(initial, p.id+"="+p.raftAddr)
		pc.procs = append(pc.procs, p)
	}
	for i, p := range pc.procs {
		p.args = append([]string{"--id", p.id, "--data-dir", p.dataDir, "--raft-addr", p.raftAddr,
			"--addr", p.apiAddr, "--initial-cluster", strings.Join(initial, ","), "--log-level", "info",
			"--metrics-addr", p.metricsAddr}, extra(i)...)
		pc.start(p)
	}
	pc.mustAllUp()
	t.Cleanup(func() {
		for _, p := range pc.procs {
			pc.kill(p)
		}
		if t.Failed() {
			for _, p := range pc.procs {
				b, _ := os.ReadFile(p.logPath)
				t.Logf("---- log of %s ----\n%s", p.id, tail(b, 60))
			}
		}
	})
	return pc
}

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

// TestJfsdBadSettingsFlags: settings flags out of range are refused before
// anything is created.
func TestJfsdBadSettingsFlags(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	base := []string{"--id", "n1", "--data-dir", dataDir}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--block-size", "3K"}, `--block-size "3K"`},
		{[]string{"--block-size", "2K"}, `--block-size "2K"`},
		{[]string{"--block-size", "8M"}, `--block-size "8M"`},
		{[]string{"--block-size", "lots"}, `--block-size "lots"`},
		{[]string{"--capacity", "12X"}, `--capacity`},
		{[]string{"--capacity", "99999999P"}, `too large`},
	} {
		out, err := exec.Command(filepath.Join(binDir, "jfsd"), append(base, tc.args...)...).CombinedOutput()
		if err == nil {
			t.Errorf("jfsd %v: exit 0, want an error", tc.args)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("jfsd %v: output %q, want it to mention %q", tc.args, out, tc.want)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("a rejected command created the data dir (%v)", err)
	}
}
