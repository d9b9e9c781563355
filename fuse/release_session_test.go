package fuse

import (
	"context"
	"net"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// sessionsMeta is a leader that numbers sessions 1, 2, ... and records the
// session each release arrives under.
type sessionsMeta struct {
	jfspb.UnimplementedMetaServer
	mu       sync.Mutex
	sessions uint64
	released map[uint64]uint64 // fh -> the session its release named
}

func (s *sessionsMeta) Register(ctx context.Context, r *jfspb.RegisterRequest) (*jfspb.RegisterResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sessions++
	return &jfspb.RegisterResponse{Session: s.sessions, TtlMs: 60000}, nil
}

func (s *sessionsMeta) Release(ctx context.Context, r *jfspb.ReleaseRequest) (*jfspb.ReleaseResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.released[r.Fh] = r.GetHeader().GetSession()
	return &jfspb.ReleaseResponse{}, nil
}

func (s *sessionsMeta) ReleaseBatch(ctx context.Context, r *jfspb.ReleaseBatchRequest) (*jfspb.ReleaseBatchResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, rel := range r.Releases {
		s.released[rel.Fh] = r.GetHeader().GetSession()
	}
	return &jfspb.ReleaseBatchResponse{Errnos: make([]int32, len(r.Releases))}, nil
}

// TestReleaseNamesItsSession: a release of a file opened under an earlier
// session goes out under that session, never under the current one, where
// it would end an open of the current session. (The mount's check for
// stale sessions runs before the request is sent, and a renewal can come
// in between, so the request itself must carry the file's session.)
func TestReleaseNamesItsSession(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &sessionsMeta{released: map[uint64]uint64{}}
	g := grpc.NewServer()
	jfspb.RegisterMetaServer(g, srv)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	c, err := client.New(client.Config{Servers: []string{l.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	for want := uint64(1); want <= 2; want++ { // the second one: a renewal
		if r, err := c.Register(context.Background(), "h", "/m", 1, "test"); err != nil || r.Session != want {
			t.Fatalf("register: %v %v, want session %d", err, r, want)
		}
	}
	fs := New(c, Options{}) // no session keeper: stale() lets every release through
	fs.sendRelease(pendingRelease{req: &jfspb.ReleaseRequest{Ino: 5, Fh: 10, ReleaseFlock: true}, session: 1})
	fs.sendReleases([]pendingRelease{
		{req: &jfspb.ReleaseRequest{Ino: 5, Fh: 11}, session: 1},
		{req: &jfspb.ReleaseRequest{Ino: 5, Fh: 12}, session: 2},
		{req: &jfspb.ReleaseRequest{Ino: 5, Fh: 13}, session: 0}, // not known: the current one
	})
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for fh, want := range map[uint64]uint64{10: 1, 11: 1, 12: 2, 13: 2} {
		if got, ok := srv.released[fh]; !ok || got != want {
			t.Errorf("release of fh %d arrived under session %d (sent: %v), want %d", fh, got, ok, want)
		}
	}
}
