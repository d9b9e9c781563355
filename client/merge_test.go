package client

import (
	"context"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// gatedMeta is a Meta server whose GetAttr reads the "file size" when a
// request arrives and then waits until the test releases it.
type gatedMeta struct {
	jfspb.UnimplementedMetaServer
	size    atomic.Uint64 // the state: changed by "writes"
	calls   atomic.Int64
	entered chan uint64 // the inode of each request as it arrives
	release chan struct{}
}

func (s *gatedMeta) GetAttr(ctx context.Context, r *jfspb.GetAttrRequest) (*jfspb.GetAttrResponse, error) {
	s.calls.Add(1)
	size := s.size.Load()
	s.entered <- r.Ino
	select {
	case <-s.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &jfspb.GetAttrResponse{Attr: &jfspb.Attr{Ino: r.Ino, Size: size}}, nil
}

func startGated(t *testing.T) (*gatedMeta, *Client) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &gatedMeta{entered: make(chan uint64, 100), release: make(chan struct{})}
	g := grpc.NewServer()
	jfspb.RegisterMetaServer(g, s)
	go g.Serve(l)
	t.Cleanup(g.Stop)
	c, err := New(Config{Servers: []string{l.Addr().String()}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return s, c
}

// waitQueued waits until n requests wait for the queued flight of a key.
func waitQueued(t *testing.T, c *Client, n int) {
	t.Helper()
	m := c.merger()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		got := 0
		for _, kf := range m.keys {
			if kf.next != nil {
				got += kf.next.waiters
			}
		}
		m.mu.Unlock()
		if got == n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d requests queued, want %d", got, n)
		}
		time.Sleep(time.Millisecond)
	}
}

type countingObserver struct {
	mu     sync.Mutex
	sent   map[string]int
	merged map[string]int
}

func (o *countingObserver) ObserveSent(method string, d time.Duration, err error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.sent[method]++
}

func (o *countingObserver) ObserveMerged(method string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.merged[method]++
}

// A request that arrives while an identical one is on the wire waits for
// the next flight, and so sees a write that completed before it was made;
// every request queued meanwhile shares that one next flight.
func TestMergeWaitsForNextFlight(t *testing.T) {
	s, c := startGated(t)
	obs := &countingObserver{sent: map[string]int{}, merged: map[string]int{}}
	c.SetReadObserver(obs)
	s.size.Store(1)
	ctx := context.Background()

	first := make(chan *jfspb.GetAttrResponse, 1)
	go func() {
		r, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: 7})
		if err != nil {
			t.Error(err)
		}
		first <- r
	}()
	<-s.entered // the first flight has read size 1 and is on the wire

	s.size.Store(2) // a write completes
	const n = 10
	var wg sync.WaitGroup
	got := make([]uint64, n)
	for i := range n {
		wg.Go(func() {
			r, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: 7})
			if err != nil {
				t.Error(err)
				return
			}
			got[i] = r.Attr.GetSize()
		})
	}
	waitQueued(t, c, n)
	if calls := s.calls.Load(); calls != 1 {
		t.Fatalf("%d RPCs on the wire while one flight is out, want 1", calls)
	}

	s.release <- struct{}{} // the first flight answers
	if r := <-first; r.GetAttr().GetSize() != 1 {
		t.Errorf("first request: size %d, want 1", r.GetAttr().GetSize())
	}
	<-s.entered             // the queued requests' one flight
	s.release <- struct{}{} // answers
	wg.Wait()
	for i, size := range got {
		if size != 2 {
			t.Errorf("request %d made after the write saw size %d, want 2", i, size)
		}
	}
	if calls := s.calls.Load(); calls != 2 {
		t.Errorf("%d RPCs for %d requests, want 2", calls, n+1)
	}
	if m := c.MergedReads("getattr"); m != n-1 {
		t.Errorf("MergedReads(getattr) = %d, want %d", m, n-1)
	}
	obs.mu.Lock()
	defer obs.mu.Unlock()
	if obs.sent["getattr"] != 2 || obs.merged["getattr"] != n-1 {
		t.Errorf("observer: sent %d merged %d, want 2 and %d", obs.sent["getattr"], obs.merged["getattr"], n-1)
	}
}

// Different requests do not wait for each other.
func TestMergeDistinctKeys(t *testing.T) {
	s, c := startGated(t)
	ctx := context.Background()
	var wg sync.WaitGroup
	for ino := uint64(1); ino <= 3; ino++ {
		wg.Go(func() {
			r, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: ino})
			if err != nil || r.Attr.GetIno() != ino {
				t.Errorf("getattr %d: %v %v", ino, r, err)
			}
		})
	}
	for range 3 { // all three on the wire at once
		<-s.entered
	}
	for range 3 {
		s.release <- struct{}{}
	}
	wg.Wait()
	if m := c.MergedReads("getattr"); m != 0 {
		t.Errorf("MergedReads = %d, want 0", m)
	}
}

// Merged callers get their own copies of the response.
func TestMergeCopies(t *testing.T) {
	s, c := startGated(t)
	ctx := context.Background()
	go c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: 1})
	<-s.entered
	res := make(chan *jfspb.GetAttrResponse, 2)
	for range 2 {
		go func() {
			r, _ := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: 1})
			res <- r
		}()
	}
	waitQueued(t, c, 2)
	s.release <- struct{}{}
	<-s.entered
	s.release <- struct{}{}
	a, b := <-res, <-res
	if a == nil || b == nil || a == b || a.Attr == b.Attr {
		t.Fatalf("merged callers share one response: %p %p", a, b)
	}
}

// A queued request that gives up leaves the others waiting; when every
// queued request gave up, the queued flight is not sent.
func TestMergeCancel(t *testing.T) {
	s, c := startGated(t)
	go c.GetAttr(context.Background(), &jfspb.GetAttrRequest{Ino: 1})
	<-s.entered

	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: 1})
			errc <- err
		}()
	}
	waitQueued(t, c, 2)
	cancel()
	for range 2 {
		if err := <-errc; err != context.Canceled {
			t.Errorf("cancelled request: %v, want context.Canceled", err)
		}
	}
	waitQueued(t, c, 0)
	s.release <- struct{}{} // the first flight answers; nothing follows it
	m := c.merger()
	deadline := time.Now().Add(10 * time.Second)
	for {
		m.mu.Lock()
		n := len(m.keys)
		m.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("key still in flight")
		}
		time.Sleep(time.Millisecond)
	}
	if calls := s.calls.Load(); calls != 1 {
		t.Errorf("%d RPCs, want 1 (the abandoned flight must not be sent)", calls)
	}
	// A later request sends afresh.
	done := make(chan error)
	go func() {
		_, err := c.GetAttr(context.Background(), &jfspb.GetAttrRequest{Ino: 1})
		done <- err
	}()
	<-s.entered
	s.release <- struct{}{}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// With merging off every request sends its own RPC.
func TestMergeOff(t *testing.T) {
	s, c := startGated(t)
	c.SetReadMerging(false)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { c.GetAttr(context.Background(), &jfspb.GetAttrRequest{Ino: 1}) })
	}
	for range 3 {
		<-s.entered
	}
	for range 3 {
		s.release <- struct{}{}
	}
	wg.Wait()
	if calls := s.calls.Load(); calls != 3 {
		t.Errorf("%d RPCs, want 3", calls)
	}
}
