package integration

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// cutDialer is a client's network in which the test can cut the client
// off from a node's API address: existing connections are closed and new
// ones refused (or, with drop, left hanging as when a firewall drops the
// packets), while the nodes still reach each other.
type cutDialer struct {
	drop  bool
	mu    sync.Mutex
	cut   map[string]bool
	conns map[string][]net.Conn
}

func newCutDialer(drop bool) *cutDialer {
	return &cutDialer{drop: drop, cut: map[string]bool{}, conns: map[string][]net.Conn{}}
}

func (d *cutDialer) dial(ctx context.Context, addr string) (net.Conn, error) {
	d.mu.Lock()
	cut := d.cut[addr]
	d.mu.Unlock()
	if cut && d.drop {
		<-ctx.Done()
		return nil, fmt.Errorf("dial %s: %w (packets dropped by the test)", addr, ctx.Err())
	}
	if cut {
		return nil, fmt.Errorf("dial %s: cut off by the test", addr)
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cut[addr] {
		conn.Close()
		return nil, fmt.Errorf("dial %s: cut off by the test", addr)
	}
	d.conns[addr] = append(d.conns[addr], conn)
	return conn, nil
}

// cutOff closes the client's connections to addr and refuses new ones.
func (d *cutDialer) cutOff(addr string) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut[addr] = true
	for _, c := range d.conns[addr] {
		c.Close()
	}
	delete(d.conns, addr)
}

// writeExcl creates name in the root with O_EXCL and writes data to it.
func writeExcl(ctx context.Context, c *client.Client, name string, data []byte) error {
	return writeFileFlags(ctx, c, name, data, syscall.O_EXCL)
}

// TestClientReachesLeaderThroughFollower: a client cut off from the
// leader's API port, while raft between the nodes is untouched, keeps
// working: a follower passes its requests on to the leader. Creates with
// O_EXCL succeed once each, so a request is not applied twice on the way.
// The client gives up after 10s without a leader, so a client that only
// follows redirects fails with ErrNoLeader. The port is cut off twice: the
// leader refusing connections, and dropping them.
func TestClientReachesLeaderThroughFollower(t *testing.T) {
	for _, drop := range []bool{false, true} {
		name := "refused"
		if drop {
			name = "dropped"
		}
		t.Run(name, func(t *testing.T) { testReachLeaderThroughFollower(t, drop) })
	}
}

func testReachLeaderThroughFollower(t *testing.T, drop bool) {
	pc := startProcCluster(t, 3)
	d := newCutDialer(drop)
	c, err := client.New(client.Config{Servers: pc.servers(), RetryFor: 10 * time.Second,
		AttemptTimeout: 2 * time.Second, Dial: d.dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := writeFile(ctx, c, "before", content(0)); err != nil {
		t.Fatal(err)
	}
	admin := pc.client(t) // not cut off: finds the leader for the test
	leader := pc.leader(t, admin)
	d.cutOff(leader.apiAddr)

	const files = 20
	start := time.Now()
	for i := 1; i <= files; i++ {
		if err := writeExcl(ctx, c, fmt.Sprintf("f%d", i), content(i)); err != nil {
			t.Fatalf("f%d, %v after the leader's API was cut off: %v", i, time.Since(start).Round(time.Millisecond), err)
		}
	}
	t.Logf("%d files written in %v without reaching the leader", files, time.Since(start).Round(time.Millisecond))
	for i := 1; i <= files; i++ {
		if got := mustReadFile(t, c, fmt.Sprintf("f%d", i)); !bytes.Equal(got, content(i)) {
			t.Fatalf("f%d holds %d bytes, want %d", i, len(got), len(content(i)))
		}
	}
	if now := pc.leader(t, admin); now != leader {
		t.Fatalf("the leader changed from %s to %s: the test did not keep the leader", leader.id, now.id)
	}
	forwarded := 0.0
	for _, p := range pc.procs {
		if p == leader {
			continue
		}
		for k, v := range p.metrics(t) {
			if bytes.HasPrefix([]byte(k), []byte("jfsd_forwarded_total")) {
				forwarded += v
			}
		}
	}
	if forwarded < files {
		t.Fatalf("followers forwarded %v requests, want at least %d", forwarded, files)
	}
}

// TestForwardedLockWaitSurvivesFrozenLeader: a client cut off from the
// leader's API port has its blocking F_SETLKW forwarded by a follower; the
// leader then freezes (SIGSTOP), so its TCP connections stay up and the
// client's own pings, to the follower, are answered. The follower cancels
// the forwarded call when it sees another leader elected, the client queues
// the wait again at the new leader, and the holder's unlock there grants it.
// Before, the forwarded call waited on the frozen leader for good.
func TestForwardedLockWaitSurvivesFrozenLeader(t *testing.T) {
	pc := startProcCluster(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	holder := pc.client(t)
	d := newCutDialer(false)
	waiter, err := client.New(client.Config{Servers: pc.servers(), RetryFor: 10 * time.Second,
		AttemptTimeout: 2 * time.Second, Dial: d.dial})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { waiter.Close() })
	mustRegister(t, holder)
	mustRegister(t, waiter)
	cr, err := holder.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("f"), Mode: 0o644,
		Flags: uint32(syscall.O_CREAT | syscall.O_RDWR), Fh: 1})
	if err != nil || cr.Errno != 0 {
		t.Fatalf("create: %v %v", err, cr)
	}
	setLk := func(c *client.Client, pid uint32, typ jfspb.LockType, block bool) error {
		r, err := c.SetLk(ctx, &jfspb.SetLkRequest{Ino: cr.Attr.Ino, Owner: uint64(pid), Type: typ, Pid: pid, Block: block})
		if err == nil {
			err = client.Errno(r.Errno)
		}
		return err
	}
	if err := setLk(holder, 1, jfspb.LockType_LOCK_TYPE_WRITE, false); err != nil {
		t.Fatalf("holder's lock: %v", err)
	}
	old := pc.leader(t, holder)
	d.cutOff(old.apiAddr)
	waited := make(chan error, 1)
	go func() { waited <- setLk(waiter, 2, jfspb.LockType_LOCK_TYPE_WRITE, true) }()

	// The wait is queued on the leader, through a follower.
	var locks struct {
		Locks []struct {
			Waiting bool `json:"waiting"`
		} `json:"locks"`
	}
	mustJfsctlJSON(t, pc.servers(), 30*time.Second, &locks, func() bool {
		return len(locks.Locks) == 2 && (locks.Locks[0].Waiting || locks.Locks[1].Waiting)
	}, "locks", "ls", "--json")

	sigProc(t, old, syscall.SIGSTOP)
	t.Cleanup(func() { old.cmd.Process.Signal(syscall.SIGCONT) })
	var others []*proc
	for _, p := range pc.procs {
		if p != old {
			others = append(others, p)
		}
	}
	next := leaderAmong(t, holder, others...)
	if err := setLk(holder, 1, jfspb.LockType_LOCK_TYPE_UNLOCK, false); err != nil {
		t.Fatalf("holder's unlock at the new leader %s: %v", next.id, err)
	}
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("the forwarded wait across the frozen leader: %v, want the grant", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the forwarded wait was not granted within 60s of the unlock at the new leader %s", next.id)
	}
}
