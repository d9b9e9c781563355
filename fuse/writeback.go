package fuse

import (
	"errors"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/jfs-dev/jfs/client"
)

// Write-back buffering: the writes of a file are kept in the mount and sent
// to the cluster later, several requests in flight at a time, instead of
// one synchronous replicated request per FUSE WRITE.
//
// Visibility: what an inode's buffer holds is sent, and waited for, before
// anything on this mount that must see it: a close (FLUSH), fsync, a lock
// call, a read or getattr or setattr of the inode, fallocate, an append, and
// the release of any open file of the inode. Other mounts see the data from
// the close or unlock on (close-to-open, lock coherence). A write(2) is
// durable once fsync or close returned.
//
// Errors: a buffered write that the cluster refuses (ENOSPC, EDQUOT, a
// session it ended …) is reported once, to the next write, fsync or close
// of the open file that wrote it, as NFS and local file systems with
// write-back do.
//
// Order: the cluster applies requests in flight in any order, so a write
// whose range overlaps one in flight waits for it before it is buffered,
// and buffered data never overlaps data in flight. Overlapping writes
// thereby land in the order they were made.

// Bounds of the buffer of one inode.
const (
	// wbEntry is the most data one buffered request carries (one log
	// entry); a buffered range that reaches it is sent at once.
	wbEntry = 1 << 20
	// wbInflight is the most requests of one inode in flight: a write that
	// would start more waits for the oldest one.
	wbInflight = 8
	// wbDirtyBytes and wbDirtyRanges bound what an inode buffers unsent:
	// beyond either, all of it is sent.
	wbDirtyBytes  = 4 * wbEntry
	wbDirtyRanges = 64
)

// extent is buffered data of one open file: data at off, written through
// file fh opened under session.
type extent struct {
	off         int64
	data        []byte
	fh, session uint64
}

func (e *extent) end() int64 { return e.off + int64(len(e.data)) }

// sameFile reports whether e and o were written through the same open file,
// so that they may be sent as one request.
func (e *extent) sameFile(o *extent) bool { return e.fh == o.fh && e.session == o.session }

// writeSender sends one extent to the cluster and returns its error (a
// syscall.Errno of the answer, or why it could not be sent). It is called
// concurrently.
type writeSender func(ino uint64, e extent) error

// writeBack holds the buffers of every inode written on the mount. Its
// methods are safe for concurrent use.
type writeBack struct {
	send writeSender

	mu     sync.Mutex
	inodes map[uint64]*dirtyInode
	// n is len(inodes), read without mu: the operations that sync an inode
	// (every read, getattr, lock call) skip mu while nothing is buffered.
	n atomic.Int64

	// waitHook, when set (by tests), is called when a write waits for a
	// request in flight that it overlaps.
	waitHook func()
}

// dirtyInode is the buffer of one inode.
type dirtyInode struct {
	dirty   []extent         // unsent, by offset, disjoint
	bytes   int              // in dirty
	flights []*flight        // sent, unanswered, oldest first
	errs    map[uint64]error // by fh: failed writes not yet reported
	// unsent is why the data in dirty was sent and came back: the cluster
	// could not be reached (see start). nil once a send succeeded.
	unsent error
	slots  chan struct{} // one per request being sent, up to wbInflight
}

// flight is a request in flight: the half-open range [off, end).
type flight struct {
	off, end int64
	done     chan struct{} // closed when answered
}

func newWriteBack(send writeSender) *writeBack {
	return &writeBack{send: send, inodes: map[uint64]*dirtyInode{}}
}

// inode returns the buffer of ino, made if missing. Called with mu held.
func (w *writeBack) inode(ino uint64) *dirtyInode {
	d := w.inodes[ino]
	if d == nil {
		d = &dirtyInode{slots: make(chan struct{}, wbInflight)}
		w.inodes[ino] = d
		w.n.Add(1)
	}
	return d
}

