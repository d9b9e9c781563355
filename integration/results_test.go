package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// storedResults asks the leader how many results it keeps for session sid.
func storedResults(t *testing.T, c *client.Client, sid uint64) uint64 {
	t.Helper()
	var resp *jfspb.ListSessionsResponse
	err := c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) (err error) {
		resp, err = a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
		return err
	})
	if err != nil {
		t.Fatalf("list sessions: %v", err)
	}
	for _, s := range resp.Sessions {
		if s.Id == sid {
			return s.StoredResults
		}
	}
	t.Fatalf("session %d is not listed", sid)
	return 0
}

// TestStoredResultsBoundedDuringLockWait keeps a F_SETLKW of session b
// blocked while b writes many times: the results b has received must be
// forgotten although the lock request, older than all of them, is still in
// flight. Then the wait ends and its own result arrives.
func TestStoredResultsBoundedDuringLockWait(t *testing.T) {
	pc := startProcCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	a, b := pc.client(t), pc.client(t)
	if r, err := a.Register(ctx, "host-a", "/mnt/a", 11, "test"); err != nil || r.Errno != 0 {
		t.Fatalf("register a: %v %v", err, r)
	}
	rb, err := b.Register(ctx, "host-b", "/mnt/b", 22, "test")
	if err != nil || rb.Errno != 0 {
		t.Fatalf("register b: %v %v", err, rb)
	}
	cr, err := a.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("lock"), Mode: 0o644,
		Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
	if err != nil || cr.Errno != 0 {
		t.Fatalf("create: %v %v", err, cr)
	}
	lockIno := cr.Attr.Ino
	lk, err := a.SetLk(ctx, &jfspb.SetLkRequest{Ino: lockIno, Owner: 1, Type: jfspb.LockType_LOCK_TYPE_WRITE, Pid: 1})
	if err != nil || lk.Errno != 0 {
		t.Fatalf("a's lock: %v %v", err, lk)
	}
	waited := make(chan error, 1)
	go func() {
		r, err := b.SetLk(ctx, &jfspb.SetLkRequest{Ino: lockIno, Owner: 2, Type: jfspb.LockType_LOCK_TYPE_WRITE, Pid: 2, Block: true})
		if err == nil {
			err = client.Errno(r.Errno)
		}
		waited <- err
	}()
	// The wait is queued on the leader once ListLocks shows it.
	queued := waitFor(30*time.Second, func() bool {
		var resp *jfspb.ListLocksResponse
		err := a.Admin(ctx, func(ctx context.Context, ad jfspb.AdminClient) (err error) {
			resp, err = ad.ListLocks(ctx, &jfspb.ListLocksRequest{Ino: lockIno})
			return err
		})
		if err != nil {
			return false
		}
		for _, l := range resp.Locks {
			if l.Waiting {
				return true
			}
		}
		return false
	})
	if !queued {
		t.Fatal("b's F_SETLKW is not queued on the leader after 30s")
	}

	wr, err := b.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("data"), Mode: 0o644,
		Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
	if err != nil || wr.Errno != 0 {
		t.Fatalf("create data: %v %v", err, wr)
	}
	const writes = 300
	for i := range writes {
		r, err := b.Write(ctx, &jfspb.WriteRequest{Ino: wr.Attr.Ino, Offset: int64(i), Data: []byte{byte(i)}, Fh: 1})
		if err != nil || r.Errno != 0 {
			t.Fatalf("write %d: %v %v", i, err, r)
		}
	}
	// Kept: the create, the last write (its acknowledgement rides on the
	// next request) and perhaps one more; never one per write.
	n := storedResults(t, a, rb.Session)
	t.Logf("after %d writes behind a blocked F_SETLKW: %d stored results", writes, n)
	if n > 4 {
		t.Errorf("after %d writes behind a blocked F_SETLKW the leader keeps %d results of the session, want at most 4", writes, n)
	}

	if r, err := a.SetLk(ctx, &jfspb.SetLkRequest{Ino: lockIno, Owner: 1, Type: jfspb.LockType_LOCK_TYPE_UNLOCK, Pid: 1}); err != nil || r.Errno != 0 {
		t.Fatalf("a's unlock: %v %v", err, r)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("b's F_SETLKW: %v", err)
		}
	case <-ctx.Done():
		t.Fatal("b's F_SETLKW was not granted after a unlocked")
	}
	// The data is all there.
	rr, err := b.Read(ctx, &jfspb.ReadRequest{Ino: wr.Attr.Ino, Size: writes})
	if err != nil || rr.Errno != 0 || len(rr.Data) != writes {
		t.Fatalf("read back: %v %v", err, rr)
	}
	for i, v := range rr.Data {
		if v != byte(i) {
			t.Fatalf("byte %d is %d, want %d", i, v, byte(i))
		}
	}
}
