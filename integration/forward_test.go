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
