package fuse

import (
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Names, attributes and extended attributes.

// Lookup resolves name in the directory header.NodeId. A name that does not
// exist is ENOENT, or a negative entry when NegativeTimeout is set.
func (fs *FS) Lookup(cancel <-chan struct{}, header *fuse.InHeader, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer fs.observe("Lookup", time.Now(), &st)
	req := &jfspb.LookupRequest{Parent: header.NodeId, Name: []byte(name)}
	var gen uint64
	if fs.coh != nil {
		req.CacheSession, req.MayCache, gen = fs.coh.begin()
	}
	r, err := fs.c.Lookup(fs.as(&header.Caller), req)
	if st = fs.status("lookup", err, r.GetErrno()); st == fuse.ENOENT && fs.opts.NegativeTimeout > 0 {
		*out = fuse.EntryOut{}
		out.SetEntryTimeout(fs.opts.NegativeTimeout)
		return fuse.OK
	} else if !st.Ok() {
		return st
	}
	fs.fillEntry(r.Attr, out)
	if r.CacheGrant {
		e := entryKey{header.NodeId, name}
		if d := fs.coh.timeout(req.CacheSession, gen, r.Attr.Ino, &e); d > 0 {
			out.SetEntryTimeout(d)
			if !fs.wb.buffered(r.Attr.Ino) {
				out.SetAttrTimeout(d)
			}
		}
	}
	return fuse.OK
}

// GetAttr answers stat(2), after the writes this mount buffers for the
// inode were sent: its size and times include them.
func (fs *FS) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) (st fuse.Status) {
	defer fs.observe("GetAttr", time.Now(), &st)
	fs.wb.sync(in.NodeId)
	req := &jfspb.GetAttrRequest{Ino: in.NodeId}
	var gen uint64
	if fs.coh != nil {
		req.CacheSession, req.MayCache, gen = fs.coh.begin()
	}
	r, err := fs.c.GetAttr(ctx(), req)
	if st = fs.byIno("getattr", err, r.GetErrno()); st == fuse.Status(syscall.ESTALE) {
		if a, open := fs.dirs.removed(in.NodeId); open {
			fs.fillAttrOut(a, out) // removed while open here (opendirs.go)
			return fuse.OK
		}
		return st
	} else if !st.Ok() {
		return st
	}
	fs.dirs.seen(r.Attr)
	fs.fillAttrOut(r.Attr, out)
	if r.CacheGrant {
		if d := fs.coh.timeout(req.CacheSession, gen, in.NodeId, nil); d > 0 && !fs.wb.buffered(in.NodeId) {
			out.SetTimeout(d)
		}
	}
	return fuse.OK
}

