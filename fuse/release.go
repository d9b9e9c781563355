package fuse

import (
	"sync"
)

// Releases. The kernel sends RELEASE as a background request and does not
// wait for its answer, but it keeps only a few background requests in
// flight (max_background) and queues the rest in arrival order. A mount
// that opens and closes files quickly thus builds a queue of releases in the
// kernel, and a release that frees a flock or an OFD lock used to wait
// behind all of them while another process waited for the lock.
//
// So Release answers at once and hands the request to a releaser: a
// release that frees a lock is sent at once, on its own; a release that
// frees nothing joins a queue that a few workers drain in arrival order, up
// to plainReleaseBatch releases per request (one log entry). Nothing waits
// for a plain release: until it is applied the cluster only counts the file
// as still open (an unlinked file is freed a little later).

const (
	// plainReleaseWorkers is how many batches of plain releases are in
	// flight at once.
	plainReleaseWorkers = 8
	// plainReleaseBatch is the default bound on the releases of one batch
	// (the cluster takes up to fsm.MaxReleaseBatch).
	plainReleaseBatch = 256
)

// releaser sends urgent releases with send and plain ones with sendBatch;
// both must be safe for concurrent use.
type releaser[T any] struct {
	send      func(T)
	sendBatch func([]T)
	batch     int // the most releases per sendBatch

	start sync.Once
	mu    sync.Mutex
	ready *sync.Cond
	queue []T // plain releases not taken by a worker yet, oldest first
}

// newReleaser returns a releaser that sends up to batch plain releases at a
// time (batch <= 0: plainReleaseBatch).
func newReleaser[T any](send func(T), sendBatch func([]T), batch int) *releaser[T] {
	if batch <= 0 {
		batch = plainReleaseBatch
	}
	r := &releaser[T]{send: send, sendBatch: sendBatch, batch: batch}
	r.ready = sync.NewCond(&r.mu)
	return r
}

// urgent sends req at once, ahead of every queued plain release. It does
// not wait.
func (r *releaser[T]) urgent(req T) { go r.send(req) }

// plain queues req behind the earlier plain releases. It does not wait.
func (r *releaser[T]) plain(req T) {
	r.start.Do(func() {
		for range plainReleaseWorkers {
			go r.work()
		}
	})
	r.mu.Lock()
	r.queue = append(r.queue, req)
	r.mu.Unlock()
	r.ready.Signal()
}

// pending is the number of queued plain releases not yet taken by a worker.
func (r *releaser[T]) pending() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.queue)
}

// work sends queued plain releases, the oldest up to r.batch at a time, for
// as long as the process lives.
func (r *releaser[T]) work() {
	for {
		r.mu.Lock()
		for len(r.queue) == 0 {
			r.ready.Wait()
		}
		n := min(len(r.queue), r.batch)
		batch := make([]T, n)
		copy(batch, r.queue)
		clear(r.queue[:n])
		r.queue = r.queue[n:]
		if len(r.queue) == 0 {
			r.queue = nil // let the array go
		}
		r.mu.Unlock()
		r.sendBatch(batch)
	}
}
