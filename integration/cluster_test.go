package integration

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

func mustRegister(t *testing.T, c *client.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Register(ctx, "itest", "/itest", 1, "test")
	if err != nil || r.Errno != 0 {
		t.Fatalf("register: %v errno %d", err, r.GetErrno())
	}
}

// writeFile creates name in the root and writes data to it through c.
func writeFile(ctx context.Context, c *client.Client, name string, data []byte) error {
	return writeFileFlags(ctx, c, name, data, 0)
}

// writeFileFlags is writeFile with open flags added to O_CREAT|O_RDWR.
func writeFileFlags(ctx context.Context, c *client.Client, name string, data []byte, flags int) error {
	cr, err := c.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte(name), Mode: 0o644,
		Flags: uint32(syscall.O_CREAT | syscall.O_RDWR | flags), Fh: 1})
	if err != nil {
		return err
	}
	if err := client.Errno(cr.Errno); err != nil {
		return fmt.Errorf("create %s: %w", name, err)
	}
	wr, err := c.Write(ctx, &jfspb.WriteRequest{Ino: cr.Attr.Ino, Data: data, Fh: 1})
	if err != nil {
		return err
	}
	if err := client.Errno(wr.Errno); err != nil {
		return fmt.Errorf("write %s: %w", name, err)
	}
	rr, err := c.Release(ctx, &jfspb.ReleaseRequest{Ino: cr.Attr.Ino, Fh: 1})
	if err != nil {
		return err
	}
	return client.Errno(rr.Errno)
}

// mustReadFile looks name up in the root and returns its whole content.
func mustReadFile(t *testing.T, c *client.Client, name string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	lr, err := c.Lookup(ctx, &jfspb.LookupRequest{Parent: 1, Name: []byte(name)})
	if err != nil || lr.Errno != 0 {
		t.Fatalf("lookup %s: %v errno %d", name, err, lr.GetErrno())
	}
	rr, err := c.Read(ctx, &jfspb.ReadRequest{Ino: lr.Attr.Ino, Size: uint32(lr.Attr.Size)})
	if err != nil || rr.Errno != 0 {
		t.Fatalf("read %s: %v errno %d", name, err, rr.GetErrno())
	}
	return rr.Data
}

func content(i int) []byte {
	return bytes.Repeat([]byte(fmt.Sprintf("file %d;", i)), 100+i)
}

// TestKillLeaderKeepsAcknowledgedWrites: a writer goes on while the leader
// is killed with SIGKILL; it sees no error, and every write it was told
// succeeded is there afterwards, and again after the whole cluster restarts.
func TestKillLeaderKeepsAcknowledgedWrites(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegister(t, c)

	var acked []int
	var maxGap time.Duration
	last := time.Now()
	const killAt = 35 // the leader is killed once this write is acknowledged
	kill := make(chan struct{})
	writeN := func(from, to int) {
		for i := from; i < to; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), 45*time.Second)
			err := writeFile(ctx, c, fmt.Sprintf("f%d", i), content(i))
			cancel()
			if err != nil {
				t.Fatalf("write f%d: %v", i, err)
			}
			acked = append(acked, i)
			maxGap = max(maxGap, time.Since(last))
			last = time.Now()
			if i == killAt {
				close(kill)
			}
		}
	}
	writeN(0, 30)
	leader := pc.leader(t, c)
	done := make(chan struct{})
	go func() {
		defer close(done)
		<-kill // in the middle of the writes below
		pc.kill(leader)
	}()
	maxGap = 0
	writeN(30, 90)
	<-done
	t.Logf("killed leader %s; longest pause between acknowledged writes: %v", leader.id, maxGap)
	if maxGap > 20*time.Second {
		t.Errorf("writes paused %v across the failover", maxGap)
	}
	newLeader := pc.leader(t, c)
	if newLeader == leader {
		t.Fatalf("killed node %s still reported as leader", leader.id)
	}
	for _, i := range acked {
		if got := mustReadFile(t, c, fmt.Sprintf("f%d", i)); !bytes.Equal(got, content(i)) {
			t.Fatalf("f%d after failover: %d bytes, want %d", i, len(got), len(content(i)))
		}
	}

	// The killed node restarts and catches up; then all three stop cleanly
	// and start again with all their data.
	pc.start(leader)
	writeN(90, 100)
	c.Close()
	for _, p := range pc.procs {
		pc.stop(p)
	}
	for _, p := range pc.procs {
		pc.start(p)
	}
	c2 := pc.client(t)
	for _, i := range acked {
		if got := mustReadFile(t, c2, fmt.Sprintf("f%d", i)); !bytes.Equal(got, content(i)) {
			t.Fatalf("f%d after restart: %d bytes, want %d", i, len(got), len(content(i)))
		}
	}
}

