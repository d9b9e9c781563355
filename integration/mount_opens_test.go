package integration

import (
	"bytes"
	"context"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// openFilesOnLeader is the leader's count of open files over every session.
func openFilesOnLeader(t *testing.T, c *client.Client) uint64 {
	t.Helper()
	var resp *jfspb.ListSessionsResponse
	err := c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) (err error) {
		resp, err = a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
		return err
	})
	if err != nil {
		t.Fatalf("list sessions: %v", err)
	}
	var n uint64
	for _, s := range resp.Sessions {
		n += s.OpenFiles
	}
	return n
}

// usedBytes is the cluster's statfs count of stored bytes.
func usedBytes(t *testing.T, c *client.Client) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := c.StatFS(ctx, &jfspb.StatFSRequest{})
	if err != nil || st.Errno != 0 {
		t.Fatalf("statfs: %v %v", err, st)
	}
	return st.UsedBytes
}

// TestMountReadOnlyOpenWritesNoLog: opening a file for reading on a mount,
// reading it and closing it adds no entry to the raft log; the leader
// keeps the open in memory. Before, each open and each (batch of)
// release was an entry.
func TestMountReadOnlyOpenWritesNoLog(t *testing.T) {
	// No replica checks and heartbeats far apart: their entries would
	// move the commit index that the test watches.
	pc := startProcCluster(t, 3, "--integrity-check", "0", "--session-ttl", "10m")
	m := startMount(t, pc)
	c := pc.client(t)
	data := []byte("read me, do not log me")
	mustWriteFile(t, m.path("f"), data)
	mustReadPath(t, m.path("f")) // the first read moves the atime (relatime): an entry
	mustEventually(t, 30*time.Second, "the writer's close reaches the leader", func() bool { return openFilesOnLeader(t, c) == 0 })
	_, before := mustQuietLeader(t, pc, c)

	const rounds = 20
	buf := make([]byte, 100)
	for range rounds {
		fd := mustOpen(t, m.path("f"), syscall.O_RDONLY)
		n, err := syscall.Pread(fd, buf, 0)
		if err != nil || !bytes.Equal(buf[:n], data) {
			t.Fatalf("pread: %q %v", buf[:n], err)
		}
		if err := syscall.Close(fd); err != nil {
			t.Fatal(err)
		}
	}
	// Releases are sent in the background; all have arrived when the
	// leader counts no open file.
	mustEventually(t, 30*time.Second, "every close reaches the leader", func() bool { return openFilesOnLeader(t, c) == 0 })
	_, after := mustQuietLeader(t, pc, c)
	if after != before {
		t.Fatalf("the commit index moved from %d to %d for %d read-only opens, reads and closes", before, after, rounds)
	}
}

// TestMountUnlinkedOpenFileSurvivesLeaderKill: a file unlinked while open
// on a mount stays readable through a SIGKILL of the leader (the new
// leader learns of the open from the mount's report, not from the log),
// and its data is freed once it is closed. The replicas end equal, the
// killed one included after its restart.
func TestMountUnlinkedOpenFileSurvivesLeaderKill(t *testing.T) {
	pc := startProcCluster(t, 3, "--block-size", "4K")
	m := startMount(t, pc)
	c := pc.client(t)
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i*7%251) + 1
	}
	mustWriteFile(t, m.path("f"), data)
	fd := mustOpen(t, m.path("f"), syscall.O_RDONLY)
	closed := false
	defer func() {
		if !closed {
			syscall.Close(fd)
		}
	}()
	if err := os.Remove(m.path("f")); err != nil {
		t.Fatal(err)
	}
	readAll := func(when string) {
		t.Helper()
		got := make([]byte, len(data)+1)
		n, err := syscall.Pread(fd, got, 0)
		if err != nil || !bytes.Equal(got[:n], data) {
			t.Fatalf("read of the unlinked file %s: %d bytes, %v", when, n, err)
		}
	}
	readAll("before the kill")
	if u := usedBytes(t, c); u < uint64(len(data)) {
		t.Fatalf("used bytes %d while the unlinked file is open, want at least %d", u, len(data))
	}

	leader := pc.leader(t, c)
	pc.kill(leader)
	if got := pc.leader(t, c); got == leader {
		t.Fatalf("killed node %s still leads", leader.id)
	}
	readAll("after the kill")
	// The mount reports its open file at its next heartbeat; from then on
	// the new leader may free orphans, and must leave this one.
	mustEventually(t, 60*time.Second, "the mount reports its open file to the new leader",
		func() bool { return openFilesOnLeader(t, c) == 1 })
	readAll("after the report")
	if u := usedBytes(t, c); u < uint64(len(data)) {
		t.Fatalf("used bytes %d after the report, want at least %d", u, len(data))
	}

	closed = true
	if err := syscall.Close(fd); err != nil {
		t.Fatal(err)
	}
	mustEventually(t, 60*time.Second, "the closed orphan's data is freed", func() bool { return usedBytes(t, c) == 0 })
	pc.start(leader)
	waitSameDigest(t, c, pc.procs)
}
