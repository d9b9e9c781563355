package fuse

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"runtime"
	"slices"
	"sync"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/client"
)

// fakeCluster applies sent extents to one file's bytes, as the cluster
// would, in the order the sends run.
type fakeCluster struct {
	mu    sync.Mutex
	data  []byte
	sends []extent // in the order they were applied
	// before, when set, runs at the start of each send, outside mu.
	before func(e extent) error
}

func (c *fakeCluster) send(ino uint64, e extent) error {
	if c.before != nil {
		if err := c.before(e); err != nil {
			return err
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if end := int(e.end()); end > len(c.data) {
		c.data = append(c.data, make([]byte, end-len(c.data))...)
	}
	copy(c.data[e.off:], e.data)
	c.sends = append(c.sends, extent{off: e.off, data: slices.Clone(e.data), fh: e.fh})
	return nil
}

// applyModel writes data at off into file, growing it with zeros.
func applyModel(file []byte, off int64, data []byte) []byte {
	if end := int(off) + len(data); end > len(file) {
		file = append(file, make([]byte, end-len(file))...)
	}
	copy(file[off:], data)
	return file
}

func mustWrite(t *testing.T, w *writeBack, fh uint64, off int64, data []byte) {
	t.Helper()
	if err := w.write(1, extent{off: off, data: data, fh: fh}); err != nil {
		t.Fatalf("write %d bytes at %d: %v", len(data), off, err)
	}
}

// mustCheckDirty checks the invariants of an inode's buffer.
func mustCheckDirty(t *testing.T, d *dirtyInode) {
	t.Helper()
	n := 0
	for i, e := range d.dirty {
		n += len(e.data)
		if len(e.data) == 0 || len(e.data) > wbEntry {
			t.Fatalf("extent %d holds %d bytes", i, len(e.data))
		}
		if i > 0 && d.dirty[i-1].end() > e.off {
			t.Fatalf("extents %d and %d overlap or are out of order: %d+%d, %d", i-1, i, d.dirty[i-1].off, len(d.dirty[i-1].data), e.off)
		}
	}
	if n != d.bytes {
		t.Fatalf("buffer counts %d bytes, holds %d", d.bytes, n)
	}
}

func TestWriteBackCoalesces(t *testing.T) {
	c := &fakeCluster{}
	w := newWriteBack(c.send)
	var model []byte
	// Sequential 4 KiB writes, out of order, and overwrites of their middle.
	block := func(i int) []byte { return bytes.Repeat([]byte{byte('a' + i)}, 4096) }
	for _, i := range []int{0, 1, 3, 2, 4} {
		mustWrite(t, w, 7, int64(i)*4096, block(i))
		model = applyModel(model, int64(i)*4096, block(i))
	}
	mustWrite(t, w, 7, 5000, []byte("overwritten"))
	model = applyModel(model, 5000, []byte("overwritten"))
	mustWrite(t, w, 7, 4000, bytes.Repeat([]byte("x"), 8200))
	model = applyModel(model, 4000, bytes.Repeat([]byte("x"), 8200))
	d := w.inodes[1]
	mustCheckDirty(t, d)
	if len(d.dirty) != 1 || len(c.sends) != 0 {
		t.Fatalf("adjacent writes of one file: %d buffered ranges and %d sent, want 1 and 0", len(d.dirty), len(c.sends))
	}
	if err := w.flush(1, 7); err != nil {
		t.Fatal(err)
	}
	if len(c.sends) != 1 || !bytes.Equal(c.data, model) {
		t.Fatalf("flush sent %d requests; the file reads back equal: %v", len(c.sends), bytes.Equal(c.data, model))
	}
	if len(w.inodes) != 0 {
		t.Fatal("a flushed inode's buffer is kept")
	}
}

func TestWriteBackSendsFullEntries(t *testing.T) {
	c := &fakeCluster{}
	w := newWriteBack(c.send)
	// Two files' writes do not join; a range reaching wbEntry is sent
	// without a flush.
	mustWrite(t, w, 1, 0, make([]byte, 4096))
	mustWrite(t, w, 2, 4096, make([]byte, 4096))
	if d := w.inodes[1]; len(d.dirty) != 2 {
		t.Fatalf("writes of two open files: %d buffered ranges, want 2", len(d.dirty))
	}
	mustWrite(t, w, 1, 1<<22, make([]byte, wbEntry-1))
	mustWrite(t, w, 1, 1<<22+wbEntry-1, []byte{1, 2})
	w.sync(1)
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, e := range c.sends {
		if len(e.data) > wbEntry {
			t.Fatalf("a request of %d bytes, more than %d", len(e.data), wbEntry)
		}
	}
	if len(c.data) != 1<<22+wbEntry+1 {
		t.Fatalf("file is %d bytes", len(c.data))
	}
}

// A write that overlaps a request in flight waits for its answer: the
// cluster applies requests in flight in any order.
func TestWriteBackOverlapWaitsForFlight(t *testing.T) {
	first := make(chan struct{})   // the first send began
	release := make(chan struct{}) // lets the first send finish
	c := &fakeCluster{}
	var once sync.Once
	c.before = func(e extent) error {
		if e.data[0] == 'A' {
			once.Do(func() { close(first) })
			<-release
		}
		return nil
	}
	w := newWriteBack(c.send)
	waiting := make(chan struct{}, 1)
	w.waitHook = func() {
		select {
		case waiting <- struct{}{}:
		default:
		}
	}
	mustWrite(t, w, 1, 0, bytes.Repeat([]byte("A"), wbEntry)) // full: sent at once
	<-first
	wrote := make(chan error)
	go func() { wrote <- w.write(1, extent{off: 100, data: []byte("B"), fh: 1}) }()
	select {
	case <-waiting:
	case err := <-wrote:
		close(release)
		t.Fatalf("a write over a request in flight was buffered (%v) before that request was answered", err)
	}
	close(release)
	if err := <-wrote; err != nil {
		t.Fatal(err)
	}
	if err := w.flush(1, 1); err != nil {
		t.Fatal(err)
	}
	if c.data[100] != 'B' || len(c.sends) != 2 || c.sends[0].data[0] != 'A' {
		t.Fatalf("byte 100 is %q after the later write; sends: %d", c.data[100], len(c.sends))
	}
}

// Several requests of a file are in flight at once, never more than
// wbInflight, and a writer waits once more are started.
func TestWriteBackPipelines(t *testing.T) {
	var mu sync.Mutex
	busy, most := 0, 0
	all := make(chan struct{})
	c := &fakeCluster{}
	c.before = func(e extent) error {
		mu.Lock()
		busy++
		most = max(most, busy)
		if busy == wbInflight {
			close(all)
		}
		mu.Unlock()
		<-all // every send waits until wbInflight are in flight together
		mu.Lock()
		busy--
		mu.Unlock()
		return nil
	}
	w := newWriteBack(c.send)
	for i := range 3 * wbInflight {
		mustWrite(t, w, 1, int64(i)*wbEntry, make([]byte, wbEntry))
	}
	w.sync(1)
	if most != wbInflight {
		t.Fatalf("at most %d requests in flight, want %d", most, wbInflight)
	}
	if len(c.sends) != 3*wbInflight {
		t.Fatalf("%d requests sent, want %d", len(c.sends), 3*wbInflight)
	}
}

// A refused buffered write is reported once, to the open file that made it,
// at its next write, fsync or close.
func TestWriteBackErrors(t *testing.T) {
	c := &fakeCluster{}
	c.before = func(e extent) error {
		if e.fh == 1 {
			return syscall.ENOSPC
		}
		return nil
	}
	w := newWriteBack(c.send)
	mustWrite(t, w, 1, 0, []byte("one"))
	mustWrite(t, w, 2, 10, []byte("two"))
	if err := w.flush(1, 2); err != nil {
		t.Fatalf("flush of the file whose write succeeded: %v", err)
	}
	if err := w.write(1, extent{off: 20, data: []byte("again"), fh: 1}); err != syscall.ENOSPC {
		t.Fatalf("next write of the file whose write failed: %v, want ENOSPC", err)
	}
	if err := w.flush(1, 1); err != nil {
		t.Fatalf("the error came back twice: %v", err)
	}
	mustWrite(t, w, 1, 0, []byte("three"))
	if err := w.flush(1, 1); err != syscall.ENOSPC {
		t.Fatalf("close after a failed write: %v, want ENOSPC", err)
	}
	if len(w.inodes) != 0 {
		t.Fatal("buffer kept after every error was reported")
	}
}

// Random writes of two open files, flushed at random, with the requests in
// flight applied in whatever order they run, read back as the same writes
// made one after another.
func TestWriteBackRandomAgainstModel(t *testing.T) {
	for seed := range uint64(10) {
		r := rand.New(rand.NewPCG(seed, 1))
		c := &fakeCluster{}
		c.before = func(e extent) error {
			for range e.off % 7 * 100 {
				runtime.Gosched()
			}
			return nil
		}
		w := newWriteBack(c.send)
		var model []byte
		const span = 3 * wbEntry
		for range 300 {
			var off, n int64
			switch r.IntN(6) {
			case 0: // a whole entry: sent at once
				n = wbEntry
			case 1: // large
				n = 1 + r.Int64N(wbEntry)
			default:
				n = 1 + r.Int64N(16<<10)
			}
			off = r.Int64N(span)
			data := make([]byte, n)
			b := byte(r.IntN(256))
			for i := range data {
				data[i] = b + byte(i) // each write's bytes tell it apart
			}
			fh := 1 + r.Uint64N(2)
			mustWrite(t, w, fh, off, data)
			model = applyModel(model, off, data)
			w.mu.Lock()
			if d := w.inodes[1]; d != nil {
				mustCheckDirty(t, d)
			}
			w.mu.Unlock()
			if r.IntN(40) == 0 {
				if err := w.flush(1, fh); err != nil {
					t.Fatal(err)
				}
			}
		}
		w.sync(1)
		c.mu.Lock()
		if !bytes.Equal(c.data, model) {
			t.Fatalf("seed %d: the file differs from the writes made in order", seed)
		}
		c.mu.Unlock()
	}
}

// Data whose send found no leader for the client's whole retry window stays
// buffered: the close that waited for it fails, the next sync sends it, and
// a newer write over it still wins.
func TestWriteBackKeepsDataWhileClusterUnreachable(t *testing.T) {
	c := &fakeCluster{}
	down := true
	c.before = func(e extent) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		if down {
			return fmt.Errorf("%w within 30s: connection refused", client.ErrNoLeader)
		}
		return nil
	}
	w := newWriteBack(c.send)
	mustWrite(t, w, 1, 0, []byte("before "))
	if err := w.flush(1, 2); err != nil {
		t.Fatalf("flush of another open file, whose data is not at stake: %v", err)
	}
	if err := w.flush(1, 1); !errors.Is(err, client.ErrNoLeader) {
		t.Fatalf("close while the cluster is unreachable: %v, want ErrNoLeader", err)
	}
	if err := w.flush(1, 1); !errors.Is(err, client.ErrNoLeader) {
		t.Fatalf("a second close, data still unsent: %v, want ErrNoLeader", err)
	}
	if !w.buffered(1) {
		t.Fatal("the unsent data was dropped")
	}
	mustWrite(t, w, 1, 3, []byte("ORE"))
	c.mu.Lock()
	down = false
	c.mu.Unlock()
	mustWrite(t, w, 1, 7, []byte("after"))
	if err := w.flush(1, 1); err != nil {
		t.Fatalf("close once the cluster is back: %v", err)
	}
	if got := string(c.data); got != "befORE after" {
		t.Fatalf("cluster holds %q, want %q", got, "befORE after")
	}
	if len(w.inodes) != 0 {
		t.Fatal("buffer kept after everything was sent")
	}
}