// TestJfsctl drives the operator's tool against a real cluster.
func TestJfsctl(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	first := pc.leader(t, c)

	// Every member's API address becomes known (followers announce theirs).
	var st struct {
		LeaderID string `json:"leader_id"`
		Members  []struct {
			ID, State string
			APIAddr   string `json:"api_addr"`
		} `json:"members"`
	}
	mustJfsctlJSON(t, pc.servers(), 20*time.Second, &st, func() bool {
		known := 0
		for _, m := range st.Members {
			if m.APIAddr != "" && m.State != "unreachable" {
				known++
			}
		}
		return known == 3
	}, "cluster", "status", "--json")
	if st.LeaderID != first.id {
		t.Fatalf("status says leader %s, the leader is %s", st.LeaderID, first.id)
	}
	leaders := 0
	for _, m := range st.Members {
		if m.State == "Leader" {
			leaders++
		}
	}
	if leaders != 1 {
		t.Fatalf("%d members report Leader", leaders)
	}
	out, _, err := jfsctl(t, pc.servers(), "cluster", "status")
	if err != nil || !strings.Contains(out, "leader "+first.id) {
		t.Fatalf("cluster status: %v\n%s", err, out)
	}

	// Move leadership to a named node.
	target := pc.procs[0]
	if target == first {
		target = pc.procs[1]
	}
	if out, errOut, err := jfsctl(t, pc.servers(), "leader", "transfer", target.id); err != nil {
		t.Fatalf("leader transfer: %v: %s%s", err, out, errOut)
	}
	if got := pc.leader(t, c); got != target {
		t.Fatalf("after transfer to %s the leader is %s", target.id, got.id)
	}

	// Bad input: clear errors, non-zero exit, nothing changed.
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"members", "add", "n9", "not-an-address", "127.0.0.1:1"}, "not-an-address"},
		{[]string{"members", "add", "n9"}, "wrong number of arguments"},
		{[]string{"members", "remove", "nobody"}, `no member "nobody"`},
		{[]string{"leader", "transfer", "nobody"}, `no member "nobody"`},
	} {
		_, errOut, err := jfsctl(t, pc.servers(), tc.args...)
		if err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("jfsctl %v: err %v, stderr %q, want it to mention %q", tc.args, err, errOut, tc.want)
		}
	}
	_, errOut, err := jfsctl(t, []string{"nohostport"}, "cluster", "status")
	if err == nil || !strings.Contains(errOut, "nohostport") {
		t.Errorf("bad --servers: err %v stderr %q", err, errOut)
	}
}

// TestMembersAddRemove: a fourth node started without --initial-cluster is
// added with jfsctl, catches up with the data, and is removed again.
func TestMembersAddRemove(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	for i := 0; i < 20; i++ {
		if err := writeFile(ctx, c, fmt.Sprintf("f%d", i), content(i)); err != nil {
			t.Fatal(err)
		}
	}
	n4 := &proc{id: "n4", raftAddr: freeAddr(t), apiAddr: freeAddr(t), metricsAddr: freeAddr(t)}
	n4.dataDir = t.TempDir()
	n4.logPath = n4.dataDir + ".log"
	n4.args = []string{"--id", "n4", "--data-dir", n4.dataDir, "--raft-addr", n4.raftAddr, "--addr", n4.apiAddr, "--metrics-addr", n4.metricsAddr}
	pc.procs = append(pc.procs, n4)
	pc.start(n4)
	pc.mustAllUp() // n4 listens on its metrics address, which jfsd binds last

	if out, errOut, err := jfsctl(t, pc.servers()[:3], "members", "add", "n4", n4.raftAddr, n4.apiAddr); err != nil {
		t.Fatalf("members add: %v: %s%s", err, out, errOut)
	}
	// n4 applies everything the leader has.
	leader := pc.leader(t, c)
	want := leader.metrics(t)["jfsd_fsm_applied_index"]
	deadline := time.Now().Add(20 * time.Second)
	for n4.metrics(t)["jfsd_fsm_applied_index"] < want {
		if time.Now().After(deadline) {
			t.Fatalf("n4 applied %v, leader %v", n4.metrics(t)["jfsd_fsm_applied_index"], want)
		}
		time.Sleep(100 * time.Millisecond)
	}
	out, _, err := jfsctl(t, pc.servers(), "cluster", "status")
	if err != nil || !strings.Contains(out, n4.apiAddr) {
		t.Fatalf("cluster status after add: %v\n%s", err, out)
	}
	// A client that knows only n4 finds the leader through it.
	only4, err := client.New(client.Config{Servers: []string{n4.apiAddr}})
	if err != nil {
		t.Fatal(err)
	}
	defer only4.Close()
	if got := mustReadFile(t, only4, "f7"); !bytes.Equal(got, content(7)) {
		t.Fatalf("f7 through n4: %d bytes", len(got))
	}

	if out, errOut, err := jfsctl(t, pc.servers()[:3], "members", "remove", "n4"); err != nil {
		t.Fatalf("members remove: %v: %s%s", err, out, errOut)
	}
	out, _, err = jfsctl(t, pc.servers()[:3], "cluster", "status", "--json")
	if err != nil || strings.Contains(out, `"n4"`) {
		t.Fatalf("n4 still listed after remove: %v\n%s", err, out)
	}
}
