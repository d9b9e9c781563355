package cluster

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"

	"github.com/hashicorp/raft"
)

// Disk use is bounded in bytes, not only in entries (DESIGN.md "Storage"):
// raft counts entries (SnapshotThreshold, TrailingLogs), and 10,240
// trailing entries of 1 MiB writes are 10 GiB of raft.db. logBytes counts
// what was applied since the last snapshot; snapshotLoop takes a snapshot
// once that passes SnapshotThresholdBytes, and each snapshot sets raft's
// TrailingLogs so that the entries kept after it take about
// TrailingLogsBytes at the average size of the entries applied since the
// previous one.
type logBytes struct {
	// state is the size of the state file at the last snapshot: a
	// snapshot copies it whole, so one is taken by size only once the log
	// grew by half of it, at least (threshold).
	state atomic.Int64

	mu      sync.Mutex
	entries uint64 // applied since the last snapshot
	bytes   uint64 // their data
}

// add counts applied entries and reports whether a snapshot is due by
// size.
func (b *logBytes) add(logs []*raft.Log, threshold uint64) bool {
	b.mu.Lock()
	for _, l := range logs {
		b.entries++
		b.bytes += uint64(len(l.Data))
	}
	b.mu.Unlock()
	return b.due(threshold)
}

// due reports whether the entries applied since the last snapshot take at
// least threshold bytes and half the state's size: taking a snapshot per
// threshold bytes whatever the state's size would make every write to a
// large state cost a copy of it many times over.
func (b *logBytes) due(threshold uint64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.bytes >= max(threshold, uint64(b.state.Load())/2)
}

// reset is called as a snapshot is taken; it returns the entries and
// bytes applied since the previous one.
func (b *logBytes) reset() (entries, bytes uint64) {
	b.mu.Lock()
	defer b.mu.Unlock()
	entries, bytes = b.entries, b.bytes
	b.entries, b.bytes = 0, 0
	return entries, bytes
}

// trailingFor is how many entries to keep after a snapshot: as many as fit
// in limit bytes at the average size of the entries seen (entries, bytes),
// at least one and at most max. With no entries seen it is max.
func trailingFor(entries, bytes, limit, max uint64) uint64 {
	if entries == 0 || bytes == 0 {
		return max
	}
	avg := max1(bytes / entries)
	return min(max, max1(limit/avg))
}

func max1(v uint64) uint64 { return max(v, 1) }

// setTrailing sets raft's TrailingLogs for the log compaction that follows
// the snapshot being taken. Called on raft's state machine goroutine, inside
// Snapshot; ReloadConfig only swaps raft's config.
func (n *Node) setTrailing(entries, bytes uint64) {
	if n.raft == nil {
		return
	}
	want := trailingFor(entries, bytes, n.cfg.TrailingLogsBytes, n.cfg.TrailingLogs)
	rc := n.raft.ReloadableConfig()
	if rc.TrailingLogs == want {
		return
	}
	rc.TrailingLogs = want
	if err := n.raft.ReloadConfig(rc); err != nil {
		n.log.Warn("setting the trailing logs failed", "trailing", want, "error", err)
		return
	}
	n.log.Debug("trailing logs set by size", "trailing", want, "entries", entries, "bytes", bytes)
}

// kickSnapshot asks snapshotLoop for a snapshot; kicks merge.
func (n *Node) kickSnapshot() {
	select {
	case n.snapKick <- struct{}{}:
	default:
	}
}

// snapshotLoop takes the snapshots that raft's own schedule, which counts
// entries, would take too late: when SnapshotThresholdBytes of entries were
// applied since the last one (kicked by apply), and when the state file is
// mostly free pages (looked at every SnapshotInterval), since the snapshot
// compacts it first and then streams the small file.
func (n *Node) snapshotLoop() {
	defer n.wg.Done()
	t := time.NewTicker(n.cfg.SnapshotInterval)
	defer t.Stop()
	for {
		why := ""
		select {
		case <-n.stopped:
			return
		case <-n.snapKick:
			if n.logSize.due(n.cfg.SnapshotThresholdBytes) {
				why = "bytes"
			}
		case <-t.C:
			if n.fsm.CompactWorth() {
				why = "compaction"
			}
		}
		if why == "" || n.Err() != nil {
			continue
		}
		err := n.raft.Snapshot().Error()
		switch {
		case err == nil:
			n.log.Debug("snapshot taken", "why", why)
		case errors.Is(err, raft.ErrNothingNewToSnapshot), errors.Is(err, raft.ErrRaftShutdown):
		default:
			n.log.Warn("snapshot failed", "why", why, "error", err)
		}
	}
}