// tidy forgets the buffer of ino once it holds nothing. Called with mu held.
func (w *writeBack) tidy(ino uint64) {
	if d := w.inodes[ino]; d != nil && len(d.dirty) == 0 && len(d.flights) == 0 && len(d.errs) == 0 {
		delete(w.inodes, ino)
		w.n.Add(-1)
	}
}

// takeErr returns and forgets the unreported error of fh on ino. Called
// with mu held.
func (w *writeBack) takeErr(ino, fh uint64) error {
	d := w.inodes[ino]
	if d == nil {
		return nil
	}
	err := d.errs[fh]
	delete(d.errs, fh)
	w.tidy(ino)
	return err
}

// write buffers e (its data is copied) for inode ino. It first returns,
// and forgets, the error of an earlier buffered write of e.fh, without
// buffering e. It waits for requests in flight that overlap e, and, when
// buffering e makes the inode send more than wbInflight requests, for the
// oldest ones.
func (w *writeBack) write(ino uint64, e extent) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.takeErr(ino, e.fh); err != nil {
		return err
	}
	for {
		f := w.overlapping(ino, e.off, e.end())
		if f == nil {
			break
		}
		if w.waitHook != nil {
			w.waitHook()
		}
		w.wait(f)
	}
	e.data = slices.Clone(e.data)
	d := w.inode(ino)
	d.insert(e)
	all := d.bytes > wbDirtyBytes || len(d.dirty) > wbDirtyRanges
	for i := 0; i < len(d.dirty); {
		if all || len(d.dirty[i].data) >= wbEntry {
			w.start(ino, d, i)
			continue
		}
		i++
	}
	for d := w.inodes[ino]; d != nil && len(d.flights) > wbInflight; d = w.inodes[ino] {
		w.wait(d.flights[0])
	}
	return nil
}

// overlapping returns a request of ino in flight that overlaps [off, end),
// or nil. Called with mu held.
func (w *writeBack) overlapping(ino uint64, off, end int64) *flight {
	d := w.inodes[ino]
	if d == nil {
		return nil
	}
	for _, f := range d.flights {
		if f.off < end && off < f.end {
			return f
		}
	}
	return nil
}

// wait waits, with mu released, until f is answered.
func (w *writeBack) wait(f *flight) {
	w.mu.Unlock()
	<-f.done
	w.mu.Lock()
}

// start sends d.dirty[i] of ino in the background, once fewer than
// wbInflight requests of ino are being sent. It is in flight from now on:
// writes that overlap it wait for it. Called with mu held.
func (w *writeBack) start(ino uint64, d *dirtyInode, i int) {
	e := d.dirty[i]
	d.dirty = slices.Delete(d.dirty, i, i+1)
	d.bytes -= len(e.data)
	f := &flight{off: e.off, end: e.end(), done: make(chan struct{})}
	d.flights = append(d.flights, f)
	go func() {
		d.slots <- struct{}{}
		err := w.send(ino, e)
		<-d.slots
		w.mu.Lock()
		defer w.mu.Unlock()
		// d is still the buffer of ino: it is not forgotten while f flies.
		if i := slices.Index(d.flights, f); i >= 0 {
			d.flights = slices.Delete(d.flights, i, i+1)
		}
		switch {
		case errors.Is(err, client.ErrNoLeader):
			// No leader was reachable for the client's whole retry
			// window: nothing was refused, and nothing may be lost.
			// The data goes back to the buffer, to be sent again by the
			// next sync (an NFS hard mount keeps its dirty pages the
			// same way); the close or fsync that waits for it fails.
			// Writes that overlap it wait for f, so nothing newer over
			// its range is buffered yet: it is put back as it was.
			d.insert(e)
			d.unsent = err
		case err != nil:
			if d.errs == nil {
				d.errs = map[uint64]error{}
			}
			if d.errs[e.fh] == nil {
				d.errs[e.fh] = err
			}
		default:
			d.unsent = nil
		}
		close(f.done)
		w.tidy(ino)
	}()
}

