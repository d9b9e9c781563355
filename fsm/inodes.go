package fsm

import (
	"encoding/binary"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// inode is the stored record of an inode.
type inode struct {
	Mode  uint32 // with the S_IFMT type bits
	Uid   uint32
	Gid   uint32
	Rdev  uint32
	Nlink uint32
	Size  uint64
	Atime int64 // Unix nanoseconds
	Mtime int64
	Ctime int64
	// Parent is, for a directory, the directory that holds its entry (the
	// root is its own parent); 0 for other inodes.
	Parent uint64
	// NextCookie is, for a directory, the cookie its next entry gets.
	NextCookie uint64
	// Space is the number of bytes of data blocks stored for the inode.
	Space uint64
}

const (
	inodeRecordVersion = 1
	inodeRecordLen     = 1 + 5*4 + 7*8
	firstCookie        = 3 // 1 and 2 are "." and ".."
)

func (n *inode) encode() []byte {
	b := make([]byte, 0, inodeRecordLen)
	b = append(b, inodeRecordVersion)
	for _, v := range []uint32{n.Mode, n.Uid, n.Gid, n.Rdev, n.Nlink} {
		b = binary.BigEndian.AppendUint32(b, v)
	}
	for _, v := range []uint64{n.Size, uint64(n.Atime), uint64(n.Mtime), uint64(n.Ctime), n.Parent, n.NextCookie, n.Space} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

func decodeInode(b []byte) (*inode, bool) {
	if len(b) != inodeRecordLen || b[0] != inodeRecordVersion {
		return nil, false
	}
	u32 := func(i int) uint32 { return binary.BigEndian.Uint32(b[1+4*i:]) }
	u64 := func(i int) uint64 { return binary.BigEndian.Uint64(b[21+8*i:]) }
	return &inode{
		Mode: u32(0), Uid: u32(1), Gid: u32(2), Rdev: u32(3), Nlink: u32(4),
		Size: u64(0), Atime: int64(u64(1)), Mtime: int64(u64(2)), Ctime: int64(u64(3)),
		Parent: u64(4), NextCookie: u64(5), Space: u64(6),
	}, true
}

func (n *inode) typ() uint32    { return n.Mode & syscall.S_IFMT }
func (n *inode) isDir() bool    { return n.typ() == syscall.S_IFDIR }
func (n *inode) isReg() bool    { return n.typ() == syscall.S_IFREG }
func (n *inode) isLink() bool   { return n.typ() == syscall.S_IFLNK }
func (n *inode) blocks() uint64 { return (n.Space + 511) / 512 }

func (n *inode) attr(ino uint64) *jfspb.Attr {
	return &jfspb.Attr{
		Ino: ino, Mode: n.Mode, Uid: n.Uid, Gid: n.Gid, Size: n.Size,
		Nlink: n.Nlink, Rdev: n.Rdev, AtimeNs: n.Atime, MtimeNs: n.Mtime,
		CtimeNs: n.Ctime, Blocks: n.blocks(),
	}
}

// inode returns the record of ino, or nil if there is none. A record that
// does not decode is a storage error.
func (t *txn) inode(ino uint64) *inode {
	v := t.b(bucketInode).Get(u64(ino))
	if v == nil {
		return nil
	}
	n, ok := decodeInode(v)
	if !ok {
		t.fail(errCorruptRecord("inode", ino))
		return nil
	}
	return n
}

func (t *txn) putInode(ino uint64, n *inode) { t.put(bucketInode, u64(ino), n.encode()) }

// dir returns directory ino, or an errno: ENOENT, ENOTDIR. A removed
// directory kept because it is open (nlink 0, see dropDir) is ENOENT: nothing
// can be looked up or created in it, as on Linux.
func (t *txn) dir(ino uint64) (*inode, syscall.Errno) {
	n := t.inode(ino)
	switch {
	case n == nil:
		return nil, syscall.ENOENT
	case !n.isDir():
		return nil, syscall.ENOTDIR
	case n.Nlink == 0:
		return nil, syscall.ENOENT
	}
	return n, 0
}

// initRoot creates the root directory of a new file system. Its times are
// zero until markCreated: Open reads no clock, and every replica must hold
// the same root.
func (t *txn) initRoot() error {
	t.putInode(RootIno, &inode{
		Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Parent: RootIno, NextCookie: firstCookie,
	})
	t.metaPut(metaNextIno, RootIno+1)
	t.metaPut(metaUsedInodes, 1)
	return t.err
}

// markCreated records now, the time stamp of the first time-stamped entry,
// as the file system's creation time, and gives it to the root's times that
// are still zero. It runs once per file system, before that entry's command.
func (t *txn) markCreated(now int64) {
	t.metaPut(metaCreated, uint64(now))
	root := t.inode(RootIno)
	if root == nil {
		return
	}
	for _, ts := range []*int64{&root.Atime, &root.Mtime, &root.Ctime} {
		if *ts == 0 {
			*ts = now
		}
	}
	t.putInode(RootIno, root)
}

// newInode allocates an inode number for n and stores n: ENOSPC when
// MaxInodes are in use.
func (t *txn) newInode(n *inode) (uint64, syscall.Errno) {
	if m := t.settings().maxInodes; m != 0 && t.metaGet(metaUsedInodes) >= m {
		return 0, syscall.ENOSPC
	}
	ino := t.metaGet(metaNextIno)
	t.metaPut(metaNextIno, ino+1)
	t.metaAdd(metaUsedInodes, 1)
	n.Atime, n.Mtime, n.Ctime = t.now, t.now, t.now
	if n.isDir() {
		n.NextCookie = firstCookie
	}
	t.putInode(ino, n)
	return ino, 0
}

// dropLink removes one link of ino (a non-directory whose name was just
// removed) and frees it when no name remains and it is unused (see
// unused); else an inode without a name is kept, listed in sustained.
func (t *txn) dropLink(ino uint64, n *inode) {
	if n.Nlink > 0 {
		n.Nlink--
	}
	n.Ctime = t.now
	if n.Nlink > 0 {
		t.putInode(ino, n)
		return
	}
	if !t.unused(ino) {
		t.putInode(ino, n)
		t.put(bucketSustained, u64(ino), nil)
		return
	}
	t.freeInode(ino, n)
}

// dropDir removes directory ino, empty and just unnamed: it is freed
// when unused (see unused); else (an opendir may hold it) it is kept with
// nlink 0, listed in sustained, until its last close, so that fstat and
// readdir of the open descriptor work (readdir finds it empty).
func (t *txn) dropDir(ino uint64, n *inode) {
	if t.unused(ino) {
		t.freeInode(ino, n)
		return
	}
	n.Nlink = 0
	n.Ctime = t.now
	t.putInode(ino, n)
	t.put(bucketSustained, u64(ino), nil)
}

// freeInode deletes ino with its data, attributes, target and locks.
func (t *txn) freeInode(ino uint64, n *inode) {
	t.truncateBlocks(ino, n, 0)
	t.deletePrefix(bucketXattr, u64(ino))
	t.del(bucketSymlink, u64(ino))
	t.del(bucketSustained, u64(ino))
	t.del(bucketOpened, u64(ino))
	t.dropLocks(ino)
	t.del(bucketInode, u64(ino))
	t.metaAdd(metaUsedInodes, -1)
}

// GetAttr answers the attributes of an inode: ENOENT if it does not exist.
func (f *FSM) GetAttr(req *jfspb.GetAttrRequest) *jfspb.GetAttrResponse {
	return read(f, func(t *txn) *jfspb.GetAttrResponse {
		n := t.inode(req.GetIno())
		if n == nil {
			return &jfspb.GetAttrResponse{Errno: eno(syscall.ENOENT)}
		}
		return &jfspb.GetAttrResponse{Attr: n.attr(req.GetIno())}
	})
}

const setAttrKnown = uint32(jfspb.SetAttrMask_SET_ATTR_MODE | jfspb.SetAttrMask_SET_ATTR_UID |
	jfspb.SetAttrMask_SET_ATTR_GID | jfspb.SetAttrMask_SET_ATTR_SIZE | jfspb.SetAttrMask_SET_ATTR_ATIME |
	jfspb.SetAttrMask_SET_ATTR_MTIME | jfspb.SetAttrMask_SET_ATTR_ATIME_NOW |
	jfspb.SetAttrMask_SET_ATTR_MTIME_NOW | jfspb.SetAttrMask_SET_ATTR_CTIME)

// applySetAttr changes the fields named by req.Valid: ENOENT; EINVAL for an
// unknown mask bit or a size change of a special file; EISDIR for a size
// change of a directory; EPERM, EACCES as setAttrCheck decides for the
// caller; EFBIG past the largest file size. With credentials, a change
// of owner or group of a non-directory drops its set-id bits (chownKill),
// and a size change by someone other than root drops them as a write does.
func (t *txn) applySetAttr(req *jfspb.SetAttrRequest) *jfspb.SetAttrResponse {
	ino, valid := req.GetIno(), req.GetValid()
	c := req.GetHeader().GetCred()
	n := t.inode(ino)
	if n == nil {
		return &jfspb.SetAttrResponse{Errno: eno(syscall.ENOENT)}
	}
	if valid&^setAttrKnown != 0 {
		return &jfspb.SetAttrResponse{Errno: eno(syscall.EINVAL)}
	}
	has := func(m jfspb.SetAttrMask) bool { return valid&uint32(m) != 0 }
	if has(jfspb.SetAttrMask_SET_ATTR_SIZE) {
		switch {
		case n.isDir():
			return &jfspb.SetAttrResponse{Errno: eno(syscall.EISDIR)}
		case !n.isReg():
			return &jfspb.SetAttrResponse{Errno: eno(syscall.EINVAL)}
		}
	}
	mode, e := setAttrCheck(n, req, c)
	if e != 0 {
		return &jfspb.SetAttrResponse{Errno: eno(e)}
	}
	if has(jfspb.SetAttrMask_SET_ATTR_SIZE) {
		if req.GetSize() > maxFileSize {
			return &jfspb.SetAttrResponse{Errno: eno(syscall.EFBIG)}
		}
		if req.GetSize() != n.Size {
			t.truncate(ino, n, req.GetSize())
		}
		n.Mtime = t.now
		n.Mode = killPriv(n.Mode, n.Gid, c)
	}
	if has(jfspb.SetAttrMask_SET_ATTR_MODE) {
		n.Mode = n.typ() | mode
	}
	chown := has(jfspb.SetAttrMask_SET_ATTR_UID) || has(jfspb.SetAttrMask_SET_ATTR_GID)
	if chown && c != nil && !has(jfspb.SetAttrMask_SET_ATTR_MODE) {
		n.Mode = chownKill(n.Mode, n.Gid, c)
	}
	if has(jfspb.SetAttrMask_SET_ATTR_UID) {
		n.Uid = req.GetUid()
	}
	if has(jfspb.SetAttrMask_SET_ATTR_GID) {
		n.Gid = req.GetGid()
	}
	switch {
	case has(jfspb.SetAttrMask_SET_ATTR_ATIME_NOW):
		n.Atime = t.now
	case has(jfspb.SetAttrMask_SET_ATTR_ATIME):
		n.Atime = req.GetAtimeNs()
	}
	switch {
	case has(jfspb.SetAttrMask_SET_ATTR_MTIME_NOW):
		n.Mtime = t.now
	case has(jfspb.SetAttrMask_SET_ATTR_MTIME):
		n.Mtime = req.GetMtimeNs()
	}
	if has(jfspb.SetAttrMask_SET_ATTR_CTIME) {
		n.Ctime = req.GetCtimeNs()
	} else if valid != 0 {
		n.Ctime = t.now
	}
	t.putInode(ino, n)
	return &jfspb.SetAttrResponse{Attr: n.attr(ino)}
}

// atimeDayNs is relatime's longest interval between atime updates.
const atimeDayNs = 24 * 60 * 60 * 1e9

// relatimeDue reports whether a read at now (Unix ns) must update an atime
// under Linux's relatime rule: the atime is not later than the mtime or the
// ctime, or it is at least a day old.
func relatimeDue(atime, mtime, ctime, now int64) bool {
	return atime <= mtime || atime <= ctime || now-atime >= atimeDayNs
}

// applyTouchAtime records a read of an inode: its atime becomes the
// command's time when relatimeDue says so; the ctime stays. ENOENT.
func (t *txn) applyTouchAtime(req *jfspb.TouchAtimeRequest) *jfspb.TouchAtimeResponse {
	ino := req.GetIno()
	n := t.inode(ino)
	if n == nil {
		return &jfspb.TouchAtimeResponse{Errno: eno(syscall.ENOENT)}
	}
	updated := relatimeDue(n.Atime, n.Mtime, n.Ctime, t.now)
	if updated {
		n.Atime = t.now
		t.putInode(ino, n)
	}
	return &jfspb.TouchAtimeResponse{Attr: n.attr(ino), Updated: updated}
}

// StatFS reports capacity and use: used bytes are the stored data blocks,
// used inodes every allocated inode (sustained ones included). Total and
// free bytes are 0 when no capacity is set, total and free inodes 0 when
// no inode limit is set: the node then fills them in from its disk.
func (f *FSM) StatFS(*jfspb.StatFSRequest) *jfspb.StatFSResponse {
	return read(f, func(t *txn) *jfspb.StatFSResponse {
		s := t.settings()
		used, files := t.metaGet(metaUsedBytes), t.metaGet(metaUsedInodes)
		r := &jfspb.StatFSResponse{
			UsedBytes:  used,
			UsedInodes: files,
			BlockSize:  uint32(s.blockSize),
			NameMax:    MaxNameLen,
		}
		if s.capacity != 0 {
			r.TotalBytes, r.FreeBytes = s.capacity, s.capacity-min(used, s.capacity)
		}
		if s.maxInodes != 0 {
			r.TotalInodes, r.FreeInodes = s.maxInodes, s.maxInodes-min(files, s.maxInodes)
		}
		return r
	})
}
