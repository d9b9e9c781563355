package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// TestLockWaitOutlastsRetryWindow: a blocking F_SETLKW that has been queued
// on the leader for longer than the client's RetryFor survives a leader
// change (the client queues it again at the new leader) and is granted when
// the holder lets go. The window bounds the search for a leader, not the
// wait.
func TestLockWaitOutlastsRetryWindow(t *testing.T) {
	pc := startProcCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	holder := pc.client(t)
	// Long enough to ride out an election, much shorter than the wait.
	const window = 5 * time.Second
	waiter, err := client.New(client.Config{Servers: pc.servers(), RetryFor: window, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { waiter.Close() })
	for i, c := range []*client.Client{holder, waiter} {
		if r, err := c.Register(ctx, "host", "/mnt", uint32(100+i), "test"); err != nil || r.Errno != 0 {
			t.Fatalf("register: %v %v", err, r)
		}
	}
	cr, err := holder.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("f"), Mode: 0o644,
		Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
	if err != nil || cr.Errno != 0 {
		t.Fatalf("create: %v %v", err, cr)
	}
	ino := cr.Attr.Ino
	// Two processes (pids 1 and 2) on one host.
	write := func(c *client.Client, pid uint32, typ jfspb.LockType, block bool) error {
		r, err := c.SetLk(ctx, &jfspb.SetLkRequest{Ino: ino, Owner: 7, Type: typ, Pid: pid, Block: block})
		if err == nil {
			err = client.Errno(r.Errno)
		}
		return err
	}
	if err := write(holder, 1, jfspb.LockType_LOCK_TYPE_WRITE, false); err != nil {
		t.Fatalf("holder's lock: %v", err)
	}
	waited := make(chan error, 1)
	go func() { waited <- write(waiter, 2, jfspb.LockType_LOCK_TYPE_WRITE, true) }()

	// The wait is queued on the leader...
	var locks struct {
		Locks []struct {
			Waiting bool `json:"waiting"`
		} `json:"locks"`
	}
	mustJfsctlJSON(t, pc.servers(), 20*time.Second, &locks, func() bool {
		return len(locks.Locks) == 2 && (locks.Locks[0].Waiting || locks.Locks[1].Waiting)
	}, "locks", "ls", "--json")
	// ...and has waited there for longer than the retry window.
	select {
	case err := <-waited:
		t.Fatalf("the wait ended while the lock was held: %v", err)
	case <-time.After(window + time.Second):
	}

	pc.kill(pc.leader(t, holder))
	if err := write(holder, 1, jfspb.LockType_LOCK_TYPE_UNLOCK, false); err != nil {
		t.Fatalf("holder's unlock after the leader change: %v", err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("the wait across the leader change: %v, want the grant", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiter was not granted within 60s of the unlock")
	}
}
