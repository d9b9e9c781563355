package cluster

import (
	"context"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Reads are batched on the leader (DESIGN.md § Reads):
//
//  1. A read that arrives while a batch is being served waits for the next
//     batch: joining a batch that started earlier could miss a write that
//     completed after that batch noted its commit index but before this read
//     was sent.
//  2. A batch notes the commit index, confirms leadership once, checks the
//     term, and waits until the state machine has applied the index.
//  3. Then it serves every read of the batch, computing each distinct request
//     (method and request bytes: getattr of one inode, lookup of one name in
//     one directory, ...) once and sharing the answer; a getattr of an inode
//     that a lookup of the batch found shares the lookup's read.
//
// So N processes asking for the same attributes at once cost about one
// state-machine read and one round of heartbeats, and every read still sees
// every write that completed before it was sent.

// ReadMode selects how the leader serves reads.
type ReadMode int

const (
	// ReadBatched is the default described above.
	ReadBatched ReadMode = iota
	// ReadEach confirms leadership and reads the state machine for every
	// request (jfsd --read-batching=false, for comparison).
	ReadEach
	// ReadSingleFlightUnsafe lets a read join any identical read in flight,
	// even one that started before the read was sent. It can return stale
	// data; it exists only so that tests can show that they catch it.
	ReadSingleFlightUnsafe
)

// singleFlightHold is how long an unsafe flight stays open after it read.
const singleFlightHold = 20 * time.Millisecond

type readKey struct {
	method string
	req    string // deterministic encoding of the request
}

type readCall struct {
	key  readKey
	ino  uint64 // the inode of a getattr; 0 for other reads
	fn   func() proto.Message
	resp proto.Message
	err  error
	done chan struct{}
}

// readBatcher groups reads into batches that share one ReadIndex.
type readBatcher struct {
	n *Node

	mu      sync.Mutex
	pending []*readCall
	running bool

	// ReadSingleFlightUnsafe only: the flights in progress.
	flights map[readKey]*readCall

	// Answers of getattr and lookup read while the state machine's state
	// did not change (Node.stateGen stayed memoGen, even), kept while it
	// still has not; used by serve's goroutine only.
	memoGen   uint64
	memo      map[readKey]proto.Message
	memoAttrs map[uint64]*jfspb.Attr
}

// memoMax bounds the answers kept between batches.
const memoMax = 4096

// memoizable: methods whose answer is a function of the state machine's
// state alone.
func memoizable(method string) bool { return method == "getattr" || method == "lookup" }

func newReadBatcher(n *Node) *readBatcher {
	return &readBatcher{n: n, flights: map[readKey]*readCall{}, memo: map[readKey]proto.Message{}, memoAttrs: map[uint64]*jfspb.Attr{}}
}

// do answers fn (a read of the state machine for request req of method) as
// the node's read mode says.
func (b *readBatcher) do(ctx context.Context, method string, req proto.Message, fn func() proto.Message) (proto.Message, error) {
	m := b.n.metrics.Load()
	m.countRead(method)
	switch b.n.cfg.ReadMode {
	case ReadEach:
		if err := b.n.ReadIndex(ctx); err != nil {
			return nil, err
		}
		m.countFSMRead(method)
		m.observeReadBatch(1)
		return fn(), nil
	case ReadSingleFlightUnsafe:
		return b.singleFlight(ctx, method, req, fn)
	}
	c, err := newReadCall(method, req, fn)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	b.pending = append(b.pending, c)
	if !b.running {
		b.running = true
		go b.serve()
	}
	b.mu.Unlock()
	select {
	case <-c.done:
		return c.resp, c.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newReadCall(method string, req proto.Message, fn func() proto.Message) (*readCall, error) {
	b, err := proto.MarshalOptions{Deterministic: true}.Marshal(req)
	if err != nil {
		return nil, err
	}
	c := &readCall{key: readKey{method, string(b)}, fn: fn, done: make(chan struct{})}
	if g, ok := req.(*jfspb.GetAttrRequest); ok {
		c.ino = g.Ino
	}
	return c, nil
}

// serve runs batches until no read is pending.
func (b *readBatcher) serve() {
	for {
		b.mu.Lock()
		batch := b.pending
		b.pending = nil
		if len(batch) == 0 {
			b.running = false
			b.mu.Unlock()
			return
		}
		b.mu.Unlock()
		b.serveBatch(batch)
	}
}

func (b *readBatcher) serveBatch(batch []*readCall) {
	ctx, cancel := context.WithTimeout(context.Background(), b.n.cfg.ApplyTimeout)
	err := b.n.ReadIndex(ctx)
	cancel()
	m := b.n.metrics.Load()
	m.observeReadBatch(len(batch))
	if err != nil {
		for _, c := range batch {
			c.err = err
			close(c.done)
		}
		return
	}
	answers := make(map[readKey]proto.Message, len(batch))
	// A lookup reads the attributes of the inode it finds; a getattr of
	// that inode in the same batch shares the read. Every read of a batch
	// happens after the batch noted its commit index, within the lifetime
	// of each of its requests, so the shared answer is as fresh as its own
	// would be. Lookups go first so that getattrs can use them.
	attrs := map[uint64]*jfspb.Attr{}
	// Answers of earlier batches hold too while the state they were read
	// from is still the state now, after this batch's check: they are
	// what a read now would answer (DESIGN.md, "Batching").
	gen := b.n.stateGen.Load()
	if gen%2 == 1 || gen != b.memoGen {
		clear(b.memo)
		clear(b.memoAttrs)
		b.memoGen = gen
	}
	steady := gen%2 == 0
	serve := func(c *readCall) {
		// Callers of one key share the response: nothing modifies a
		// response after its read function returned.
		resp, ok := answers[c.key]
		if !ok && c.ino != 0 && attrs[c.ino] != nil {
			resp, ok = &jfspb.GetAttrResponse{Attr: attrs[c.ino]}, true
			answers[c.key] = resp
		}
		if !ok && steady {
			if resp, ok = b.memo[c.key]; !ok && c.ino != 0 && b.memoAttrs[c.ino] != nil {
				resp, ok = &jfspb.GetAttrResponse{Attr: b.memoAttrs[c.ino]}, true
			}
			if ok {
				answers[c.key] = resp
			}
		}
		if !ok {
			resp = c.fn()
			answers[c.key] = resp
			m.countFSMRead(c.key.method)
			if r, isLookup := resp.(*jfspb.LookupResponse); isLookup && r.Errno == 0 && r.Attr != nil {
				attrs[r.Attr.Ino] = r.Attr
			}
		}
		c.resp = resp
		close(c.done)
	}
	for _, c := range batch {
		if c.ino == 0 {
			serve(c)
		}
	}
	for _, c := range batch {
		if c.ino != 0 {
			serve(c)
		}
	}
	// Keep this batch's answers only if no apply began or ended while it
	// read: then all of them come from the state of gen.
	if !steady || b.n.stateGen.Load() != gen {
		clear(b.memo)
		clear(b.memoAttrs)
		return
	}
	if len(b.memo)+len(answers) > memoMax {
		clear(b.memo)
		clear(b.memoAttrs)
	}
	for k, resp := range answers {
		if memoizable(k.method) {
			b.memo[k] = resp
		}
	}
	for ino, a := range attrs {
		b.memoAttrs[ino] = a
	}
}

// singleFlight is the unsafe mode: join an identical read in flight
// whenever there is one.
func (b *readBatcher) singleFlight(ctx context.Context, method string, req proto.Message, fn func() proto.Message) (proto.Message, error) {
	c, err := newReadCall(method, req, fn)
	if err != nil {
		return nil, err
	}
	b.mu.Lock()
	if f := b.flights[c.key]; f != nil {
		b.mu.Unlock()
		<-f.done
		return f.resp, f.err
	}
	b.flights[c.key] = c
	b.mu.Unlock()
	if c.err = b.n.ReadIndex(ctx); c.err == nil {
		c.resp = fn()
		b.n.metrics.Load().countFSMRead(method)
		// Hold the flight open a little, as a slow read would: the window
		// in which a joiner can be handed an answer older than a write it
		// saw complete.
		select {
		case <-ctx.Done():
		case <-time.After(singleFlightHold):
		}
	}
	b.mu.Lock()
	delete(b.flights, c.key)
	b.mu.Unlock()
	close(c.done)
	return c.resp, c.err
}
