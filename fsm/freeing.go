package fsm

import (
	"bytes"
	"encoding/binary"
	"math"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Freeing file data in bounded steps.
//
// Deleting every block of a large file in one apply transaction stalls
// every other command behind it (100 GiB at 64 KiB blocks is 1.6 M
// deletes). A truncate, removal or punched hole that would delete more
// than FreeStep blocks (or FreeStepBytes) instead marks the blocks as dead:
// it records the range of block numbers [from, to) of the inode in the
// freeing bucket ([from, ∞) from a truncate's new end, a finite range for
// the whole blocks inside a hole) and returns. Dead blocks are never read
// (they read as zeros), never reused (a write into one starts a fresh block
// and takes its number out of the range), and are deleted at most FreeStep
// (and FreeStepBytes) per FreeData command, which the leader proposes in
// the background while any are left. Stored bytes, per inode and in total,
// count a dead block until it is deleted. Freeing measures block data,
// never copies it.
//
// Invariants: the ranges of an inode are disjoint; every block inside a
// range is dead; no live block holds data at or past the file size.

// FreeStep is the most blocks one apply deletes: a truncate, removal or
// punched hole deletes up to this many at once, more are left to FreeData
// commands. FreeStepBytes caps the same in bytes: a step stops at whichever
// comes first (but always frees at least one block).
const (
	FreeStep      = 1024
	FreeStepBytes = 64 << 20
)

// blockRange is the half-open range of block numbers [from, to).
type blockRange struct{ from, to uint64 }

func (r blockRange) has(blk uint64) bool { return r.from <= blk && blk < r.to }

// deadRanges returns the dead ranges of ino, in order.
func (t *txn) deadRanges(ino uint64) []blockRange {
	var rs []blockRange
	t.scan(bucketFreeing, u64(ino), func(k, v []byte) bool {
		if len(k) == 16 && len(v) == 8 {
			rs = append(rs, blockRange{binary.BigEndian.Uint64(k[8:]), binary.BigEndian.Uint64(v)})
		}
		return true
	})
	return rs
}

// deadAt returns the dead range of rs holding blk.
func deadAt(rs []blockRange, blk uint64) (blockRange, bool) {
	for _, r := range rs {
		if r.has(blk) {
			return r, true
		}
	}
	return blockRange{}, false
}

// markDead records the blocks [from, ∞) of ino as dead (truncation).
func (t *txn) markDead(ino, from uint64) { t.markDeadRange(ino, blockRange{from, math.MaxUint64}) }

// markDeadRange records the blocks of r (non-empty) of ino as dead, merged
// with the ranges of ino it overlaps or touches, so that the ranges of an
// inode stay disjoint and none is adjacent to another.
func (t *txn) markDeadRange(ino uint64, r blockRange) {
	for _, e := range t.deadRanges(ino) {
		if e.from <= r.to && r.from <= e.to {
			r.from, r.to = min(r.from, e.from), max(r.to, e.to)
			t.del(bucketFreeing, key2(ino, e.from))
		}
	}
	t.put(bucketFreeing, key2(ino, r.from), u64(r.to))
}

// revive takes block blk of ino out of its dead range r, deleting the dead
// data stored there, so that a write can start the block afresh. It
// returns the dead ranges of ino after the change.
func (t *txn) revive(ino uint64, n *inode, r blockRange, blk uint64) []blockRange {
	t.del(bucketFreeing, key2(ino, r.from))
	if r.from < blk {
		t.put(bucketFreeing, key2(ino, r.from), u64(blk))
	}
	if blk+1 < r.to {
		t.put(bucketFreeing, key2(ino, blk+1), u64(r.to))
	}
	if old := t.b(bucketBlock).Get(key2(ino, blk)); old != nil {
		t.account(n, -int64(len(old)))
		t.del(bucketBlock, key2(ino, blk))
	}
	return t.deadRanges(ino)
}

// dropBlocksFrom deletes the blocks of ino from block first on, at once if
// they are few, else by marking them dead for FreeData.
func (t *txn) dropBlocksFrom(ino uint64, n *inode, first uint64) {
	t.dropBlocks(ino, n, blockRange{first, math.MaxUint64})
}

// dropBlocks deletes the stored blocks of ino in r (non-empty) at once when
// they are at most FreeStep blocks and FreeStepBytes bytes, else it marks r
// dead for FreeData. It visits at most FreeStep+1 keys and copies no block
// data, so its work is bounded whatever the size of r.
func (t *txn) dropBlocks(ino uint64, n *inode, r blockRange) {
	for _, d := range t.deadRanges(ino) {
		if d.from < r.to && r.from < d.to {
			// Some are dead already: counting the live ones would walk
			// the dead ones.
			t.markDeadRange(ino, r)
			return
		}
	}
	keys, freed, done := t.blockKeys(ino, r, FreeStep, FreeStepBytes)
	if !done {
		t.markDeadRange(ino, r)
		return
	}
	for _, k := range keys {
		t.del(bucketBlock, k)
	}
	t.account(n, -freed)
}

// blockKeys returns copies of the keys of the stored blocks of ino in r, in
// order, stopping before the one that would pass maxKeys keys or maxBytes
// bytes (the byte limit never stops the first one), with the bytes their values hold; done
// reports whether it reached the end of r. Values are only measured, never
// copied.
func (t *txn) blockKeys(ino uint64, r blockRange, maxKeys int, maxBytes int64) (keys [][]byte, size int64, done bool) {
	c := t.b(bucketBlock).Cursor()
	for k, v := c.Seek(key2(ino, r.from)); ; k, v = c.Next() {
		if len(k) != 16 || binary.BigEndian.Uint64(k) != ino || binary.BigEndian.Uint64(k[8:]) >= r.to {
			return keys, size, true
		}
		if len(keys) == maxKeys || (len(keys) > 0 && size+int64(len(v)) > maxBytes) {
			return keys, size, false
		}
		keys = append(keys, bytes.Clone(k))
		size += int64(len(v))
	}
}

// applyFreeData deletes up to req.MaxBlocks (at most FreeStep; 0 means
// FreeStep) dead blocks, and at most FreeStepBytes bytes, the oldest
// inodes' first. Every dead range looked at counts against the block budget
// too, so one command does bounded work; block data is never copied.
func (t *txn) applyFreeData(req *jfspb.FreeDataRequest) *jfspb.FreeDataResponse {
	budget := uint64(req.GetMaxBlocks())
	if budget == 0 || budget > FreeStep {
		budget = FreeStep
	}
	bytesLeft := int64(FreeStepBytes)
	type dead struct {
		ino uint64
		r   blockRange
	}
	var ranges []dead
	t.scan(bucketFreeing, nil, func(k, v []byte) bool {
		if len(k) == 16 && len(v) == 8 {
			ranges = append(ranges, dead{binary.BigEndian.Uint64(k), blockRange{binary.BigEndian.Uint64(k[8:]), binary.BigEndian.Uint64(v)}})
		}
		return uint64(len(ranges)) < budget
	})
	var freedBlocks uint64
	for _, d := range ranges {
		if budget == 0 || bytesLeft <= 0 {
			break
		}
		budget--
		keys, size, done := t.blockKeys(d.ino, d.r, int(budget), bytesLeft)
		for _, k := range keys {
			t.del(bucketBlock, k)
		}
		budget -= uint64(len(keys))
		bytesLeft -= size
		freedBlocks += uint64(len(keys))
		if n := t.inode(d.ino); n != nil {
			t.account(n, -size)
			t.putInode(d.ino, n)
		} else {
			t.metaAdd(metaUsedBytes, -size)
		}
		if !done && len(keys) == 0 {
			break // the budget ran out on this range
		}
		t.del(bucketFreeing, key2(d.ino, d.r.from))
		if !done {
			// Keys are in order: everything before the next one is gone.
			next := binary.BigEndian.Uint64(keys[len(keys)-1][8:]) + 1
			t.put(bucketFreeing, key2(d.ino, next), u64(d.r.to))
		}
	}
	return &jfspb.FreeDataResponse{FreedBlocks: freedBlocks, More: t.hasPrefix(bucketFreeing, nil)}
}

// PendingFrees reports whether dead blocks wait to be freed by FreeData.
func (f *FSM) PendingFrees() bool {
	var pending bool
	f.view(func(t *txn) error {
		pending = t.hasPrefix(bucketFreeing, nil)
		return nil
	})
	return pending
}