// sync sends everything ino buffers and waits until it and every request
// of ino in flight are answered. Errors stay for their open files.
func (w *writeBack) sync(ino uint64) {
	if w.n.Load() == 0 {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	w.syncLocked(ino)
}

func (w *writeBack) syncLocked(ino uint64) {
	d := w.inodes[ino]
	if d == nil {
		return
	}
	for len(d.dirty) > 0 {
		w.start(ino, d, 0)
	}
	// Requests started later, by writes made after this call, are not
	// waited for.
	for _, f := range slices.Clone(d.flights) {
		w.wait(f)
	}
}

// buffered reports whether ino has writes buffered or in flight.
func (w *writeBack) buffered(ino uint64) bool {
	if w.n.Load() == 0 {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.inodes[ino] != nil
}

// flush is sync, and then returns, and forgets, the error of a buffered
// write through fh. When data of fh could not be sent for want of a leader,
// it stays buffered, and flush returns that error (each time, until it is
// sent).
func (w *writeBack) flush(ino, fh uint64) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.syncLocked(ino)
	if d := w.inodes[ino]; d != nil && d.unsent != nil &&
		slices.ContainsFunc(d.dirty, func(e extent) bool { return e.fh == fh }) {
		return d.unsent
	}
	return w.takeErr(ino, fh)
}

// syncAll syncs every inode, as an unmount does.
func (w *writeBack) syncAll() {
	w.mu.Lock()
	inos := make([]uint64, 0, len(w.inodes))
	for ino := range w.inodes {
		inos = append(inos, ino)
	}
	w.mu.Unlock()
	for _, ino := range inos {
		w.sync(ino)
	}
}

// insert puts n into d.dirty, over whatever it overlaps, and joins it with
// adjacent data of the same open file while the result stays within
// wbEntry. n.data must be d's own.
func (d *dirtyInode) insert(n extent) {
	// Overwriting inside one extent of the same file: copy in place.
	i, _ := slices.BinarySearchFunc(d.dirty, n.off, func(e extent, off int64) int {
		switch {
		case e.end() <= off:
			return -1
		case e.off > off:
			return 1
		}
		return 0
	})
	// d.dirty[i:] are the extents that end after n.off.
	if i < len(d.dirty) {
		e := &d.dirty[i]
		if e.off <= n.off && n.end() <= e.end() && e.sameFile(&n) {
			copy(e.data[n.off-e.off:], n.data)
			return
		}
	}
	// Cut what n overlaps out of its neighbours.
	var keep []extent
	j := i
	for ; j < len(d.dirty) && d.dirty[j].off < n.end(); j++ {
		e := d.dirty[j]
		d.bytes -= len(e.data)
		if e.off < n.off {
			k := n.off - e.off
			keep = append(keep, extent{off: e.off, data: e.data[:k:k], fh: e.fh, session: e.session})
		}
		if e.end() > n.end() {
			k := n.end() - e.off
			keep = append(keep, extent{off: n.end(), data: e.data[k:], fh: e.fh, session: e.session})
		}
	}
	// keep holds at most a piece left of n and a piece right of it.
	var mid []extent
	for _, e := range keep {
		if e.off < n.off {
			mid = append(mid, e)
		}
	}
	mid = append(mid, n)
	for _, e := range keep {
		if e.off >= n.end() {
			mid = append(mid, e)
		}
	}
	for _, e := range mid {
		d.bytes += len(e.data)
	}
	d.dirty = slices.Replace(d.dirty, i, j, mid...)
	// Join n (now at i or i+1) with its neighbours.
	at := slices.IndexFunc(d.dirty[i:], func(e extent) bool { return e.off == n.off }) + i
	if at+1 < len(d.dirty) {
		d.join(at)
	}
	if at > 0 {
		d.join(at - 1)
	}
}

// join merges d.dirty[i+1] into d.dirty[i] when they are adjacent, of the
// same open file, and together within wbEntry.
func (d *dirtyInode) join(i int) {
	a, b := &d.dirty[i], &d.dirty[i+1]
	if a.end() != b.off || !a.sameFile(b) || len(a.data)+len(b.data) > wbEntry {
		return
	}
	a.data = append(a.data, b.data...)
	d.dirty = slices.Delete(d.dirty, i+1, i+2)
}
