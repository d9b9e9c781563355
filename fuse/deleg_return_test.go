package fuse

import (
	"context"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// returnsMeta is a leader that records every DelegReturn and answers it
// UNAVAILABLE while failing is set (an answer lost: the client cannot tell
// whether it was applied); its SetLk never answers.
type returnsMeta struct {
	jfspb.UnimplementedMetaServer
	mu      sync.Mutex
	failing bool
	returns []*jfspb.DelegReturnRequest
}

func (s *returnsMeta) Register(ctx context.Context, r *jfspb.RegisterRequest) (*jfspb.RegisterResponse, error) {
	return &jfspb.RegisterResponse{Session: 1, TtlMs: 60000}, nil
}

func (s *returnsMeta) DelegReturn(ctx context.Context, r *jfspb.DelegReturnRequest) (*jfspb.DelegReturnResponse, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.returns = append(s.returns, r)
	if s.failing {
		return nil, status.Error(codes.Unavailable, "answer lost")
	}
	return &jfspb.DelegReturnResponse{Returned: true}, nil
}

func (s *returnsMeta) SetLk(ctx context.Context, r *jfspb.SetLkRequest) (*jfspb.SetLkResponse, error) {
	return nil, status.Error(codes.Unavailable, "answer lost")
}

func (s *returnsMeta) sent() []*jfspb.DelegReturnRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*jfspb.DelegReturnRequest(nil), s.returns...)
}

// longLease is a session with id 1 whose lease never runs out.
type longLease struct{}

func (longLease) ID() uint64 { return 1 }
func (longLease) LeaseUntil() (uint64, time.Time) {
	return 1, time.Now().Add(time.Hour)
}

// mustDelegFS starts a returnsMeta and a delegating FS on a client that
// gives a request up quickly.
func mustDelegFS(t *testing.T) (*FS, *returnsMeta) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &returnsMeta{}
	g := grpc.NewServer()
	jfspb.RegisterMetaServer(g, srv)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	c, err := client.New(client.Config{Servers: []string{l.Addr().String()}, RetryFor: 50 * time.Millisecond,
		MinBackoff: time.Millisecond, MaxBackoff: 5 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Register(context.Background(), "h", "/m", 1, "test"); err != nil {
		t.Fatal(err)
	}
	fs := New(c, Options{Session: longLease{}, LockDelegation: true})
	if fs.deleg == nil {
		t.Fatal("no delegation table")
	}
	t.Cleanup(func() { close(fs.deleg.stopped) })
	return fs, srv
}

// TestDelegUnknownReturnEndsLocalAnswers: once a return was sent, the
// cluster may have taken the locks (and granted them to another session)
// even when its answer did not come. The mount used to keep the
// delegation live after such a failure and go on granting locks locally,
// beside the other session's; it must send the return again (naming the
// same delegation) before anything else and answer nothing locally.
// Releases meanwhile drop the lock from the table the return carries.
func TestDelegUnknownReturnEndsLocalAnswers(t *testing.T) {
	fs, srv := mustDelegFS(t)
	const ino = 7
	wr := jfspb.LockType_LOCK_TYPE_WRITE
	fs.deleg.install(ino, 1, 41, func(e *delegIno) {
		e.setLk(lkIn(ino, 1, 10, syscall.F_WRLCK, 0, 9, 100), wr, false, false)
		e.flock(lkIn(ino, 0, 11, syscall.F_WRLCK, 0, 0, 100), wr, false)
	})
	srv.mu.Lock()
	srv.failing = true
	srv.mu.Unlock()
	// A blocking request that must wait gives the delegation back first;
	// the return's answer is lost.
	if st, ok := fs.localLk(lkIn(ino, 2, 12, syscall.F_WRLCK, 5, 5, 200), wr, true, false, func() {}); !ok || st.Ok() {
		t.Fatalf("blocking request behind a return that failed: %v (answered %v)", st, ok)
	}
	if e := fs.deleg.enter(ino); e != nil {
		e.mu.Unlock()
		t.Fatal("a delegation whose return may have been applied still answers locally")
	}
	// The close of fh 11 frees its flock: dropped here, and sent on.
	if fs.releaseDelegated(pendingRelease{req: &jfspb.ReleaseRequest{Ino: ino, Fh: 11, ReleaseFlock: true}, session: 1}) {
		t.Fatal("a release during an outstanding return was not sent to the cluster")
	}
	srv.mu.Lock()
	srv.failing = false
	srv.mu.Unlock()
	if e := fs.deleg.enter(ino); e != nil {
		e.mu.Unlock()
		t.Fatal("answered locally after the return went through")
	}
	rs := srv.sent()
	if len(rs) < 3 {
		t.Fatalf("%d returns sent, want the first, a retry at the next lock call, and the one that went through", len(rs))
	}
	for i, r := range rs {
		if r.DelegSeq != 41 || r.Ino != ino {
			t.Fatalf("return %d names delegation %d of inode %d, want 41 of %d", i, r.DelegSeq, r.Ino, ino)
		}
	}
	if last := rs[len(rs)-1].Locks; len(last) != 1 || last[0].Flock || last[0].Owner != 1 {
		t.Fatalf("the return that went through carries %v, want owner 1's POSIX lock only", last)
	}
	if _, ok := fs.deleg.inos[ino]; ok {
		t.Fatal("the delegation is still recorded after its return")
	}
}

// TestDelegLostGrantGivenBack: the answer to a lock request that offered
// to take the delegation never came, so the cluster may have delegated the
// inode by it without the mount knowing; the mount would then never answer
// its recall and another session's lock request would wait as long as the
// session lives. The mount gives back the delegation that request may have
// made, by its seq, before it reports the failure.
func TestDelegLostGrantGivenBack(t *testing.T) {
	fs, srv := mustDelegFS(t)
	if st := fs.setLk(lkIn(7, 1, 10, syscall.F_WRLCK, 0, 9, 100), false, nil); st.Ok() {
		t.Fatalf("lock request with no answer: %v", st)
	}
	rs := srv.sent()
	if len(rs) == 0 {
		t.Fatal("no return of the delegation the lost request may have made")
	}
	if rs[0].Ino != 7 || rs[0].DelegSeq == 0 || len(rs[0].Locks) != 0 || rs[0].GetHeader().GetSession() != 1 {
		t.Fatalf("return %v, want inode 7, the request's seq, no lock, session 1", rs[0])
	}
}
