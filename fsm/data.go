package fsm

import (
	"bytes"
	"encoding/binary"
	"math"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// maxFileSize is the largest file size, as on Linux.
const maxFileSize = math.MaxInt64

// File data is stored in blocks of the block size (settings.go) keyed by (ino, block
// number). A stored block may be shorter than a block: the bytes past its
// end, up to the file size, read as zeros, as do missing blocks (holes).
// No live block holds data at or past the file size: truncating down trims
// the tail block and drops the blocks past it, at once or, when they are
// many, by marking them dead to be freed in steps (freeing.go).

// block returns a copy of block blk of ino, or nil.
func (t *txn) block(ino, blk uint64) []byte { return t.get(bucketBlock, key2(ino, blk)) }

// putBlock stores block blk of ino (replacing old) and accounts the space.
func (t *txn) putBlock(ino uint64, n *inode, blk uint64, old, data []byte) {
	t.put(bucketBlock, key2(ino, blk), data)
	t.account(n, int64(len(data))-int64(len(old)))
}

func (t *txn) account(n *inode, delta int64) {
	n.Space = uint64(int64(n.Space) + delta)
	t.metaAdd(metaUsedBytes, delta)
}

// truncate sets the size of regular file ino (record n, stored by the
// caller) to size, dropping the data past it, and stamps mtime and ctime.
func (t *txn) truncate(ino uint64, n *inode, size uint64) {
	if size < n.Size {
		t.truncateBlocks(ino, n, size)
	}
	n.Size = size
	n.Mtime, n.Ctime = t.now, t.now
}

// truncateBlocks drops the blocks of ino past size (at once, or by marking
// them dead when they are many: freeing.go) and trims the block that holds
// size to it.
func (t *txn) truncateBlocks(ino uint64, n *inode, size uint64) {
	bs := t.settings().blockSize
	t.dropBlocksFrom(ino, n, (size+bs-1)/bs)
	if off := size % bs; off != 0 {
		blk := size / bs
		if _, dead := deadAt(t.deadRanges(ino), blk); dead {
			return
		}
		if old := t.block(ino, blk); uint64(len(old)) > off {
			t.putBlock(ino, n, blk, old, old[:off:off])
		}
	}
}

// applyWrite writes data at offset, or with req.Append at the file's size
// as of this apply (offset is then ignored), so that concurrent appends
// from any number of clients each land whole and contiguous at the real
// end. The response's offset is where the data went. Errors: ENOENT;
// EISDIR for a directory, EINVAL for another non-regular file or a negative
// offset; EFBIG for more than MaxWrite bytes or past the largest file size;
// ENOSPC past the capacity; EACCES without write permission or ownership
// (mayUse). A write by someone other than root drops the set-id bits.
func (t *txn) applyWrite(req *jfspb.WriteRequest) *jfspb.WriteResponse {
	fail := func(e syscall.Errno) *jfspb.WriteResponse { return &jfspb.WriteResponse{Errno: eno(e)} }
	ino, off, data := req.GetIno(), req.GetOffset(), req.GetData()
	n := t.inode(ino)
	if n != nil && req.GetAppend() {
		off = int64(n.Size)
	}
	switch {
	case n == nil:
		return fail(syscall.ENOENT)
	case n.isDir():
		return fail(syscall.EISDIR)
	case !n.isReg(), off < 0:
		return fail(syscall.EINVAL)
	case len(data) > MaxWrite, uint64(off)+uint64(len(data)) > maxFileSize:
		return fail(syscall.EFBIG)
	}
	c := req.GetHeader().GetCred()
	if e := n.mayUse(c, MayWrite); e != 0 {
		return fail(e)
	}
	if len(data) == 0 {
		return &jfspb.WriteResponse{Attr: n.attr(ino), Offset: off}
	}
	set := t.settings()
	bs := set.blockSize
	// A write stores at most its own length plus the zeros that fill a
	// block up to it.
	if set.capacity != 0 && t.metaGet(metaUsedBytes)+uint64(len(data))+bs > set.capacity {
		return fail(syscall.ENOSPC)
	}
	dead := t.deadRanges(ino)
	for pos := uint64(0); pos < uint64(len(data)); {
		at := uint64(off) + pos
		blk, bo := at/bs, at%bs
		cnt := min(bs-bo, uint64(len(data))-pos)
		if r, ok := deadAt(dead, blk); ok {
			dead = t.revive(ino, n, r, blk)
		}
		old := t.block(ino, blk)
		buf := make([]byte, max(uint64(len(old)), bo+cnt))
		copy(buf, old)
		copy(buf[bo:], data[pos:pos+cnt])
		t.putBlock(ino, n, blk, old, buf)
		pos += cnt
	}
	n.Size = max(n.Size, uint64(off)+uint64(len(data)))
	n.Mode = killPriv(n.Mode, n.Gid, c)
	n.Mtime, n.Ctime = t.now, t.now
	t.putInode(ino, n)
	return &jfspb.WriteResponse{Written: uint32(len(data)), Attr: n.attr(ino), Offset: off}
}

// The fallocate(2) modes that applyFallocate knows (linux/falloc.h).
const (
	fallocKeepSize  = 0x01
	fallocPunchHole = 0x02
	fallocZeroRange = 0x10
)

// applyFallocate is fallocate(2) on a regular file (see FallocateRequest):
//
//   - mode 0 allocates [offset, offset+length): the holes in it become
//     stored zeros, and the size grows to its end;
//   - KEEP_SIZE does the same without changing the size. Blocks are only
//     ever stored below the size, so the part of the range at or past the
//     size is not reserved: it succeeds and stores nothing;
//   - PUNCH_HOLE|KEEP_SIZE makes the range below the size read as zeros and
//     frees the blocks wholly inside it (a block partly inside keeps its
//     other bytes, and is trimmed when the hole reaches its stored end);
//   - ZERO_RANGE, with or without KEEP_SIZE, makes the range read as zeros,
//     stored (allocated) like mode 0.
//
// The space accounting (blocks, used bytes) follows what is stored. Mode 0
// and ZERO_RANGE store at most MaxFallocate bytes in one command (EFBIG
// above), as one command is applied in one transaction. PUNCH_HOLE has no
// limit: its work is bounded however large the hole (punchHole).
//
// The caller needs write permission or ownership (EACCES, see mayUse), and
// a caller other than root drops the file's set-id bits, as a write does.
func (t *txn) applyFallocate(req *jfspb.FallocateRequest) *jfspb.FallocateResponse {
	fail := func(e syscall.Errno) *jfspb.FallocateResponse { return &jfspb.FallocateResponse{Errno: eno(e)} }
	ino, off, length, mode := req.GetIno(), req.GetOffset(), req.GetLength(), req.GetMode()
	n := t.inode(ino)
	switch {
	case n == nil:
		return fail(syscall.ENOENT)
	case mode != 0 && mode != fallocKeepSize && mode != fallocPunchHole|fallocKeepSize &&
		mode != fallocZeroRange && mode != fallocZeroRange|fallocKeepSize:
		return fail(syscall.EOPNOTSUPP)
	case off < 0 || length <= 0:
		return fail(syscall.EINVAL)
	case n.isDir():
		return fail(syscall.EISDIR)
	case !n.isReg():
		return fail(syscall.ENODEV)
	case uint64(off)+uint64(length) > maxFileSize:
		return fail(syscall.EFBIG)
	}
	c := req.GetHeader().GetCred()
	if e := n.mayUse(c, MayWrite); e != 0 {
		return fail(e)
	}
	lo, end := uint64(off), uint64(off)+uint64(length)
	if mode&fallocPunchHole != 0 {
		if hi := min(end, n.Size); lo < hi {
			t.punchHole(ino, n, lo, hi)
		}
		n.Mode = killPriv(n.Mode, n.Gid, c)
		n.Mtime, n.Ctime = t.now, t.now
		t.putInode(ino, n)
		return &jfspb.FallocateResponse{Attr: n.attr(ino)}
	}
	size := n.Size
	if mode&fallocKeepSize == 0 {
		size = max(size, end)
	}
	hi := min(end, size)
	if lo < hi {
		if hi-lo > MaxFallocate {
			return fail(syscall.EFBIG)
		}
		// At most the range plus the zeros that fill a block up to it.
		if set := t.settings(); set.capacity != 0 && t.metaGet(metaUsedBytes)+(hi-lo)+set.blockSize > set.capacity {
			return fail(syscall.ENOSPC)
		}
		t.storeZeros(ino, n, lo, hi, mode&fallocZeroRange != 0)
	}
	if mode&fallocZeroRange != 0 || size != n.Size {
		n.Mtime = t.now
	}
	n.Size = size
	n.Mode = killPriv(n.Mode, n.Gid, c)
	n.Ctime = t.now
	t.putInode(ino, n)
	return &jfspb.FallocateResponse{Attr: n.attr(ino)}
}

// storeZeros makes every byte of [lo, hi) of ino stored: holes become
// stored zeros, and with overwrite the stored bytes are zeroed too. hi must
// not be past the size the caller leaves n with.
func (t *txn) storeZeros(ino uint64, n *inode, lo, hi uint64, overwrite bool) {
	bs := t.settings().blockSize
	dead := t.deadRanges(ino)
	for at := lo; at < hi; {
		blk, bo := at/bs, at%bs
		to := min(bs, bo+(hi-at)) // the range's end within the block
		at += to - bo
		if r, ok := deadAt(dead, blk); ok {
			// A dead block's old bytes must never show again: it starts
			// afresh, as a write into it does.
			dead = t.revive(ino, n, r, blk)
		}
		old := t.block(ino, blk)
		if !overwrite && uint64(len(old)) >= to {
			continue // already stored
		}
		buf := make([]byte, max(uint64(len(old)), to))
		copy(buf, old)
		if overwrite {
			clear(buf[bo:to])
		}
		t.putBlock(ino, n, blk, old, buf)
	}
}

// punchHole makes [lo, hi) of ino read as zeros while storing as little as
// it can: the blocks wholly inside are dropped (at once when few, else
// marked dead for FreeData: freeing.go); of the at most two blocks the hole
// only partly covers, one whose stored bytes all fall inside is deleted,
// one whose stored end falls inside is trimmed, and otherwise the bytes
// inside are zeroed. It reads only those two blocks' data, so its work is
// bounded whatever the size of the hole.
func (t *txn) punchHole(ino uint64, n *inode, lo, hi uint64) {
	bs := t.settings().blockSize
	if first, end := (lo+bs-1)/bs, hi/bs; first < end {
		t.dropBlocks(ino, n, blockRange{first, end})
	}
	dead := t.deadRanges(ino)
	edge := func(blk uint64) {
		if _, ok := deadAt(dead, blk); ok {
			return // reads as zeros already; freed in the background
		}
		old := t.b(bucketBlock).Get(key2(ino, blk))
		base := blk * bs
		a, b := max(lo, base)-base, min(hi, base+bs)-base // the hole within the block
		switch L := uint64(len(old)); {
		case a >= L:
			// The hole starts past the stored bytes (or nothing is
			// stored): nothing to do.
		case a == 0 && b >= L:
			t.del(bucketBlock, key2(ino, blk))
			t.account(n, -int64(L))
		case b >= L:
			t.putBlock(ino, n, blk, old, bytes.Clone(old[:a]))
		default:
			buf := bytes.Clone(old)
			clear(buf[a:b])
			t.putBlock(ino, n, blk, old, buf)
		}
	}
	if lo%bs != 0 {
		edge(lo / bs)
	}
	if hi%bs != 0 && (lo%bs == 0 || hi/bs != lo/bs) {
		edge(hi / bs)
	}
}

// Read answers up to req.Size bytes (at most MaxRead) at req.Offset,
// stopping at the file size: ENOENT; EISDIR for a directory, EINVAL for
// another non-regular file or a negative offset; EACCES without read
// permission or ownership (mayUse).
func (f *FSM) Read(req *jfspb.ReadRequest) *jfspb.ReadResponse {
	return read(f, func(t *txn) *jfspb.ReadResponse {
		ino, off := req.GetIno(), req.GetOffset()
		n := t.inode(ino)
		switch {
		case n == nil:
			return &jfspb.ReadResponse{Errno: eno(syscall.ENOENT)}
		case n.isDir():
			return &jfspb.ReadResponse{Errno: eno(syscall.EISDIR)}
		case !n.isReg(), off < 0:
			return &jfspb.ReadResponse{Errno: eno(syscall.EINVAL)}
		}
		if e := n.mayUse(req.GetCred(), MayRead); e != 0 {
			return &jfspb.ReadResponse{Errno: eno(e)}
		}
		start := uint64(off)
		if start >= n.Size || req.GetSize() == 0 {
			return &jfspb.ReadResponse{Data: []byte{}, Attr: n.attr(ino)}
		}
		end := min(n.Size, start+uint64(min(req.GetSize(), MaxRead)))
		buf := make([]byte, end-start)
		bs := t.settings().blockSize
		dead := t.deadRanges(ino)
		c := t.b(bucketBlock).Cursor()
		k, v := c.Seek(key2(ino, start/bs))
		for len(k) == 16 && binary.BigEndian.Uint64(k) == ino {
			blk := binary.BigEndian.Uint64(k[8:])
			base := blk * bs
			if base >= end {
				break
			}
			if r, ok := deadAt(dead, blk); ok {
				// Dead blocks read as zeros: skip the whole range.
				if r.to > (end-1)/bs {
					break
				}
				k, v = c.Seek(key2(ino, r.to))
				continue
			}
			// Copy the part of [base, base+len(v)) inside [start, end).
			lo, hi := max(base, start), min(base+uint64(len(v)), end)
			if lo < hi {
				copy(buf[lo-start:], v[lo-base:hi-base])
			}
			k, v = c.Next()
		}
		return &jfspb.ReadResponse{Data: buf, Attr: n.attr(ino)}
	})
}

// isOpen reports whether any session has ino open.
func (t *txn) isOpen(ino uint64) bool { return t.hasPrefix(bucketOpen, u64(ino)) }

func (t *txn) openCount(ino, session uint64) uint64 {
	v := t.b(bucketOpen).Get(key2(ino, session))
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

// openFile opens ino for the command's session under handle fh, for c;
// O_TRUNC truncates a regular file, and drops its set-id bits when c is not
// root (as a truncate does). Under an entry of a leader that keeps opens in
// memory (leaderOpens) the open is told to the open listener and, for an
// inode that existed before the entry, its index is recorded in `opened`
// (a FreeHint taken before it no longer frees the inode); otherwise
// (entries of older versions) it is counted in the replicated open table.
func (t *txn) openFile(ino uint64, n *inode, flags uint32, fh uint64, existing bool, c *jfspb.Cred) {
	if flags&syscall.O_TRUNC != 0 && n.isReg() {
		if n.Size > 0 {
			t.truncate(ino, n, 0)
			t.putInode(ino, n)
		}
		if m := killPriv(n.Mode, n.Gid, c); m != n.Mode {
			n.Mode = m
			n.Ctime = t.now
			t.putInode(ino, n)
		}
	}
	if t.leaderOpens {
		if existing {
			t.put(bucketOpened, u64(ino), u64(t.index))
		}
		if t.f.openListener != nil {
			t.f.openListener(t.session, fh, ino)
		}
		return
	}
	count := t.openCount(ino, t.session)
	t.put(bucketOpen, key2(ino, t.session), u64(count+1))
	if count == 0 {
		t.put(bucketSessOpen, key2(t.session, ino), nil)
	}
}

// closeFile counts one open of ino by session less in the replicated open
// table. It reports false if session had no open there. Under an older
// version's entry it frees a sustained inode whose last open this was;
// under a leaderOpens entry the inode stays an orphan, freed by the leader
// (FreeOrphans) once no open in its memory remains.
func (t *txn) closeFile(ino, session uint64) bool {
	c := t.openCount(ino, session)
	switch c {
	case 0:
		return false
	case 1:
		t.del(bucketOpen, key2(ino, session))
		t.del(bucketSessOpen, key2(session, ino))
	default:
		t.put(bucketOpen, key2(ino, session), u64(c-1))
		return true
	}
	if n := t.inode(ino); !t.leaderOpens && n != nil && n.Nlink == 0 && !t.isOpen(ino) {
		t.freeInode(ino, n)
	}
	return true
}

// checkOpen is the one place that decides whether an open of ino with
// flags by c may proceed, for the replicated Open and for the leader's
// in-memory open (FSM.CheckOpen) alike: ENOENT; EISDIR when a directory is
// opened for writing; EACCES, EPERM as MayOpen.
func checkOpen(ino uint64, n *inode, flags uint32, c *jfspb.Cred) syscall.Errno {
	switch {
	case n == nil:
		return syscall.ENOENT
	case n.isDir() && flags&(syscall.O_WRONLY|syscall.O_RDWR) != 0:
		return syscall.EISDIR
	}
	return MayOpen(n.attr(ino), c, flags)
}

// applyOpen opens ino for the session (see openFile): the errnos of
// checkOpen.
func (t *txn) applyOpen(req *jfspb.OpenRequest) *jfspb.OpenResponse {
	ino, flags := req.GetIno(), req.GetFlags()
	c := req.GetHeader().GetCred()
	n := t.inode(ino)
	if e := checkOpen(ino, n, flags, c); e != 0 {
		return &jfspb.OpenResponse{Errno: eno(e)}
	}
	t.openFile(ino, n, flags, req.GetFh(), true, c)
	return &jfspb.OpenResponse{Attr: n.attr(ino)}
}

// applyRelease ends an open of ino by the session, dropping the flock of
// (session, fh) when asked and the POSIX locks on ino of the listed owners
// (the open file's OFD locks). Under an older version's entry it is EBADF
// if the session does not have ino open, after the locks are dropped all
// the same. Under a leaderOpens entry the open lives in the leader's
// memory, which the leader has already ended: the entry drops the locks,
// and ends an open of the replicated table if one is left from an older
// version, never EBADF.
func (t *txn) applyRelease(req *jfspb.ReleaseRequest) *jfspb.ReleaseResponse {
	ino := req.GetIno()
	if req.GetReleaseFlock() {
		t.dropFlock(ino, rangelock.Owner{Session: t.session, ID: req.GetFh()})
	}
	dropped := false
	for _, o := range req.GetLockOwners() {
		dropped = t.f.table.ReleasePosix(ino, rangelock.Owner{Session: t.session, ID: o}) || dropped
	}
	if dropped {
		t.savePlocks(ino)
	}
	if !t.closeFile(ino, t.session) && !t.leaderOpens {
		return &jfspb.ReleaseResponse{Errno: eno(syscall.EBADF)}
	}
	return &jfspb.ReleaseResponse{}
}

// MaxReleaseBatch bounds the releases of one ReleaseBatchRequest.
const MaxReleaseBatch = 1024

// applyReleaseBatch applies each release of the batch as applyRelease does,
// answering its errno in order: EINVAL for an empty or too large batch.
func (t *txn) applyReleaseBatch(req *jfspb.ReleaseBatchRequest) *jfspb.ReleaseBatchResponse {
	rs := req.GetReleases()
	if len(rs) == 0 || len(rs) > MaxReleaseBatch {
		return &jfspb.ReleaseBatchResponse{Errno: eno(syscall.EINVAL)}
	}
	out := &jfspb.ReleaseBatchResponse{Errnos: make([]int32, len(rs))}
	for i, r := range rs {
		out.Errnos[i] = t.applyRelease(r).GetErrno()
	}
	return out
}
