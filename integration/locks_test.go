package integration

import (
	"context"
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// TestJfsctlLocksAndSessions: two clients (two sessions, two hosts) lock a
// file; jfsctl shows the holder and the waiter with path, host and pid;
// evicting the holder's session releases its lock and the waiter gets it.
func TestJfsctlLocksAndSessions(t *testing.T) {
	pc := startProcCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, b := pc.client(t), pc.client(t)
	ra, err := a.Register(ctx, "host-a", "/mnt/a", 11, "test")
	if err != nil || ra.Errno != 0 {
		t.Fatalf("register a: %v %v", err, ra)
	}
	if r, err := b.Register(ctx, "host-b", "/mnt/b", 22, "test"); err != nil || r.Errno != 0 {
		t.Fatalf("register b: %v %v", err, r)
	}
	dir, err := a.Mkdir(ctx, &jfspb.MkdirRequest{Parent: 1, Name: []byte("d"), Mode: 0o755})
	if err != nil || dir.Errno != 0 {
		t.Fatalf("mkdir: %v %v", err, dir)
	}
	cr, err := a.Create(ctx, &jfspb.CreateRequest{Parent: dir.Attr.Ino, Name: []byte("f"), Mode: 0o644,
		Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
	if err != nil || cr.Errno != 0 {
		t.Fatalf("create: %v %v", err, cr)
	}
	ino := cr.Attr.Ino
	lk, err := a.SetLk(ctx, &jfspb.SetLkRequest{Ino: ino, Owner: 5, Type: jfspb.LockType_LOCK_TYPE_WRITE, Start: 10, Len: 20, Pid: 1111})
	if err != nil || lk.Errno != 0 {
		t.Fatalf("a's lock: %v %v", err, lk)
	}
	waited := make(chan error, 1)
	go func() {
		r, err := b.SetLk(ctx, &jfspb.SetLkRequest{Ino: ino, Owner: 6, Type: jfspb.LockType_LOCK_TYPE_READ, Start: 0, Len: 0, Pid: 2222, Block: true})
		if err == nil {
			err = client.Errno(r.Errno)
		}
		waited <- err
	}()

	// Both show up: the held lock and the waiter.
	var locks struct {
		Locks []struct {
			Ino     string `json:"ino"`
			Kind    string `json:"kind"`
			Type    string `json:"type"`
			Start   string `json:"start"`
			Len     string `json:"len"`
			Pid     int    `json:"pid"`
			Waiting bool   `json:"waiting"`
			Host    string `json:"host"`
			Path    string `json:"path"`
		} `json:"locks"`
	}
	mustJfsctlJSON(t, pc.servers(), 10*time.Second, &locks, func() bool { return len(locks.Locks) == 2 }, "locks", "ls", "--json")
	held, waiting := locks.Locks[0], locks.Locks[1]
	if held.Waiting || !waiting.Waiting {
		held, waiting = waiting, held
	}
	if held.Host != "host-a" || held.Path != "/d/f" || held.Pid != 1111 || held.Type != "LOCK_TYPE_WRITE" ||
		held.Start != "10" || held.Len != "20" || held.Kind != "LOCK_KIND_POSIX" || held.Ino != fmt.Sprint(ino) {
		t.Errorf("held lock listed as %+v", held)
	}
	if waiting.Host != "host-b" || waiting.Pid != 2222 || waiting.Type != "LOCK_TYPE_READ" || waiting.Path != "/d/f" {
		t.Errorf("waiter listed as %+v", waiting)
	}
	out, _, err := jfsctl(t, pc.servers(), "locks", "ls")
	if err != nil || !strings.Contains(out, "waiting") || !strings.Contains(out, "held") || !strings.Contains(out, "10-29") {
		t.Errorf("locks ls table: %v\n%s", err, out)
	}
	out, _, err = jfsctl(t, pc.servers(), "sessions", "ls")
	if err != nil || !strings.Contains(out, "host-a") || !strings.Contains(out, "/mnt/b") {
		t.Errorf("sessions ls: %v\n%s", err, out)
	}

	// Evicting a's session releases its lock; b's wait is granted.
	if out, errOut, err := jfsctl(t, pc.servers(), "sessions", "evict", fmt.Sprint(ra.Session)); err != nil {
		t.Fatalf("sessions evict: %v %s%s", err, out, errOut)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("b's wait after the eviction: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("b still waits after a's session was evicted")
	}
	// a is fenced: its writes are refused.
	w, err := a.Write(ctx, &jfspb.WriteRequest{Ino: ino, Data: []byte("late"), Fh: 1})
	if err != nil || w.Errno != int32(syscall.ESTALE) {
		t.Fatalf("write from the evicted session: %v %v, want ESTALE", err, w)
	}
	for _, args := range [][]string{{"sessions", "evict", "nope"}, {"sessions", "evict", "999999"}} {
		_, errOut, err := jfsctl(t, pc.servers(), args...)
		if err == nil || !strings.Contains(errOut, "session") {
			t.Errorf("jfsctl %v: %v %q", args, err, errOut)
		}
	}
}
