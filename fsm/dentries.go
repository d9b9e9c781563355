package fsm

import (
	"bytes"
	"encoding/binary"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// renameat2 flags.
const (
	renameNoReplace = 1 << 0 // RENAME_NOREPLACE
	renameExchange  = 1 << 1 // RENAME_EXCHANGE
)

const (
	defaultReadDirLimit = 1024
	maxReadDirLimit     = 8192
)

// checkName validates one path component: ENAMETOOLONG past 255 bytes;
// EINVAL when empty, "." or "..", or holding '/' or NUL.
func checkName(name []byte) syscall.Errno {
	switch {
	case len(name) > MaxNameLen:
		return syscall.ENAMETOOLONG
	case len(name) == 0, string(name) == ".", string(name) == "..",
		bytes.IndexByte(name, '/') >= 0, bytes.IndexByte(name, 0) >= 0:
		return syscall.EINVAL
	}
	return 0
}

// entry looks name up in directory parent.
func (t *txn) entry(parent uint64, name []byte) (ino, cookie uint64, ok bool) {
	v := t.b(bucketDentry).Get(keyName(parent, name))
	if len(v) != 16 {
		if v != nil {
			t.fail(errCorruptRecord("dentry of directory", parent))
		}
		return 0, 0, false
	}
	return binary.BigEndian.Uint64(v), binary.BigEndian.Uint64(v[8:]), true
}

// putEntry stores the entry name -> ino with its cookie in both indexes.
func (t *txn) putEntry(parent uint64, name []byte, ino, cookie uint64) {
	t.put(bucketDentry, keyName(parent, name), key2(ino, cookie))
	v := make([]byte, 8, 8+len(name))
	binary.BigEndian.PutUint64(v, ino)
	t.put(bucketCookie, key2(parent, cookie), append(v, name...))
}

// addEntry links name to ino in directory parent (record pn) with the next
// cookie, and stamps the directory's mtime and ctime; the caller stores pn.
func (t *txn) addEntry(parent uint64, pn *inode, name []byte, ino uint64) {
	cookie := pn.NextCookie
	pn.NextCookie++
	t.putEntry(parent, name, ino, cookie)
	pn.Mtime, pn.Ctime = t.now, t.now
}

// removeEntry unlinks name from directory parent (record pn); the caller
// stores pn.
func (t *txn) removeEntry(parent uint64, pn *inode, name []byte, cookie uint64) {
	t.del(bucketDentry, keyName(parent, name))
	t.del(bucketCookie, key2(parent, cookie))
	pn.Mtime, pn.Ctime = t.now, t.now
}

func (t *txn) dirEmpty(ino uint64) bool { return !t.hasPrefix(bucketDentry, u64(ino)) }

// isAncestor reports whether directory a is d or one of d's ancestors.
func (t *txn) isAncestor(a, d uint64) bool {
	for {
		if d == a {
			return true
		}
		if d == RootIno {
			return false
		}
		n := t.inode(d)
		if n == nil || n.Parent == d {
			return false
		}
		d = n.Parent
	}
}

// makeNode creates n under name in directory parent for c, who owns it
// unless c is root (newOwner). Errnos: EINVAL, ENAMETOOLONG (name); ENOENT,
// ENOTDIR (parent); EACCES (no search permission on parent); EEXIST;
// EACCES (no write permission on parent); ENOSPC.
func (t *txn) makeNode(parent uint64, name []byte, n *inode, c *jfspb.Cred) (uint64, syscall.Errno) {
	if e := checkName(name); e != 0 {
		return 0, e
	}
	pn, e := t.dir(parent)
	if e != 0 {
		return 0, e
	}
	if e := pn.maySearch(c); e != 0 {
		return 0, e
	}
	if _, _, ok := t.entry(parent, name); ok {
		return 0, syscall.EEXIST
	}
	if e := pn.mayCreate(c); e != 0 {
		return 0, e
	}
	t.initOwner(pn, n, c)
	if n.isDir() {
		n.Parent = parent
	}
	ino, e := t.newInode(n)
	if e != 0 {
		return 0, e
	}
	t.addEntry(parent, pn, name, ino)
	if n.isDir() {
		pn.Nlink++
	}
	t.putInode(parent, pn)
	return ino, 0
}

// initOwner gives n, about to be made in directory pn by c, its owner and
// set-gid bit as the kernel's inode_init_owner does: c's ids (newOwner);
// in a set-gid directory the directory's group, and a subdirectory is
// set-gid too; a set-gid, group-executable file made there by someone
// outside that group (and not root) loses S_ISGID.
func (t *txn) initOwner(pn, n *inode, c *jfspb.Cred) {
	n.Uid, n.Gid = newOwner(c, n.Uid, n.Gid)
	if pn.Mode&syscall.S_ISGID == 0 {
		return
	}
	n.Gid = pn.Gid
	switch {
	case n.isDir():
		n.Mode |= syscall.S_ISGID
	case n.Mode&(syscall.S_ISGID|0o010) == syscall.S_ISGID|0o010 && !isRoot(c) && !inGroup(c, n.Gid):
		n.Mode &^= syscall.S_ISGID
	}
}

// Lookup finds name in directory parent: ENOENT, ENOTDIR, EACCES (no
// search permission on parent), ENAMETOOLONG, EINVAL. "." and ".." are
// answered from the directory itself.
func (f *FSM) Lookup(req *jfspb.LookupRequest) *jfspb.LookupResponse {
	return read(f, func(t *txn) *jfspb.LookupResponse {
		parent, name := req.GetParent(), req.GetName()
		pn, e := t.dir(parent)
		if e != 0 {
			return &jfspb.LookupResponse{Errno: eno(e)}
		}
		if e := pn.maySearch(req.GetCred()); e != 0 {
			return &jfspb.LookupResponse{Errno: eno(e)}
		}
		var ino uint64
		switch string(name) {
		case ".":
			return &jfspb.LookupResponse{Attr: pn.attr(parent)}
		case "..":
			ino = pn.Parent
		default:
			if e := checkName(name); e != 0 {
				return &jfspb.LookupResponse{Errno: eno(e)}
			}
			var ok bool
			if ino, _, ok = t.entry(parent, name); !ok {
				return &jfspb.LookupResponse{Errno: eno(syscall.ENOENT)}
			}
		}
		n := t.inode(ino)
		if n == nil {
			t.fail(errCorruptRecord("entry pointing to a missing inode, ino", ino))
			return nil
		}
		return &jfspb.LookupResponse{Attr: n.attr(ino)}
	})
}

// ReadDir lists the entries of a directory after req.Cookie, with their
// attributes: ENOENT, ENOTDIR; EACCES without read permission (or
// ownership: see mayUse), which the kernel checks at opendir. A removed
// directory kept open lists nothing.
func (f *FSM) ReadDir(req *jfspb.ReadDirRequest) *jfspb.ReadDirResponse {
	return read(f, func(t *txn) *jfspb.ReadDirResponse {
		dir := req.GetIno()
		if n := t.inode(dir); n != nil && n.isDir() && n.Nlink == 0 {
			return &jfspb.ReadDirResponse{Eof: true}
		}
		dn, e := t.dir(dir)
		if e != 0 {
			return &jfspb.ReadDirResponse{Errno: eno(e)}
		}
		if e := dn.mayUse(req.GetCred(), MayRead); e != 0 {
			return &jfspb.ReadDirResponse{Errno: eno(e)}
		}
		limit := int(req.GetLimit())
		if limit <= 0 {
			limit = defaultReadDirLimit
		}
		limit = min(limit, maxReadDirLimit)
		start := max(req.GetCookie()+1, firstCookie)
		if req.GetCookie() == ^uint64(0) {
			return &jfspb.ReadDirResponse{Eof: true}
		}
		resp := &jfspb.ReadDirResponse{Eof: true}
		c := t.b(bucketCookie).Cursor()
		prefix := u64(dir)
		for k, v := c.Seek(key2(dir, start)); k != nil && bytes.HasPrefix(k, prefix); k, v = c.Next() {
			if len(resp.Entries) == limit {
				resp.Eof = false
				break
			}
			if len(k) != 16 || len(v) < 8 {
				t.fail(errCorruptRecord("cookie of directory", dir))
				return nil
			}
			ino := binary.BigEndian.Uint64(v)
			n := t.inode(ino)
			if n == nil {
				t.fail(errCorruptRecord("entry pointing to a missing inode, ino", ino))
				return nil
			}
			resp.Entries = append(resp.Entries, &jfspb.DirEntry{
				Name:   bytes.Clone(v[8:]),
				Cookie: binary.BigEndian.Uint64(k[8:]),
				Attr:   n.attr(ino),
			})
		}
		return resp
	})
}

// applyMknod creates a regular file, fifo, socket or device: EPERM for a
// directory, EINVAL for a symlink or an unknown type, else as makeNode.
func (t *txn) applyMknod(req *jfspb.MknodRequest) *jfspb.MknodResponse {
	mode := req.GetMode()
	typ := mode & syscall.S_IFMT
	var rdev uint32
	switch typ {
	case 0:
		typ = syscall.S_IFREG
	case syscall.S_IFREG, syscall.S_IFIFO, syscall.S_IFSOCK:
	case syscall.S_IFCHR, syscall.S_IFBLK:
		if !isRoot(req.GetHeader().GetCred()) {
			return &jfspb.MknodResponse{Errno: eno(syscall.EPERM)} // CAP_MKNOD
		}
		rdev = req.GetRdev()
	case syscall.S_IFDIR:
		return &jfspb.MknodResponse{Errno: eno(syscall.EPERM)}
	default:
		return &jfspb.MknodResponse{Errno: eno(syscall.EINVAL)}
	}
	n := &inode{
		Mode: typ | mode&0o7777&^req.GetUmask(), Uid: req.GetUid(), Gid: req.GetGid(),
		Rdev: rdev, Nlink: 1,
	}
	ino, e := t.makeNode(req.GetParent(), req.GetName(), n, req.GetHeader().GetCred())
	if e != 0 {
		return &jfspb.MknodResponse{Errno: eno(e)}
	}
	return &jfspb.MknodResponse{Attr: n.attr(ino)}
}

// applyMkdir creates a directory with nlink 2; its parent gains a link.
func (t *txn) applyMkdir(req *jfspb.MkdirRequest) *jfspb.MkdirResponse {
	n := &inode{
		Mode: syscall.S_IFDIR | req.GetMode()&0o7777&^req.GetUmask(),
		Uid:  req.GetUid(), Gid: req.GetGid(), Nlink: 2,
	}
	ino, e := t.makeNode(req.GetParent(), req.GetName(), n, req.GetHeader().GetCred())
	if e != 0 {
		return &jfspb.MkdirResponse{Errno: eno(e)}
	}
	return &jfspb.MkdirResponse{Attr: n.attr(ino)}
}

// applyCreate creates a regular file and opens it for the session. An
// existing name is EEXIST with O_EXCL, EISDIR for a directory, and is
// opened otherwise.
func (t *txn) applyCreate(req *jfspb.CreateRequest) *jfspb.CreateResponse {
	if req.GetTmpfile() {
		return t.createTmpfile(req)
	}
	parent, name := req.GetParent(), req.GetName()
	c := req.GetHeader().GetCred()
	if e := checkName(name); e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	pn, e := t.dir(parent)
	if e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	if e := pn.maySearch(c); e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	if ino, _, ok := t.entry(parent, name); ok {
		n := t.inode(ino)
		switch {
		case n == nil:
			t.fail(errCorruptRecord("entry pointing to a missing inode, ino", ino))
			return nil
		case req.GetFlags()&syscall.O_EXCL != 0:
			return &jfspb.CreateResponse{Errno: eno(syscall.EEXIST)}
		case n.isDir():
			return &jfspb.CreateResponse{Errno: eno(syscall.EISDIR)}
		}
		if e := MayOpen(n.attr(ino), c, req.GetFlags()); e != 0 {
			return &jfspb.CreateResponse{Errno: eno(e)}
		}
		t.openFile(ino, n, req.GetFlags(), req.GetFh(), true, c)
		return &jfspb.CreateResponse{Attr: n.attr(ino)}
	}
	n := &inode{
		Mode: syscall.S_IFREG | req.GetMode()&0o7777&^req.GetUmask(),
		Uid:  req.GetUid(), Gid: req.GetGid(), Nlink: 1,
	}
	ino, e := t.makeNode(parent, name, n, c)
	if e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	t.openFile(ino, n, 0, req.GetFh(), false, c)
	return &jfspb.CreateResponse{Attr: n.attr(ino), Created: true}
}

// linkableTmpfile is the sustained record of an O_TMPFILE file created
// without O_EXCL: LinkRequest may give it a name (once; a file unlinked
// later is sustained with an empty record and cannot be linked again).
var linkableTmpfile = []byte{1}

// createTmpfile creates an unnamed regular file for O_TMPFILE, opened by
// the session: ENOENT, ENOTDIR (parent), ENOSPC. It has nlink 0 and is
// sustained until its last close; the directory is not changed, but gives
// its group when it is setgid, as for a named file.
func (t *txn) createTmpfile(req *jfspb.CreateRequest) *jfspb.CreateResponse {
	c := req.GetHeader().GetCred()
	pn, e := t.dir(req.GetParent())
	if e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	if e := pn.mayCreate(c); e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	n := &inode{
		Mode: syscall.S_IFREG | req.GetMode()&0o7777&^req.GetUmask(),
		Uid:  req.GetUid(), Gid: req.GetGid(),
	}
	t.initOwner(pn, n, c)
	ino, e := t.newInode(n)
	if e != 0 {
		return &jfspb.CreateResponse{Errno: eno(e)}
	}
	t.openFile(ino, n, 0, req.GetFh(), false, c)
	mark := linkableTmpfile
	if req.GetFlags()&syscall.O_EXCL != 0 {
		mark = nil
	}
	t.put(bucketSustained, u64(ino), mark)
	return &jfspb.CreateResponse{Attr: n.attr(ino), Created: true}
}

// applyUnlink removes a name of a non-directory: EISDIR on a directory,
// ENOENT, ENOTDIR, EINVAL, ENAMETOOLONG. The inode is freed with its last
// name unless a session has it open (it is then sustained).
func (t *txn) applyUnlink(req *jfspb.UnlinkRequest) *jfspb.UnlinkResponse {
	t.freeHint = req.GetFreeHint()
	parent, name := req.GetParent(), req.GetName()
	c := req.GetHeader().GetCred()
	if e := checkName(name); e != 0 {
		return &jfspb.UnlinkResponse{Errno: eno(e)}
	}
	pn, e := t.dir(parent)
	if e != 0 {
		return &jfspb.UnlinkResponse{Errno: eno(e)}
	}
	if e := pn.maySearch(c); e != 0 {
		return &jfspb.UnlinkResponse{Errno: eno(e)}
	}
	ino, cookie, ok := t.entry(parent, name)
	if !ok {
		return &jfspb.UnlinkResponse{Errno: eno(syscall.ENOENT)}
	}
	n := t.inode(ino)
	if n == nil {
		t.fail(errCorruptRecord("entry pointing to a missing inode, ino", ino))
		return nil
	}
	if e := pn.mayDelete(n, c); e != 0 {
		return &jfspb.UnlinkResponse{Errno: eno(e)}
	}
	if n.isDir() {
		return &jfspb.UnlinkResponse{Errno: eno(syscall.EISDIR)}
	}
	t.removeEntry(parent, pn, name, cookie)
	t.putInode(parent, pn)
	t.dropLink(ino, n)
	return &jfspb.UnlinkResponse{Attr: n.attr(ino)}
}

// applyRmdir removes an empty directory: ENOTDIR, ENOTEMPTY, ENOENT,
// EINVAL, ENAMETOOLONG.
func (t *txn) applyRmdir(req *jfspb.RmdirRequest) *jfspb.RmdirResponse {
	t.freeHint = req.GetFreeHint()
	parent, name := req.GetParent(), req.GetName()
	c := req.GetHeader().GetCred()
	if e := checkName(name); e != 0 {
		return &jfspb.RmdirResponse{Errno: eno(e)}
	}
	pn, e := t.dir(parent)
	if e != 0 {
		return &jfspb.RmdirResponse{Errno: eno(e)}
	}
	if e := pn.maySearch(c); e != 0 {
		return &jfspb.RmdirResponse{Errno: eno(e)}
	}
	ino, cookie, ok := t.entry(parent, name)
	if !ok {
		return &jfspb.RmdirResponse{Errno: eno(syscall.ENOENT)}
	}
	n := t.inode(ino)
	if n == nil {
		t.fail(errCorruptRecord("entry pointing to a missing inode, ino", ino))
		return nil
	}
	if e := pn.mayDelete(n, c); e != 0 {
		return &jfspb.RmdirResponse{Errno: eno(e)}
	}
	switch {
	case !n.isDir():
		return &jfspb.RmdirResponse{Errno: eno(syscall.ENOTDIR)}
	case !t.dirEmpty(ino):
		return &jfspb.RmdirResponse{Errno: eno(syscall.ENOTEMPTY)}
	}
	t.removeEntry(parent, pn, name, cookie)
	pn.Nlink--
	t.putInode(parent, pn)
	t.dropDir(ino, n)
	return &jfspb.RmdirResponse{}
}

// applyRename is renameat2(2). Errnos, in the order they are checked:
// EINVAL (flags: unknown bit, or both NOREPLACE and EXCHANGE; names);
// ENAMETOOLONG; ENOENT, ENOTDIR (parents); ENOENT (source missing, or the
// target with EXCHANGE); EEXIST (target present with NOREPLACE); EINVAL (a
// directory into its own subtree); then success without change when both
// names are links of one inode; ENOTDIR (directory over non-directory),
// EISDIR (non-directory over directory), ENOTEMPTY (over a non-empty
// directory).
func (t *txn) applyRename(req *jfspb.RenameRequest) *jfspb.RenameResponse {
	t.freeHint = req.GetFreeHint()
	fail := func(e syscall.Errno) *jfspb.RenameResponse { return &jfspb.RenameResponse{Errno: eno(e)} }
	flags := req.GetFlags()
	if flags&^(renameNoReplace|renameExchange) != 0 || flags == renameNoReplace|renameExchange {
		return fail(syscall.EINVAL)
	}
	exchange := flags&renameExchange != 0
	parent, name := req.GetParent(), req.GetName()
	newParent, newName := req.GetNewParent(), req.GetNewName()
	if e := checkName(name); e != 0 {
		return fail(e)
	}
	if e := checkName(newName); e != 0 {
		return fail(e)
	}
	c := req.GetHeader().GetCred()
	sp, e := t.dir(parent)
	if e != 0 {
		return fail(e)
	}
	if e := sp.maySearch(c); e != 0 {
		return fail(e)
	}
	dp := sp
	if newParent != parent {
		if dp, e = t.dir(newParent); e != 0 {
			return fail(e)
		}
		if e := dp.maySearch(c); e != 0 {
			return fail(e)
		}
	}
	sIno, sCookie, ok := t.entry(parent, name)
	if !ok {
		return fail(syscall.ENOENT)
	}
	dIno, dCookie, dOK := t.entry(newParent, newName)
	switch {
	case exchange && !dOK:
		return fail(syscall.ENOENT)
	case flags&renameNoReplace != 0 && dOK:
		return fail(syscall.EEXIST)
	}
	sn := t.inode(sIno)
	if sn == nil {
		t.fail(errCorruptRecord("entry pointing to a missing inode, ino", sIno))
		return nil
	}
	var dn *inode
	if dOK {
		if dn = t.inode(dIno); dn == nil {
			t.fail(errCorruptRecord("entry pointing to a missing inode, ino", dIno))
			return nil
		}
	}
	if parent != newParent {
		if sn.isDir() && t.isAncestor(sIno, newParent) {
			return fail(syscall.EINVAL)
		}
		if exchange && dn.isDir() && t.isAncestor(dIno, parent) {
			return fail(syscall.EINVAL)
		}
	}
	if dOK && sIno == dIno {
		return &jfspb.RenameResponse{}
	}
	if e := renameAccess(sp, sn, dp, dn, parent != newParent, exchange, c); e != 0 {
		return fail(e)
	}

	if exchange {
		t.putEntry(parent, name, dIno, sCookie)
		t.putEntry(newParent, newName, sIno, dCookie)
		if parent != newParent {
			if sn.isDir() {
				sn.Parent = newParent
				sp.Nlink--
				dp.Nlink++
			}
			if dn.isDir() {
				dn.Parent = parent
				dp.Nlink--
				sp.Nlink++
			}
		}
		sn.Ctime, dn.Ctime = t.now, t.now
		sp.Mtime, sp.Ctime, dp.Mtime, dp.Ctime = t.now, t.now, t.now, t.now
		t.putInode(sIno, sn)
		t.putInode(dIno, dn)
		t.putInode(parent, sp)
		t.putInode(newParent, dp)
		return &jfspb.RenameResponse{}
	}

	if dOK {
		switch {
		case sn.isDir() && !dn.isDir():
			return fail(syscall.ENOTDIR)
		case !sn.isDir() && dn.isDir():
			return fail(syscall.EISDIR)
		case dn.isDir() && !t.dirEmpty(dIno):
			return fail(syscall.ENOTEMPTY)
		}
	}
	t.removeEntry(parent, sp, name, sCookie)
	if dOK {
		t.removeEntry(newParent, dp, newName, dCookie)
		if dn.isDir() {
			dp.Nlink--
			t.dropDir(dIno, dn)
		} else {
			t.dropLink(dIno, dn)
		}
	}
	t.addEntry(newParent, dp, newName, sIno)
	if sn.isDir() && parent != newParent {
		sn.Parent = newParent
		sp.Nlink--
		dp.Nlink++
	}
	sn.Ctime = t.now
	t.putInode(sIno, sn)
	t.putInode(parent, sp)
	t.putInode(newParent, dp)
	return &jfspb.RenameResponse{}
}

// renameAccess is the permission part of vfs_rename: the source may be
// deleted from its directory sp; the target, when there is one (dn), may be
// deleted from dp, else dp allows creation; a directory that moves to
// another parent must be writable, as its ".." changes (both, for an
// exchange of two directories).
func renameAccess(sp, sn, dp, dn *inode, moved, exchange bool, c *jfspb.Cred) syscall.Errno {
	if e := sp.mayDelete(sn, c); e != 0 {
		return e
	}
	if dn == nil {
		if e := dp.mayCreate(c); e != 0 {
			return e
		}
	} else if e := dp.mayDelete(dn, c); e != 0 {
		return e
	}
	if !moved {
		return 0
	}
	if sn.isDir() {
		if e := sn.access(c, MayWrite); e != 0 {
			return e
		}
	}
	if exchange && dn.isDir() {
		return dn.access(c, MayWrite)
	}
	return 0
}

// applyLink adds a name for an inode: EINVAL, ENAMETOOLONG (name); ENOENT
// (inode missing, or unlinked and not a linkable O_TMPFILE file); EPERM
// (protected hard links: mayLink); ENOENT, ENOTDIR (parent); EACCES (search
// on parent); EEXIST; EACCES (write on parent); EPERM for a directory;
// EMLINK past 2^32-1 links.
func (t *txn) applyLink(req *jfspb.LinkRequest) *jfspb.LinkResponse {
	fail := func(e syscall.Errno) *jfspb.LinkResponse { return &jfspb.LinkResponse{Errno: eno(e)} }
	ino, parent, name := req.GetIno(), req.GetNewParent(), req.GetNewName()
	if e := checkName(name); e != 0 {
		return fail(e)
	}
	c := req.GetHeader().GetCred()
	n := t.inode(ino)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	if e := n.mayLink(c); e != 0 {
		return fail(e)
	}
	pn, e := t.dir(parent)
	if e != 0 {
		return fail(e)
	}
	if e := pn.maySearch(c); e != 0 {
		return fail(e)
	}
	if _, _, ok := t.entry(parent, name); ok {
		return fail(syscall.EEXIST)
	}
	if e := pn.mayCreate(c); e != 0 {
		return fail(e)
	}
	switch {
	case n.isDir():
		return fail(syscall.EPERM)
	case n.Nlink == 0 && !bytes.Equal(t.get(bucketSustained, u64(ino)), linkableTmpfile):
		return fail(syscall.ENOENT)
	case n.Nlink == ^uint32(0):
		return fail(syscall.EMLINK)
	}
	if n.Nlink == 0 {
		t.del(bucketSustained, u64(ino)) // named now, no longer linkable
	}
	t.addEntry(parent, pn, name, ino)
	n.Nlink++
	n.Ctime = t.now
	t.putInode(parent, pn)
	t.putInode(ino, n)
	return &jfspb.LinkResponse{Attr: n.attr(ino)}
}

// applySymlink creates a symbolic link: ENAMETOOLONG for a target past 4096
// bytes, ENOENT for an empty one, else as makeNode.
func (t *txn) applySymlink(req *jfspb.SymlinkRequest) *jfspb.SymlinkResponse {
	target := req.GetTarget()
	switch {
	case len(target) > MaxSymlinkLen:
		return &jfspb.SymlinkResponse{Errno: eno(syscall.ENAMETOOLONG)}
	case len(target) == 0:
		return &jfspb.SymlinkResponse{Errno: eno(syscall.ENOENT)}
	}
	n := &inode{
		Mode: syscall.S_IFLNK | 0o777, Uid: req.GetUid(), Gid: req.GetGid(),
		Nlink: 1, Size: uint64(len(target)),
	}
	ino, e := t.makeNode(req.GetParent(), req.GetName(), n, req.GetHeader().GetCred())
	if e != 0 {
		return &jfspb.SymlinkResponse{Errno: eno(e)}
	}
	t.put(bucketSymlink, u64(ino), bytes.Clone(target))
	return &jfspb.SymlinkResponse{Attr: n.attr(ino)}
}

// ReadLink answers a symlink's target: ENOENT, EINVAL if not a symlink.
func (f *FSM) ReadLink(req *jfspb.ReadLinkRequest) *jfspb.ReadLinkResponse {
	return read(f, func(t *txn) *jfspb.ReadLinkResponse {
		n := t.inode(req.GetIno())
		switch {
		case n == nil:
			return &jfspb.ReadLinkResponse{Errno: eno(syscall.ENOENT)}
		case !n.isLink():
			return &jfspb.ReadLinkResponse{Errno: eno(syscall.EINVAL)}
		}
		return &jfspb.ReadLinkResponse{Target: t.get(bucketSymlink, u64(req.GetIno()))}
	})
}
