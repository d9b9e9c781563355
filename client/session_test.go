package client

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// slowBeatMeta is a leader that answers heartbeats only when the test lets
// it, as a real one answers only once a SessionsAlive record is committed.
type slowBeatMeta struct {
	jfspb.UnimplementedMetaServer
	ttlMs     int64
	entered   chan struct{} // one per heartbeat as it arrives
	release   chan struct{} // closed by the test: answer heartbeats
	cancelled chan struct{} // one per heartbeat the client gave up on
}

func (s *slowBeatMeta) Register(ctx context.Context, r *jfspb.RegisterRequest) (*jfspb.RegisterResponse, error) {
	return &jfspb.RegisterResponse{Session: 7, TtlMs: s.ttlMs}, nil
}

func (s *slowBeatMeta) Heartbeat(ctx context.Context, r *jfspb.HeartbeatRequest) (*jfspb.HeartbeatResponse, error) {
	s.entered <- struct{}{}
	select {
	case <-s.release:
		return &jfspb.HeartbeatResponse{TtlMs: s.ttlMs}, nil
	case <-ctx.Done():
		s.cancelled <- struct{}{}
		return nil, ctx.Err()
	}
}

func (s *slowBeatMeta) CloseSession(ctx context.Context, r *jfspb.CloseSessionRequest) (*jfspb.CloseSessionResponse, error) {
	return &jfspb.CloseSessionResponse{}, nil
}

// TestSlowHeartbeatKeepsLeader: a heartbeat the leader answers later than
// the client's AttemptTimeout (but well within the time the leader may
// take, a fraction of the TTL) is waited for, and the leader is not passed
// over as if it were unreachable.
func TestSlowHeartbeatKeepsLeader(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowBeatMeta{ttlMs: 6000, entered: make(chan struct{}, 100), release: make(chan struct{}),
		cancelled: make(chan struct{}, 100)}
	g := grpc.NewServer()
	jfspb.RegisterMetaServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	const attempt = 50 * time.Millisecond
	c, err := New(Config{Servers: []string{l.Addr().String()}, AttemptTimeout: attempt})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sess, err := c.StartSession(ctx, SessionInfo{Host: "h", MountPoint: "/m", Pid: 1, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close(context.Background()) })

	select {
	case <-s.entered:
	case <-ctx.Done():
		t.Fatal("no heartbeat within 30s")
	}
	// The leader takes twenty attempt timeouts, a sixth of the TTL, to
	// answer: a healthy leader's commit of its alive record.
	select {
	case <-s.cancelled:
		t.Fatalf("the client gave up on a heartbeat after less than %v; the TTL is %v", 20*attempt, sess.TTL())
	case <-time.After(20 * attempt):
	}
	close(s.release)
	select {
	case <-s.entered: // the next heartbeat: the first one was answered
	case <-s.cancelled:
		t.Fatal("the client gave up on a heartbeat the leader was about to answer")
	case <-ctx.Done():
		t.Fatal("no second heartbeat within 30s")
	}
	if c.suspected(l.Addr().String()) {
		t.Fatal("the leader is passed over after a slow heartbeat")
	}
}

// TestSessionLease: the lease starts at the registration's send time, not
// its answer, and a heartbeat extends it from its own send time: never
// later than the cluster could expire the session.
func TestSessionLease(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &slowBeatMeta{ttlMs: 3000, entered: make(chan struct{}, 100), release: make(chan struct{}),
		cancelled: make(chan struct{}, 100)}
	g := grpc.NewServer()
	jfspb.RegisterMetaServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	c, err := New(Config{Servers: []string{l.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	before := time.Now()
	sess, err := c.StartSession(ctx, SessionInfo{Host: "h", MountPoint: "/m", Pid: 1, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sess.Close(context.Background()) })
	id, first := sess.LeaseUntil()
	if id != 7 || first.IsZero() || first.After(before.Add(3*time.Second)) || !first.After(before) {
		t.Fatalf("lease after registration: session %d until %v; registration sent after %v, TTL 3s", id, first, before)
	}
	// A heartbeat on its way extends nothing until it is answered.
	select {
	case <-s.entered:
	case <-ctx.Done():
		t.Fatal("no heartbeat within 30s")
	}
	beatSent := time.Now() // after the heartbeat was sent
	if _, until := sess.LeaseUntil(); !until.Equal(first) {
		t.Fatalf("an unanswered heartbeat moved the lease from %v to %v", first, until)
	}
	close(s.release)
	select {
	case <-s.entered: // the next heartbeat: the first one was answered
	case <-ctx.Done():
		t.Fatal("no second heartbeat within 30s")
	}
	if _, until := sess.LeaseUntil(); !until.After(first) || until.After(beatSent.Add(3*time.Second)) {
		t.Fatalf("lease after an answered heartbeat: %v (before: %v; the heartbeat was sent before %v)", until, first, beatSent)
	}
}
