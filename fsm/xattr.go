package fsm

import (
	"bytes"
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Extended attributes, stored under (ino, name), with Linux's limits.
const (
	MaxXattrNameLen  = 255     // XATTR_NAME_MAX
	MaxXattrValueLen = 1 << 16 // XATTR_SIZE_MAX
	MaxXattrListLen  = 1 << 16 // XATTR_LIST_MAX

	xattrCreate  = 1 // XATTR_CREATE
	xattrReplace = 2 // XATTR_REPLACE
)

// The POSIX ACL attributes. jfs does not implement POSIX ACLs: it refuses
// them with EOPNOTSUPP, as a file system mounted without ACL support does, so
// that tools (cp -a, setfacl, tar) fall back to chmod instead of storing an
// ACL that would be shown but neither enforced nor reflected in the mode.
// Attributes of these names stored by an older version are hidden.
var (
	aclAccessName  = []byte("system.posix_acl_access")
	aclDefaultName = []byte("system.posix_acl_default")
)

// isPosixACL reports whether name is one of the POSIX ACL attributes.
func isPosixACL(name []byte) bool {
	return bytes.Equal(name, aclAccessName) || bytes.Equal(name, aclDefaultName)
}

// checkXattrName: ERANGE for an empty name or one past 255 bytes, as
// Linux's setxattr/getxattr do.
func checkXattrName(name []byte) syscall.Errno {
	if len(name) == 0 || len(name) > MaxXattrNameLen {
		return syscall.ERANGE
	}
	return 0
}

// applySetXattr sets an attribute: ENOENT; ERANGE (name); E2BIG (value past
// 64 KiB); EINVAL (unknown flags); EOPNOTSUPP for a POSIX ACL; EPERM,
// EACCES as xattrAccess decides; EEXIST with XATTR_CREATE when present;
// ENODATA with XATTR_REPLACE when absent.
func (t *txn) applySetXattr(req *jfspb.SetXattrRequest) *jfspb.SetXattrResponse {
	fail := func(e syscall.Errno) *jfspb.SetXattrResponse { return &jfspb.SetXattrResponse{Errno: eno(e)} }
	ino, name, flags := req.GetIno(), req.GetName(), req.GetFlags()
	switch {
	case flags&^(xattrCreate|xattrReplace) != 0:
		return fail(syscall.EINVAL)
	case checkXattrName(name) != 0:
		return fail(checkXattrName(name))
	case len(req.GetValue()) > MaxXattrValueLen:
		return fail(syscall.E2BIG)
	case isPosixACL(name):
		return fail(syscall.EOPNOTSUPP)
	}
	n := t.inode(ino)
	if n == nil {
		return fail(syscall.ENOENT)
	}
	if e := xattrAccess(n, name, req.GetHeader().GetCred(), MayWrite); e != 0 {
		return fail(e)
	}
	k := keyName(ino, name)
	exists := t.has(bucketXattr, k)
	switch {
	case flags&xattrCreate != 0 && exists:
		return fail(syscall.EEXIST)
	case flags&xattrReplace != 0 && !exists:
		return fail(syscall.ENODATA)
	}
	t.put(bucketXattr, k, bytes.Clone(req.GetValue()))
	n.Ctime = t.now
	t.putInode(ino, n)
	return &jfspb.SetXattrResponse{}
}

// applyRemoveXattr removes an attribute: ENOENT; ERANGE; EPERM, EACCES
// (xattrAccess); ENODATA; EOPNOTSUPP for a POSIX ACL.
func (t *txn) applyRemoveXattr(req *jfspb.RemoveXattrRequest) *jfspb.RemoveXattrResponse {
	ino, name := req.GetIno(), req.GetName()
	if e := checkXattrName(name); e != 0 {
		return &jfspb.RemoveXattrResponse{Errno: eno(e)}
	}
	if isPosixACL(name) {
		return &jfspb.RemoveXattrResponse{Errno: eno(syscall.EOPNOTSUPP)}
	}
	n := t.inode(ino)
	if n == nil {
		return &jfspb.RemoveXattrResponse{Errno: eno(syscall.ENOENT)}
	}
	if e := xattrAccess(n, name, req.GetHeader().GetCred(), MayWrite); e != 0 {
		return &jfspb.RemoveXattrResponse{Errno: eno(e)}
	}
	k := keyName(ino, name)
	if !t.has(bucketXattr, k) {
		return &jfspb.RemoveXattrResponse{Errno: eno(syscall.ENODATA)}
	}
	t.del(bucketXattr, k)
	n.Ctime = t.now
	t.putInode(ino, n)
	return &jfspb.RemoveXattrResponse{}
}

// GetXattr answers an attribute's value: ENOENT; ERANGE (name, or a value
// longer than a non-zero req.Size); EACCES, or ENODATA for a namespace the
// caller may not read (xattrAccess); ENODATA; EOPNOTSUPP for a POSIX ACL.
func (f *FSM) GetXattr(req *jfspb.GetXattrRequest) *jfspb.GetXattrResponse {
	return read(f, func(t *txn) *jfspb.GetXattrResponse {
		ino, name := req.GetIno(), req.GetName()
		if e := checkXattrName(name); e != 0 {
			return &jfspb.GetXattrResponse{Errno: eno(e)}
		}
		if isPosixACL(name) {
			return &jfspb.GetXattrResponse{Errno: eno(syscall.EOPNOTSUPP)}
		}
		n := t.inode(ino)
		if n == nil {
			return &jfspb.GetXattrResponse{Errno: eno(syscall.ENOENT)}
		}
		if e := xattrAccess(n, name, req.GetCred(), MayRead); e != 0 {
			return &jfspb.GetXattrResponse{Errno: eno(e)}
		}
		v := t.get(bucketXattr, keyName(ino, name))
		switch {
		case v == nil:
			return &jfspb.GetXattrResponse{Errno: eno(syscall.ENODATA)}
		case req.GetSize() > 0 && uint32(len(v)) > req.GetSize():
			return &jfspb.GetXattrResponse{Errno: eno(syscall.ERANGE)}
		}
		return &jfspb.GetXattrResponse{Value: v}
	})
}

// ListXattr answers the attribute names in byte order, POSIX ACLs left out,
// and trusted.* too unless the caller is root (xattrListed):
// ENOENT; ERANGE when
// the list (each name and a NUL) exceeds a non-zero req.Size; E2BIG past
// 64 KiB.
func (f *FSM) ListXattr(req *jfspb.ListXattrRequest) *jfspb.ListXattrResponse {
	return read(f, func(t *txn) *jfspb.ListXattrResponse {
		ino := req.GetIno()
		if t.inode(ino) == nil {
			return &jfspb.ListXattrResponse{Errno: eno(syscall.ENOENT)}
		}
		var names [][]byte
		total := 0
		t.scan(bucketXattr, u64(ino), func(k, _ []byte) bool {
			if isPosixACL(k[8:]) || !xattrListed(k[8:], req.GetCred()) {
				return true
			}
			names = append(names, k[8:])
			total += len(k) - 8 + 1
			return true
		})
		switch {
		case req.GetSize() > 0 && total > int(req.GetSize()):
			return &jfspb.ListXattrResponse{Errno: eno(syscall.ERANGE)}
		case total > MaxXattrListLen:
			return &jfspb.ListXattrResponse{Errno: eno(syscall.E2BIG)}
		}
		return &jfspb.ListXattrResponse{Names: names}
	})
}
