package client

import (
	"context"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/protobuf/proto"
)

// Merging of identical reads (DESIGN.md § Reads, the client's half).
//
// Many processes of one mount often ask for the same thing at once: the
// attributes of one inode, one name in one directory. Identical requests
// (same method, same request bytes) share one RPC, under the rule the
// leader's read batching follows:
//
//   - A request that arrives while an identical request is on the wire does
//     not join it: that flight was sent before this request arrived and
//     could miss a write that completed in between. It queues for the next
//     flight of its key instead.
//   - The next flight is sent as soon as the one on the wire has answered,
//     and carries every request that queued meanwhile.
//   - There is at most one flight per key on the wire at a time.
//
// So every answer still reflects every write that completed before its
// request was made, and N processes asking the same question cost at most
// two RPCs in a row, not N.

// ReadObserver is told about the requests of merged methods (GetAttr and
// Lookup; methods are named as in the access log: "getattr", "lookup").
// It is called concurrently.
type ReadObserver interface {
	// ObserveSent is told about every request sent to the cluster: its
	// duration (retries included) and error.
	ObserveSent(method string, d time.Duration, err error)
	// ObserveMerged is told about every request that sent no RPC of its
	// own because it shared a flight that another request sent.
	ObserveMerged(method string)
}

// SetReadObserver installs o (nil: none).
func (c *Client) SetReadObserver(o ReadObserver) {
	c.merger().obs.Store(&readObserver{o})
}

// SetReadMerging turns the merging of identical in-flight reads on (the
// default) or off; off, every request sends its own RPC.
func (c *Client) SetReadMerging(on bool) { c.merger().off.Store(!on) }

// MergedReads is how many requests of method ("getattr", "lookup") shared
// a flight another request sent.
func (c *Client) MergedReads(method string) uint64 {
	m := c.merger()
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.merged[method]
}

type readObserver struct{ ReadObserver }

type mergeKey struct{ method, req string }

// flight is one RPC shared by the requests that wait for it.
type flight struct {
	key     mergeKey
	ctx     context.Context // ends when every waiter has gone
	cancel  context.CancelFunc
	call    func(ctx context.Context) (proto.Message, error)
	waiters int // requests still waiting; guarded by merger.mu
	resp    proto.Message
	err     error
	done    chan struct{}
}

// keyFlights are the flights of one key.
type keyFlights struct {
	sent *flight // on the wire
	next *flight // queued: sent when sent has answered; nil if none
}

type merger struct {
	off atomic.Bool
	obs atomic.Pointer[readObserver]

	mu     sync.Mutex
	keys   map[mergeKey]*keyFlights
	merged map[string]uint64
}

func newMerger() *merger {
	return &merger{keys: map[mergeKey]*keyFlights{}, merged: map[string]uint64{}}
}

func (c *Client) merger() *merger { return c.merge }

func (m *merger) observer() ReadObserver {
	if o := m.obs.Load(); o != nil {
		return o.ReadObserver
	}
	return nil
}

func (m *merger) sent(method string, start time.Time, err error) {
	if o := m.observer(); o != nil {
		o.ObserveSent(method, time.Since(start), err)
	}
}

// merge answers req (of method, sent by call) from the next flight of its
// key, sending that flight if this request is the first to want it. The
// response a caller gets is its own: merged callers get copies.
func merge[Resp proto.Message](ctx context.Context, c *Client, method string, req proto.Message, call func(ctx context.Context) (Resp, error)) (Resp, error) {
	m := c.merger()
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if m.off.Load() || err != nil {
		start := time.Now()
		resp, err := call(ctx)
		m.sent(method, start, err)
		return resp, err
	}
	k := mergeKey{method, string(b)}
	m.mu.Lock()
	kf := m.keys[k]
	var f *flight
	owner := true // this request sends f
	switch {
	case kf == nil: // nothing on the wire: send now
		f = newFlight(ctx, k, call)
		m.keys[k] = &keyFlights{sent: f}
		go m.fly(f)
	case kf.next == nil: // one on the wire: queue the next
		f = newFlight(ctx, k, call)
		kf.next = f
	default: // the next is queued already: ride along
		f = kf.next
		owner = false
		m.merged[method]++
	}
	f.waiters++
	m.mu.Unlock()
	if !owner {
		if o := m.observer(); o != nil {
			o.ObserveMerged(method)
		}
	}
	var zero Resp
	select {
	case <-f.done:
	case <-ctx.Done():
		m.leave(f)
		return zero, ctx.Err()
	}
	if f.err != nil {
		return zero, f.err
	}
	resp := f.resp
	if !owner {
		resp = proto.Clone(resp)
	}
	return resp.(Resp), nil
}

func newFlight[Resp proto.Message](ctx context.Context, k mergeKey, call func(ctx context.Context) (Resp, error)) *flight {
	fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	return &flight{
		key: k, ctx: fctx, cancel: cancel, done: make(chan struct{}),
		call: func(ctx context.Context) (proto.Message, error) { return call(ctx) },
	}
}

// fly sends f, then each flight queued behind it, until none is queued.
func (m *merger) fly(f *flight) {
	for f != nil {
		var resp proto.Message
		err := f.ctx.Err() // every waiter gone before it was sent
		if err == nil {
			start := time.Now()
			resp, err = f.call(f.ctx)
			m.sent(f.key.method, start, err)
		}
		f.cancel()
		m.mu.Lock()
		f.resp, f.err = resp, err
		close(f.done)
		kf := m.keys[f.key]
		next := kf.next
		if next == nil {
			delete(m.keys, f.key)
		} else {
			kf.sent, kf.next = next, nil
		}
		m.mu.Unlock()
		f = next
	}
}

// leave is a waiter of f giving up. A flight nobody waits for is cancelled;
// a queued one is dropped, so that later requests queue afresh.
func (m *merger) leave(f *flight) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f.waiters--
	if f.waiters > 0 {
		return
	}
	if kf := m.keys[f.key]; kf != nil && kf.next == f {
		kf.next = nil
	}
	f.cancel()
}
