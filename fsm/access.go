package fsm

import (
	"bytes"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Permission checks, as Linux makes them for a file system mounted with
// default_permissions: generic_permission, may_open, may_create,
// may_delete, setattr_prepare and xattr_permission of the kernel, with the
// caller's credentials (jfspb.Cred) taken from the request.
//
// Every function here is pure: it looks only at the attributes and the
// credentials it is given, so apply stays deterministic and the read side
// (a leader answering Open from memory, say) can ask the same questions.
//
// A nil cred means "no credentials": a log entry written before requests
// carried them. It passes every check and changes nothing the checks would
// change (no setuid clearing, no owner override), so an old log replays to
// the state it gave. The API refuses new requests without credentials
// where a check needs them (cluster/creds.go).
//
// Errnos: EACCES when the mode bits refuse; EPERM when an ownership rule
// does (chmod, chown, explicit times, sticky directories, trusted.*).

// Access masks, the kernel's MAY_EXEC, MAY_WRITE and MAY_READ.
const (
	MayExec  uint32 = 1
	MayWrite uint32 = 2
	MayRead  uint32 = 4
)

// fmodeExec is __FMODE_EXEC: the kernel's open of a file for execve sets it
// in the flags FUSE passes, and asks for MAY_EXEC instead of MAY_READ.
const fmodeExec = 0x20

// isRoot reports whether c passes as root: uid 0, or no credentials.
func isRoot(c *jfspb.Cred) bool { return c == nil || c.GetUid() == 0 }

// inGroup reports whether c has gid as its gid or a supplementary group
// (in_group_p). A nil cred is in every group.
func inGroup(c *jfspb.Cred, gid uint32) bool {
	if c == nil || c.GetGid() == gid {
		return true
	}
	for _, g := range c.GetGroups() {
		if g == gid {
			return true
		}
	}
	return false
}

// isOwner reports whether c owns a file of uid, or is root
// (inode_owner_or_capable).
func isOwner(c *jfspb.Cred, uid uint32) bool { return isRoot(c) || c.GetUid() == uid }

// CheckAccess is generic_permission: may c access a file of mode (with its
// S_IFMT bits), uid and gid for mask (MayRead|MayWrite|MayExec)? The owner
// class applies to the owner, the group class to a member of the file's
// group, the other class to the rest, even when a later class has more
// bits. Root may do anything but execute a non-directory that has no
// execute bit at all. 0 or EACCES.
func CheckAccess(mode, uid, gid uint32, c *jfspb.Cred, mask uint32) syscall.Errno {
	mask &= MayRead | MayWrite | MayExec
	switch {
	case c == nil:
		return 0
	case c.GetUid() == 0:
		if mask&MayExec != 0 && mode&syscall.S_IFMT != syscall.S_IFDIR && mode&0o111 == 0 {
			return syscall.EACCES
		}
		return 0
	}
	var bits uint32
	switch {
	case c.GetUid() == uid:
		bits = mode >> 6
	case inGroup(c, gid):
		bits = mode >> 3
	default:
		bits = mode
	}
	if mask&^(bits&7) != 0 {
		return syscall.EACCES
	}
	return 0
}

// access is CheckAccess on a stored inode.
func (n *inode) access(c *jfspb.Cred, mask uint32) syscall.Errno {
	return CheckAccess(n.Mode, n.Uid, n.Gid, c, mask)
}

// openMask is the access an open(2) with flags asks for: MAY_READ for
// O_RDONLY (MAY_EXEC for the open of execve), MAY_WRITE for O_WRONLY, both
// for O_RDWR and for the ioctl-only mode 3; O_TRUNC adds MAY_WRITE.
func openMask(flags uint32) uint32 {
	var mask uint32
	switch flags & syscall.O_ACCMODE {
	case syscall.O_RDONLY:
		mask = MayRead
		if flags&fmodeExec != 0 {
			mask = MayExec
		}
	case syscall.O_WRONLY:
		mask = MayWrite
	default:
		mask = MayRead | MayWrite
	}
	if flags&syscall.O_TRUNC != 0 {
		mask |= MayWrite
	}
	return mask
}

// MayOpen is may_open: may c open the file of attr with open(2) flags?
// EISDIR when a directory is opened for writing or with O_TRUNC; EACCES
// when the mode bits refuse the access the flags ask for (see openMask);
// EPERM for O_NOATIME by someone other than the owner or root. Without
// credentials (c nil) everything passes.
func MayOpen(attr *jfspb.Attr, c *jfspb.Cred, flags uint32) syscall.Errno {
	if c == nil {
		return 0
	}
	mask := openMask(flags)
	if attr.GetMode()&syscall.S_IFMT == syscall.S_IFDIR && mask&MayWrite != 0 {
		return syscall.EISDIR
	}
	if e := CheckAccess(attr.GetMode(), attr.GetUid(), attr.GetGid(), c, mask); e != 0 {
		return e
	}
	if flags&syscall.O_NOATIME != 0 && !isOwner(c, attr.GetUid()) {
		return syscall.EPERM
	}
	return 0
}

// mayUse is the check of a read or write through the API: the mode bits
// allow it, or c owns the file (an owner could give itself the access with
// chmod anyway). The kernel checks at open only, and an open file keeps its
// access after a chmod; the cluster does not know which open a read or
// write comes through, so the owner rule keeps the common case (a file
// made read-only by its owner while open for writing) working.
func (n *inode) mayUse(c *jfspb.Cred, mask uint32) syscall.Errno {
	if isOwner(c, n.Uid) {
		return 0
	}
	return n.access(c, mask)
}

// maySearch is the search (execute) permission on directory n that the
// kernel checks before it looks up a name in it. jfs resolves by inode, so
// the server checks the parent of each name it is given.
func (n *inode) maySearch(c *jfspb.Cred) syscall.Errno { return n.access(c, MayExec) }

// mayCreate is may_create: write and search permission on directory n.
func (n *inode) mayCreate(c *jfspb.Cred) syscall.Errno {
	return n.access(c, MayWrite|MayExec)
}

// mayDelete is may_delete: write and search permission on directory n, and,
// if n is sticky, ownership of the victim or of n (or root): EPERM.
func (n *inode) mayDelete(victim *inode, c *jfspb.Cred) syscall.Errno {
	if e := n.mayCreate(c); e != 0 {
		return e
	}
	if n.Mode&syscall.S_ISVTX != 0 && !isOwner(c, victim.Uid) && c.GetUid() != n.Uid {
		return syscall.EPERM
	}
	return 0
}

// mayLock is the check of a lock request: the kernel takes a read lock
// only through a descriptor open for reading and a write lock only through
// one open for writing (EBADF otherwise), and a flock through any
// descriptor. The cluster does not know the descriptor, so it asks for what
// opening one would need: read (or write, for flock) permission, or
// ownership (see mayUse). Unlocking is always allowed. EBADF.
func (n *inode) mayLock(c *jfspb.Cred, typ jfspb.LockType, flock bool) syscall.Errno {
	var e syscall.Errno
	switch {
	case typ == jfspb.LockType_LOCK_TYPE_UNLOCK:
	case flock:
		if n.mayUse(c, MayRead) != 0 {
			e = n.mayUse(c, MayWrite)
		}
	case typ == jfspb.LockType_LOCK_TYPE_READ:
		e = n.mayUse(c, MayRead)
	default:
		e = n.mayUse(c, MayWrite)
	}
	if e != 0 {
		return syscall.EBADF
	}
	return 0
}

// mayLink is may_linkat with fs.protected_hardlinks = 1 (the setting of
// systemd's distributions): someone other than the owner or root may link
// only a regular file that is neither set-uid nor set-gid executable and
// that they may read and write. EPERM.
func (n *inode) mayLink(c *jfspb.Cred) syscall.Errno {
	switch {
	case isOwner(c, n.Uid):
		return 0
	case !n.isReg(), n.Mode&syscall.S_ISUID != 0, n.Mode&(syscall.S_ISGID|0o010) == syscall.S_ISGID|0o010,
		n.access(c, MayRead|MayWrite) != 0:
		return syscall.EPERM
	}
	return 0
}

// killPriv returns mode with the set-id bits that a write or truncate by c
// removes from a regular file (should_remove_suid): S_ISUID, and S_ISGID
// as dropSgid says; root (CAP_FSETID) keeps them.
func killPriv(mode, gid uint32, c *jfspb.Cred) uint32 {
	if isRoot(c) || mode&syscall.S_IFMT != syscall.S_IFREG {
		return mode
	}
	mode &^= syscall.S_ISUID
	if dropSgid(mode, gid, c) {
		mode &^= syscall.S_ISGID
	}
	return mode
}

// chownKill returns mode with the set-id bits a change of owner or group
// by c removes from a non-directory (chown_common): S_ISUID always, root
// or not, and S_ISGID as dropSgid says.
func chownKill(mode, gid uint32, c *jfspb.Cred) uint32 {
	if mode&syscall.S_IFMT == syscall.S_IFDIR {
		return mode
	}
	if dropSgid(mode, gid, c) {
		mode &^= syscall.S_ISGID
	}
	return mode &^ syscall.S_ISUID
}

// dropSgid is setattr_should_drop_sgid: S_ISGID goes with a change when
// the group may execute, or when c is neither root nor in the file's group
// gid (a set-gid file without group execute is otherwise a mandatory
// locking mark, which stays).
func dropSgid(mode, gid uint32, c *jfspb.Cred) bool {
	if mode&syscall.S_ISGID == 0 {
		return false
	}
	return mode&0o010 != 0 || !isRoot(c) && !inGroup(c, gid)
}

// newOwner is the owner a file created by c gets: c's uid and gid (the
// kernel's fsuid and fsgid); root may name another owner (uid and gid of
// the request). Without credentials, the request's.
func newOwner(c *jfspb.Cred, uid, gid uint32) (uint32, uint32) {
	if isRoot(c) {
		return uid, gid
	}
	return c.GetUid(), c.GetGid()
}

// setAttrCheck is setattr_prepare with the checks of notify_change and
// utimes: may c change the attributes of n as req asks? It returns the mode
// req.Mode should be replaced with when chmod must drop S_ISGID (the
// caller is not in the file's new group), or the errno.
//
//   - UID: root only; the owner may "change" it to itself. EPERM.
//   - GID: root, or the owner to one of its groups (or the file's). EPERM.
//   - MODE: the owner or root, EPERM; S_ISGID is dropped when the caller is
//     neither root nor in the group. A change that only drops S_ISUID or
//     S_ISGID is also allowed to whoever may write the file: it is what the
//     kernel sends (with ATTR_FORCE) before a write by a non-owner.
//   - SIZE: write permission or ownership (see mayUse). EACCES.
//   - explicit times (ATIME, MTIME, CTIME): the owner or root, EPERM; the
//     time "now" (ATIME_NOW, MTIME_NOW alone): also whoever may write,
//     else EACCES.
func setAttrCheck(n *inode, req *jfspb.SetAttrRequest, c *jfspb.Cred) (mode uint32, e syscall.Errno) {
	valid := req.GetValid()
	has := func(m jfspb.SetAttrMask) bool { return valid&uint32(m) != 0 }
	mode = req.GetMode() & 0o7777
	if c == nil {
		return mode, 0
	}
	owner := isOwner(c, n.Uid)
	if has(jfspb.SetAttrMask_SET_ATTR_UID) && !isRoot(c) && !(c.GetUid() == n.Uid && req.GetUid() == n.Uid) {
		return 0, syscall.EPERM
	}
	gid := n.Gid
	if has(jfspb.SetAttrMask_SET_ATTR_GID) {
		gid = req.GetGid()
		if !isRoot(c) && !(c.GetUid() == n.Uid && (inGroup(c, gid) || gid == n.Gid)) {
			return 0, syscall.EPERM
		}
	}
	if has(jfspb.SetAttrMask_SET_ATTR_MODE) {
		old := n.Mode & 0o7777
		killOnly := mode != old && mode == old&^(syscall.S_ISUID|syscall.S_ISGID)
		switch {
		case owner:
			if !isRoot(c) && !inGroup(c, gid) {
				mode &^= syscall.S_ISGID
			}
		case killOnly && n.access(c, MayWrite) == 0:
		default:
			return 0, syscall.EPERM
		}
	}
	if has(jfspb.SetAttrMask_SET_ATTR_SIZE) {
		if e := n.mayUse(c, MayWrite); e != 0 {
			return 0, e
		}
	}
	explicit := jfspb.SetAttrMask_SET_ATTR_ATIME | jfspb.SetAttrMask_SET_ATTR_MTIME | jfspb.SetAttrMask_SET_ATTR_CTIME
	now := jfspb.SetAttrMask_SET_ATTR_ATIME_NOW | jfspb.SetAttrMask_SET_ATTR_MTIME_NOW
	switch {
	case valid&uint32(explicit) != 0 && !owner:
		return 0, syscall.EPERM
	case valid&uint32(now) != 0 && !owner:
		if e := n.access(c, MayWrite); e != 0 {
			return 0, e
		}
	}
	return mode, 0
}

// Extended-attribute namespaces with rules of their own.
var (
	xattrTrusted = []byte("trusted.")
	xattrUser    = []byte("user.")
	xattrSecure  = []byte("security.")
	xattrSystem  = []byte("system.")
)

// xattrAccess is xattr_permission: may c read (MayRead) or write
// (MayWrite) attribute name of n? security.* and system.* are not checked
// (left to security modules, which jfs has none of); trusted.* is root's
// only (EPERM to write, ENODATA to read); user.* lives only on regular files
// and directories (EPERM to write elsewhere, ENODATA to read), and in a
// sticky directory only its owner or root may write one (EPERM); then the
// mode bits decide (EACCES).
func xattrAccess(n *inode, name []byte, c *jfspb.Cred, mask uint32) syscall.Errno {
	if c == nil {
		return 0
	}
	denied := syscall.ENODATA
	if mask&MayWrite != 0 {
		denied = syscall.EPERM
	}
	switch {
	case bytes.HasPrefix(name, xattrSecure), bytes.HasPrefix(name, xattrSystem):
		return 0
	case bytes.HasPrefix(name, xattrTrusted):
		if !isRoot(c) {
			return denied
		}
		return 0
	case bytes.HasPrefix(name, xattrUser):
		if !n.isReg() && !n.isDir() {
			return denied
		}
		if n.isDir() && n.Mode&syscall.S_ISVTX != 0 && mask&MayWrite != 0 && !isOwner(c, n.Uid) {
			return syscall.EPERM
		}
	}
	return n.access(c, mask)
}

// xattrListed reports whether listxattr shows name to c: trusted.* only to
// root, as local file systems do.
func xattrListed(name []byte, c *jfspb.Cred) bool {
	return isRoot(c) || !bytes.HasPrefix(name, xattrTrusted)
}
