package integration

import (
	"context"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/client"
)

// TestJfsdTimingFlags: raft timings that cannot work together are refused
// with an error naming the flags.
func TestJfsdTimingFlags(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	base := []string{"--id", "n1", "--data-dir", dataDir}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--heartbeat-timeout", "500ms"}, "--leader-lease-timeout 1s must not exceed --heartbeat-timeout 500ms"},
		{[]string{"--heartbeat-timeout", "2s", "--election-timeout", "1s", "--leader-lease-timeout", "1s"}, "--election-timeout 1s must be at least --heartbeat-timeout 2s"},
		{[]string{"--leader-lease-timeout", "1ms"}, "--leader-lease-timeout 1ms: must be at least 10ms"},
		{[]string{"--commit-timeout", "0s"}, "--commit-timeout 0s: must be at least 1ms"},
	} {
		args := append(append([]string{}, base...), tc.args...)
		out, err := exec.Command(filepath.Join(binDir, "jfsd"), args...).CombinedOutput()
		if err == nil {
			t.Errorf("jfsd %v: exit 0, want an error", tc.args)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("jfsd %v: output %q, want it to mention %q", tc.args, out, tc.want)
		}
	}
}

func mustStartSession(t *testing.T, c *client.Client) *client.Session {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := c.StartSession(ctx, client.SessionInfo{Host: "liveness", MountPoint: "/" + t.Name(), Pid: 1, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		s.Close(ctx)
	})
	return s
}

// TestSessionFollowsClusterTTL: a client of a cluster restarted with a
// shorter --session-ttl learns the new TTL and heartbeats often enough to
// keep its session, instead of losing it at every TTL.
func TestSessionFollowsClusterTTL(t *testing.T) {
	pc := startProcCluster(t, 3, "--session-ttl", "30s")
	c := pc.client(t)
	sess := mustStartSession(t, c)
	if got := sess.TTL(); got != 30*time.Second {
		t.Fatalf("TTL %v, want the cluster's 30s", got)
	}

	for _, p := range pc.procs {
		pc.stop(p)
	}
	for _, p := range pc.procs {
		p.args[len(p.args)-1] = "3s" // the value of --session-ttl
		pc.start(p)
	}
	pc.mustAllUp()

	// The next heartbeat (within 10s) or re-registration announces 3s.
	if !waitFor(60*time.Second, func() bool { return sess.TTL() == 3*time.Second }) {
		t.Fatalf("TTL still %v a minute after the cluster restarted with --session-ttl 3s", sess.TTL())
	}
	// From then on the session lives: watch it for four TTLs.
	id := sess.ID()
	end := time.Now().Add(12 * time.Second)
	for time.Now().Before(end) {
		if got := sess.ID(); got != id {
			t.Fatalf("session %d was replaced by %d: heartbeats do not keep up with the 3s TTL", id, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSessionIDOneSource: the session keeper and the requests of its client
// use one session id. A registration (as the keeper makes when the cluster
// ended the session) changes both at once; two copies could disagree for a
// moment, and an open made in that moment was tagged with a session it did
// not belong to and failed with EIO for ever.
func TestSessionIDOneSource(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	sess := mustStartSession(t, c)
	if sess.ID() != c.Session() {
		t.Fatalf("keeper says session %d, requests carry %d", sess.ID(), c.Session())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Register(ctx, "liveness", "/again", 1, "test")
	if err != nil || r.Errno != 0 {
		t.Fatalf("register: %v errno %d", err, r.GetErrno())
	}
	if got := sess.ID(); got != r.Session || c.Session() != r.Session {
		t.Fatalf("after registering session %d: keeper says %d, requests carry %d", r.Session, got, c.Session())
	}
}