// SetAttr changes mode, owner, size and times; UTIME_NOW becomes the
// cluster's clock. It is applied after the writes this mount buffers for
// the inode: a truncate cuts them and an explicit mtime outlasts them, as
// the order of the calls says.
func (fs *FS) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) (st fuse.Status) {
	defer fs.observe("SetAttr", time.Now(), &st)
	fs.wb.sync(in.NodeId)
	req := &jfspb.SetAttrRequest{Ino: in.NodeId}
	set := func(m jfspb.SetAttrMask) { req.Valid |= uint32(m) }
	if in.Valid&fuse.FATTR_MODE != 0 {
		set(jfspb.SetAttrMask_SET_ATTR_MODE)
		req.Mode = in.Mode & 0o7777
	}
	if in.Valid&fuse.FATTR_UID != 0 {
		set(jfspb.SetAttrMask_SET_ATTR_UID)
		req.Uid = in.Uid
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		set(jfspb.SetAttrMask_SET_ATTR_GID)
		req.Gid = in.Gid
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		set(jfspb.SetAttrMask_SET_ATTR_SIZE)
		req.Size = in.Size
	}
	switch {
	case in.Valid&fuse.FATTR_ATIME_NOW != 0:
		set(jfspb.SetAttrMask_SET_ATTR_ATIME_NOW)
	case in.Valid&fuse.FATTR_ATIME != 0:
		set(jfspb.SetAttrMask_SET_ATTR_ATIME)
		req.AtimeNs = int64(in.Atime)*1e9 + int64(in.Atimensec)
	}
	switch {
	case in.Valid&fuse.FATTR_MTIME_NOW != 0:
		set(jfspb.SetAttrMask_SET_ATTR_MTIME_NOW)
	case in.Valid&fuse.FATTR_MTIME != 0:
		set(jfspb.SetAttrMask_SET_ATTR_MTIME)
		req.MtimeNs = int64(in.Mtime)*1e9 + int64(in.Mtimensec)
	}
	if in.Valid&fuse.FATTR_CTIME != 0 {
		set(jfspb.SetAttrMask_SET_ATTR_CTIME)
		req.CtimeNs = int64(in.Ctime)*1e9 + int64(in.Ctimensec)
	}
	r, err := fs.c.SetAttr(fs.as(&in.Caller), req)
	if st = fs.byIno("setattr", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.fillAttrOut(r.Attr, out)
	return fuse.OK
}

// Mknod creates a regular file, fifo, socket or device node.
func (fs *FS) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer fs.observe("Mknod", time.Now(), &st)
	r, err := fs.c.Mknod(fs.as(&in.Caller), &jfspb.MknodRequest{Parent: in.NodeId, Name: []byte(name), Mode: in.Mode,
		Rdev: in.Rdev, Uid: in.Uid, Gid: in.Gid, Umask: in.Umask})
	if st = fs.status("mknod", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.fillEntry(r.Attr, out)
	return fuse.OK
}

// Mkdir creates a directory.
func (fs *FS) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) (st fuse.Status) {
	defer fs.observe("Mkdir", time.Now(), &st)
	r, err := fs.c.Mkdir(fs.as(&in.Caller), &jfspb.MkdirRequest{Parent: in.NodeId, Name: []byte(name), Mode: in.Mode,
		Uid: in.Uid, Gid: in.Gid, Umask: in.Umask})
	if st = fs.status("mkdir", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.fillEntry(r.Attr, out)
	return fuse.OK
}

// Unlink removes a non-directory name; an open inode lives on until its
// last close.
func (fs *FS) Unlink(cancel <-chan struct{}, header *fuse.InHeader, name string) (st fuse.Status) {
	defer fs.observe("Unlink", time.Now(), &st)
	r, err := fs.c.Unlink(fs.as(&header.Caller), &jfspb.UnlinkRequest{Parent: header.NodeId, Name: []byte(name)})
	return fs.status("unlink", err, r.GetErrno())
}

// Rmdir removes an empty directory.
func (fs *FS) Rmdir(cancel <-chan struct{}, header *fuse.InHeader, name string) (st fuse.Status) {
	defer fs.observe("Rmdir", time.Now(), &st)
	r, err := fs.c.Rmdir(fs.as(&header.Caller), &jfspb.RmdirRequest{Parent: header.NodeId, Name: []byte(name)})
	return fs.status("rmdir", err, r.GetErrno())
}

// Rename is renameat2(2), with RENAME_NOREPLACE and RENAME_EXCHANGE.
func (fs *FS) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName string, newName string) (st fuse.Status) {
	defer fs.observe("Rename", time.Now(), &st)
	r, err := fs.c.Rename(fs.as(&in.Caller), &jfspb.RenameRequest{Parent: in.NodeId, Name: []byte(oldName),
		NewParent: in.Newdir, NewName: []byte(newName), Flags: in.Flags})
	return fs.status("rename", err, r.GetErrno())
}

// Link adds the name newName in header.NodeId for in.Oldnodeid.
func (fs *FS) Link(cancel <-chan struct{}, in *fuse.LinkIn, newName string, out *fuse.EntryOut) (st fuse.Status) {
	defer fs.observe("Link", time.Now(), &st)
	r, err := fs.c.Link(fs.as(&in.Caller), &jfspb.LinkRequest{Ino: in.Oldnodeid, NewParent: in.NodeId, NewName: []byte(newName)})
	if st = fs.status("link", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.fillEntry(r.Attr, out)
	return fuse.OK
}

// Symlink creates linkName pointing to target.
func (fs *FS) Symlink(cancel <-chan struct{}, header *fuse.InHeader, target string, linkName string, out *fuse.EntryOut) (st fuse.Status) {
	defer fs.observe("Symlink", time.Now(), &st)
	r, err := fs.c.Symlink(fs.as(&header.Caller), &jfspb.SymlinkRequest{Parent: header.NodeId, Name: []byte(linkName),
		Target: []byte(target), Uid: header.Uid, Gid: header.Gid})
	if st = fs.status("symlink", err, r.GetErrno()); !st.Ok() {
		return st
	}
	fs.fillEntry(r.Attr, out)
	return fuse.OK
}

// Readlink returns a symlink's target.
func (fs *FS) Readlink(cancel <-chan struct{}, header *fuse.InHeader) (out []byte, st fuse.Status) {
	defer fs.observe("Readlink", time.Now(), &st)
	r, err := fs.c.ReadLink(ctx(), &jfspb.ReadLinkRequest{Ino: header.NodeId})
	if st = fs.byIno("readlink", err, r.GetErrno()); !st.Ok() {
		return nil, st
	}
	return r.Target, fuse.OK
}

// Access is always granted here: the mount uses default_permissions, so
// the kernel checks the mode bits itself.
func (fs *FS) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	return fuse.OK
}

