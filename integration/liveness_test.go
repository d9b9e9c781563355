package integration

import (
	"context"
	"os"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/client"
)

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

// TestSessionOutlivesClusterOutage: while no node runs, no client can
// heartbeat, so that time is not held against a session. After the whole
// cluster was down for longer than TTL + an election timeout, the mount's
// session lives on: a file it held open is still writable.
func TestSessionOutlivesClusterOutage(t *testing.T) {
	const ttl = 3 * time.Second
	pc := startProcCluster(t, 3, "--session-ttl", ttl.String())
	c := pc.client(t)
	m := startMount(t, pc)
	f, err := os.OpenFile(m.path("f"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("before ")); err != nil {
		t.Fatal(err)
	}
	for _, p := range pc.procs {
		pc.stop(p)
	}
	// The outage itself is what is tested: longer than TTL + the election
	// timeout (1.5s) + the grace, with nobody in office.
	time.Sleep(2*ttl + 2*time.Second)
	for _, p := range pc.procs {
		pc.start(p)
	}
	pc.leader(t, c)
	if _, err := f.Write([]byte("after")); err != nil {
		t.Fatalf("write through a file opened before the outage: %v (the session was expired)", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	got, err := os.ReadFile(m.path("f"))
	if err != nil || string(got) != "before after" {
		t.Fatalf("read back %q, %v", got, err)
	}
}