// StatFs reports the cluster's capacity and use.
func (fs *FS) StatFs(cancel <-chan struct{}, header *fuse.InHeader, out *fuse.StatfsOut) (st fuse.Status) {
	defer fs.observe("StatFs", time.Now(), &st)
	r, err := fs.c.StatFS(ctx(), &jfspb.StatFSRequest{})
	if st = fs.status("statfs", err, r.GetErrno()); !st.Ok() {
		return st
	}
	bs := uint64(r.BlockSize)
	if bs == 0 {
		bs = 4096
	}
	*out = fuse.StatfsOut{
		Blocks: r.TotalBytes / bs, Bfree: r.FreeBytes / bs, Bavail: r.FreeBytes / bs,
		Files: r.TotalInodes, Ffree: r.FreeInodes,
		Bsize: uint32(bs), Frsize: uint32(bs), NameLen: r.NameMax,
	}
	if out.NameLen == 0 {
		out.NameLen = 255
	}
	return fuse.OK
}

// POSIX ACLs are not implemented (see fsm/xattr.go): the mount does not ask
// the kernel for FUSE_POSIX_ACL, and answers the ACL attributes with
// EOPNOTSUPP without asking the cluster, so that cp -a, setfacl and tar fall
// back to chmod. The cluster refuses them too, for any other client.
const (
	aclAccessXattr  = "system.posix_acl_access"
	aclDefaultXattr = "system.posix_acl_default"
)

func isPosixACL(attr string) bool { return attr == aclAccessXattr || attr == aclDefaultXattr }

// GetXAttr copies the value of attr into dest. With an empty dest it only
// reports the value's size; a value longer than dest is ERANGE.
func (fs *FS) GetXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string, dest []byte) (sz uint32, st fuse.Status) {
	defer fs.observe("GetXAttr", time.Now(), &st)
	if isPosixACL(attr) {
		return 0, fuse.ENOTSUP
	}
	r, err := fs.c.GetXattr(fs.as(&header.Caller), &jfspb.GetXattrRequest{Ino: header.NodeId, Name: []byte(attr), Size: uint32(len(dest))})
	if st = fs.byIno("getxattr", err, r.GetErrno()); !st.Ok() {
		return 0, st
	}
	if len(dest) > 0 && len(r.Value) > len(dest) {
		return uint32(len(r.Value)), fuse.ERANGE
	}
	copy(dest, r.Value)
	return uint32(len(r.Value)), fuse.OK
}

// ListXAttr writes the NUL-terminated names into dest, as GetXAttr does
// values.
func (fs *FS) ListXAttr(cancel <-chan struct{}, header *fuse.InHeader, dest []byte) (sz uint32, st fuse.Status) {
	defer fs.observe("ListXAttr", time.Now(), &st)
	r, err := fs.c.ListXattr(fs.as(&header.Caller), &jfspb.ListXattrRequest{Ino: header.NodeId, Size: uint32(len(dest))})
	if st = fs.byIno("listxattr", err, r.GetErrno()); !st.Ok() {
		return 0, st
	}
	var list []byte
	for _, n := range r.Names {
		list = append(append(list, n...), 0)
	}
	if len(dest) > 0 && len(list) > len(dest) {
		return uint32(len(list)), fuse.ERANGE
	}
	copy(dest, list)
	return uint32(len(list)), fuse.OK
}

// SetXAttr sets attr; in.Flags may hold XATTR_CREATE or XATTR_REPLACE.
func (fs *FS) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) (st fuse.Status) {
	defer fs.observe("SetXAttr", time.Now(), &st)
	if isPosixACL(attr) {
		return fuse.ENOTSUP
	}
	r, err := fs.c.SetXattr(fs.as(&in.Caller), &jfspb.SetXattrRequest{Ino: in.NodeId, Name: []byte(attr), Value: data, Flags: in.Flags})
	return fs.byIno("setxattr", err, r.GetErrno())
}

// RemoveXAttr removes attr: ENODATA if it is not set.
func (fs *FS) RemoveXAttr(cancel <-chan struct{}, header *fuse.InHeader, attr string) (st fuse.Status) {
	defer fs.observe("RemoveXAttr", time.Now(), &st)
	if isPosixACL(attr) {
		return fuse.ENOTSUP
	}
	r, err := fs.c.RemoveXattr(fs.as(&header.Caller), &jfspb.RemoveXattrRequest{Ino: header.NodeId, Name: []byte(attr)})
	return fs.byIno("removexattr", err, r.GetErrno())
}
