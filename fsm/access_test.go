package fsm

import (
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

var (
	credRoot   = &jfspb.Cred{}
	credOwner  = &jfspb.Cred{Uid: 1000, Gid: 1000}
	credMember = &jfspb.Cred{Uid: 1001, Gid: 1001, Groups: []uint32{1000}}
	credOther  = &jfspb.Cred{Uid: 14777, Gid: 14777}
)

func TestCheckAccess(t *testing.T) {
	const reg, dir = syscall.S_IFREG, syscall.S_IFDIR
	for _, tc := range []struct {
		name string
		mode uint32
		cred *jfspb.Cred
		mask uint32
		want syscall.Errno
	}{
		{"owner reads 0600", reg | 0o600, credOwner, MayRead, 0},
		{"other reads 0600", reg | 0o600, credOther, MayRead, syscall.EACCES},
		{"member reads 0640", reg | 0o640, credMember, MayRead, 0},
		{"member writes 0640", reg | 0o640, credMember, MayWrite, syscall.EACCES},
		{"other reads 0604", reg | 0o604, credOther, MayRead, 0},
		// The owner class applies to the owner even with fewer bits.
		{"owner of 0077 reads", reg | 0o077, credOwner, MayRead, syscall.EACCES},
		{"member of 0707 reads", reg | 0o707, credMember, MayRead, syscall.EACCES},
		{"owner reads and writes 0600", reg | 0o600, credOwner, MayRead | MayWrite, 0},
		{"owner reads and writes 0400", reg | 0o400, credOwner, MayRead | MayWrite, syscall.EACCES},
		{"root reads 0000", reg, credRoot, MayRead | MayWrite, 0},
		{"root executes 0644", reg | 0o644, credRoot, MayExec, syscall.EACCES},
		{"root executes 0100", reg | 0o100, credRoot, MayExec, 0},
		{"root searches 0000 dir", dir, credRoot, MayExec, 0},
		{"other searches 0751 dir", dir | 0o751, credOther, MayExec, 0},
		{"other searches 0750 dir", dir | 0o750, credOther, MayExec, syscall.EACCES},
		{"no credentials", reg, nil, MayRead | MayWrite | MayExec, 0},
	} {
		if got := CheckAccess(tc.mode, 1000, 1000, tc.cred, tc.mask); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMayOpen(t *testing.T) {
	file := &jfspb.Attr{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 1000}
	exe := &jfspb.Attr{Mode: syscall.S_IFREG | 0o711, Uid: 1000, Gid: 1000}
	dir := &jfspb.Attr{Mode: syscall.S_IFDIR | 0o755, Uid: 1000, Gid: 1000}
	for _, tc := range []struct {
		name  string
		attr  *jfspb.Attr
		cred  *jfspb.Cred
		flags uint32
		want  syscall.Errno
	}{
		{"other O_RDONLY", file, credOther, syscall.O_RDONLY, 0},
		{"other O_WRONLY", file, credOther, syscall.O_WRONLY, syscall.EACCES},
		{"other O_RDWR", file, credOther, syscall.O_RDWR, syscall.EACCES},
		{"other O_RDONLY|O_TRUNC", file, credOther, syscall.O_RDONLY | syscall.O_TRUNC, syscall.EACCES},
		{"owner O_RDWR|O_TRUNC", file, credOwner, syscall.O_RDWR | syscall.O_TRUNC, 0},
		{"other O_NOATIME", file, credOther, syscall.O_RDONLY | syscall.O_NOATIME, syscall.EPERM},
		{"owner O_NOATIME", file, credOwner, syscall.O_RDONLY | syscall.O_NOATIME, 0},
		{"other reads 0711", exe, credOther, syscall.O_RDONLY, syscall.EACCES},
		{"other execs 0711", exe, credOther, syscall.O_RDONLY | fmodeExec, 0},
		{"directory O_RDONLY", dir, credOther, syscall.O_RDONLY, 0},
		{"directory O_WRONLY", dir, credRoot, syscall.O_WRONLY, syscall.EISDIR},
		{"directory O_TRUNC", dir, credOwner, syscall.O_RDONLY | syscall.O_TRUNC, syscall.EISDIR},
		{"no credentials", file, nil, syscall.O_RDWR | syscall.O_NOATIME, 0},
	} {
		if got := MayOpen(tc.attr, tc.cred, tc.flags); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestSetAttrCheck(t *testing.T) {
	m := func(bits ...jfspb.SetAttrMask) uint32 {
		var v uint32
		for _, b := range bits {
			v |= uint32(b)
		}
		return v
	}
	const (
		mode  = jfspb.SetAttrMask_SET_ATTR_MODE
		uid   = jfspb.SetAttrMask_SET_ATTR_UID
		gid   = jfspb.SetAttrMask_SET_ATTR_GID
		size  = jfspb.SetAttrMask_SET_ATTR_SIZE
		atime = jfspb.SetAttrMask_SET_ATTR_ATIME
		anow  = jfspb.SetAttrMask_SET_ATTR_ATIME_NOW
		mnow  = jfspb.SetAttrMask_SET_ATTR_MTIME_NOW
	)
	file := &inode{Mode: syscall.S_IFREG | 0o664, Uid: 1000, Gid: 1000}
	suid := &inode{Mode: syscall.S_IFREG | 0o6775, Uid: 1000, Gid: 1000}
	for _, tc := range []struct {
		name     string
		n        *inode
		req      *jfspb.SetAttrRequest
		cred     *jfspb.Cred
		want     syscall.Errno
		wantMode uint32
	}{
		{"owner chmod", file, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o600}, credOwner, 0, 0o600},
		{"other chmod", file, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o4777}, credOther, syscall.EPERM, 0},
		{"writer chmod", file, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o666}, credMember, syscall.EPERM, 0},
		{"root chmod", file, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o4777}, credRoot, 0, 0o4777},
		{"owner chmod g+s outside the group", &inode{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 5}, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o2755}, credOwner, 0, 0o755},
		{"owner chmod g+s and chgrp to its group", &inode{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 5}, &jfspb.SetAttrRequest{Valid: m(mode, gid), Mode: 0o2755, Gid: 1000}, credOwner, 0, 0o2755},
		{"writer drops set-id bits", suid, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o775}, credMember, 0, 0o775},
		{"other drops set-id bits", suid, &jfspb.SetAttrRequest{Valid: m(mode), Mode: 0o775}, credOther, syscall.EPERM, 0},
		{"owner chown", file, &jfspb.SetAttrRequest{Valid: m(uid), Uid: 14777}, credOwner, syscall.EPERM, 0},
		{"owner chown to itself", file, &jfspb.SetAttrRequest{Valid: m(uid), Uid: 1000}, credOwner, 0, 0},
		{"other chown to the owner", file, &jfspb.SetAttrRequest{Valid: m(uid), Uid: 1000}, credOther, syscall.EPERM, 0},
		{"root chown", file, &jfspb.SetAttrRequest{Valid: m(uid, gid), Uid: 14777, Gid: 14777}, credRoot, 0, 0},
		{"owner chgrp to a group it is in", &inode{Mode: syscall.S_IFREG | 0o644, Uid: 1001, Gid: 1001}, &jfspb.SetAttrRequest{Valid: m(gid), Gid: 1000}, credMember, 0, 0},
		{"owner chgrp to another group", file, &jfspb.SetAttrRequest{Valid: m(gid), Gid: 14777}, credOwner, syscall.EPERM, 0},
		{"member chgrp", file, &jfspb.SetAttrRequest{Valid: m(gid), Gid: 1000}, credMember, syscall.EPERM, 0},
		{"writer truncates", file, &jfspb.SetAttrRequest{Valid: m(size)}, credMember, 0, 0},
		{"other truncates", file, &jfspb.SetAttrRequest{Valid: m(size)}, credOther, syscall.EACCES, 0},
		{"writer touches", file, &jfspb.SetAttrRequest{Valid: m(anow, mnow)}, credMember, 0, 0},
		{"other touches", file, &jfspb.SetAttrRequest{Valid: m(anow, mnow)}, credOther, syscall.EACCES, 0},
		{"writer sets a time", file, &jfspb.SetAttrRequest{Valid: m(atime)}, credMember, syscall.EPERM, 0},
		{"owner sets a time", file, &jfspb.SetAttrRequest{Valid: m(atime)}, credOwner, 0, 0},
		{"no credentials", file, &jfspb.SetAttrRequest{Valid: m(mode, uid, atime), Mode: 0o4777, Uid: 5}, nil, 0, 0o4777},
	} {
		got, e := setAttrCheck(tc.n, tc.req, tc.cred)
		if e != tc.want || e == 0 && tc.req.Valid&uint32(mode) != 0 && got != tc.wantMode {
			t.Errorf("%s: mode %o errno %v, want mode %o errno %v", tc.name, got, e, tc.wantMode, tc.want)
		}
	}
}

func TestMayDelete(t *testing.T) {
	victim := &inode{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 1000}
	for _, tc := range []struct {
		name string
		dir  *inode
		cred *jfspb.Cred
		want syscall.Errno
	}{
		{"other in 0777", &inode{Mode: syscall.S_IFDIR | 0o777}, credOther, 0},
		{"other in 1777", &inode{Mode: syscall.S_IFDIR | 0o1777}, credOther, syscall.EPERM},
		{"file owner in 1777", &inode{Mode: syscall.S_IFDIR | 0o1777}, credOwner, 0},
		{"dir owner in 1777", &inode{Mode: syscall.S_IFDIR | 0o1777, Uid: 14777}, credOther, 0},
		{"root in 1777", &inode{Mode: syscall.S_IFDIR | 0o1777, Uid: 5}, credRoot, 0},
		{"owner in 0755 of root", &inode{Mode: syscall.S_IFDIR | 0o755}, credOwner, syscall.EACCES},
		{"other in 1755, no write", &inode{Mode: syscall.S_IFDIR | 0o1755}, credOther, syscall.EACCES},
	} {
		if got := tc.dir.mayDelete(victim, tc.cred); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestMayLock(t *testing.T) {
	const (
		unlock = jfspb.LockType_LOCK_TYPE_UNLOCK
		read   = jfspb.LockType_LOCK_TYPE_READ
		write  = jfspb.LockType_LOCK_TYPE_WRITE
	)
	readable := &inode{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 1000}
	private := &inode{Mode: syscall.S_IFREG | 0o600, Uid: 1000, Gid: 1000}
	writeOnly := &inode{Mode: syscall.S_IFREG | 0o602, Uid: 1000, Gid: 1000}
	for _, tc := range []struct {
		name  string
		n     *inode
		cred  *jfspb.Cred
		typ   jfspb.LockType
		flock bool
		want  syscall.Errno
	}{
		{"read lock of a readable file", readable, credOther, read, false, 0},
		{"write lock of a readable file", readable, credOther, write, false, syscall.EBADF},
		{"flock of a readable file", readable, credOther, write, true, 0},
		{"flock of a write-only file", writeOnly, credOther, write, true, 0},
		{"flock of a private file", private, credOther, read, true, syscall.EBADF},
		{"unlock of a private file", private, credOther, unlock, false, 0},
		{"owner's write lock of its 0400 file", &inode{Mode: syscall.S_IFREG | 0o400, Uid: 1000}, credOwner, write, false, 0},
		{"root's write lock", private, credRoot, write, false, 0},
	} {
		if got := tc.n.mayLock(tc.cred, tc.typ, tc.flock); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestXattrAccess(t *testing.T) {
	file := &inode{Mode: syscall.S_IFREG | 0o644, Uid: 1000, Gid: 1000}
	sticky := &inode{Mode: syscall.S_IFDIR | 0o1777, Uid: 1000, Gid: 1000}
	link := &inode{Mode: syscall.S_IFLNK | 0o777, Uid: 1000, Gid: 1000}
	for _, tc := range []struct {
		name string
		n    *inode
		attr string
		cred *jfspb.Cred
		mask uint32
		want syscall.Errno
	}{
		{"owner sets user.*", file, "user.a", credOwner, MayWrite, 0},
		{"other sets user.*", file, "user.a", credOther, MayWrite, syscall.EACCES},
		{"other gets user.*", file, "user.a", credOther, MayRead, 0},
		{"other gets user.* of 0600", &inode{Mode: syscall.S_IFREG | 0o600, Uid: 1000}, "user.a", credOther, MayRead, syscall.EACCES},
		{"root sets user.* on a symlink", link, "user.a", credRoot, MayWrite, syscall.EPERM},
		{"root gets user.* of a symlink", link, "user.a", credRoot, MayRead, syscall.ENODATA},
		{"other sets user.* on a sticky dir", sticky, "user.a", credOther, MayWrite, syscall.EPERM},
		{"owner sets user.* on a sticky dir", sticky, "user.a", credOwner, MayWrite, 0},
		{"owner sets trusted.*", file, "trusted.a", credOwner, MayWrite, syscall.EPERM},
		{"owner gets trusted.*", file, "trusted.a", credOwner, MayRead, syscall.ENODATA},
		{"root sets trusted.*", file, "trusted.a", credRoot, MayWrite, 0},
		{"other sets security.*", file, "security.a", credOther, MayWrite, 0},
	} {
		if got := xattrAccess(tc.n, []byte(tc.attr), tc.cred, tc.mask); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// TestPermissionsApplied applies requests with various credentials: the
// state machine refuses what the owner's bits refuse, whoever the client
// says it is, and a log without credentials still applies as it did.
func TestPermissionsApplied(t *testing.T) {
	h := mustHarness(t, Options{})
	as := func(c *jfspb.Cred) *jfspb.Header { return &jfspb.Header{Cred: c} }
	// uid 1000 makes a 0600 file in a sticky directory; it owns it whatever
	// owner the request names.
	tmp := h.do(cMkdir, &jfspb.MkdirRequest{Header: as(credRoot), Parent: RootIno, Name: []byte("tmp"), Mode: 0o1777}).(*jfspb.MkdirResponse)
	mustOK(t, tmp)
	cr := h.do(cCreate, &jfspb.CreateRequest{Header: as(credOwner), Parent: tmp.Attr.Ino, Name: []byte("secret"), Mode: 0o600, Uid: 0, Gid: 0, Fh: 1}).(*jfspb.CreateResponse)
	mustOK(t, cr)
	ino := cr.Attr.Ino
	if cr.Attr.Uid != 1000 || cr.Attr.Gid != 1000 {
		t.Fatalf("created as uid 1000 naming uid 0: owner %d:%d", cr.Attr.Uid, cr.Attr.Gid)
	}
	mustOK(t, h.do(cWrite, &jfspb.WriteRequest{Header: as(credOwner), Ino: ino, Data: []byte("s3cret")}))
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Header: as(credOwner), Ino: ino, Fh: 1}))

	for _, tc := range []struct {
		name string
		typ  jfspb.CommandType
		req  func(*jfspb.Header) proto.Message
		want syscall.Errno
	}{
		{"open for reading", cOpen, func(hd *jfspb.Header) proto.Message { return &jfspb.OpenRequest{Header: hd, Ino: ino, Fh: 2} }, syscall.EACCES},
		{"write", cWrite, func(hd *jfspb.Header) proto.Message {
			return &jfspb.WriteRequest{Header: hd, Ino: ino, Data: []byte("x")}
		}, syscall.EACCES},
		{"chmod 4777", cSetAttr, func(hd *jfspb.Header) proto.Message {
			return &jfspb.SetAttrRequest{Header: hd, Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: 0o4777}
		}, syscall.EPERM},
		{"chown", cSetAttr, func(hd *jfspb.Header) proto.Message {
			return &jfspb.SetAttrRequest{Header: hd, Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_UID), Uid: 14777}
		}, syscall.EPERM},
		{"unlink in the sticky directory", cUnlink, func(hd *jfspb.Header) proto.Message {
			return &jfspb.UnlinkRequest{Header: hd, Parent: tmp.Attr.Ino, Name: []byte("secret")}
		}, syscall.EPERM},
		{"write lock", cSetLk, func(hd *jfspb.Header) proto.Message {
			return &jfspb.SetLkRequest{Header: hd, Ino: ino, Owner: 7, Type: jfspb.LockType_LOCK_TYPE_WRITE}
		}, syscall.EBADF},
		{"flock", cFlock, func(hd *jfspb.Header) proto.Message {
			return &jfspb.FlockRequest{Header: hd, Ino: ino, Fh: 7, Type: jfspb.LockType_LOCK_TYPE_READ}
		}, syscall.EBADF},
		{"set user.a", cSetXattr, func(hd *jfspb.Header) proto.Message {
			return &jfspb.SetXattrRequest{Header: hd, Ino: ino, Name: []byte("user.a"), Value: []byte("v")}
		}, syscall.EACCES},
	} {
		if e := mustErrnoOf(t, h.do(tc.typ, tc.req(as(credOther)))); e != tc.want {
			t.Errorf("%s as uid 14777: %v, want %v", tc.name, e, tc.want)
		}
	}
	if r := h.f.Read(&jfspb.ReadRequest{Ino: ino, Size: 10, Cred: credOther}); r.Errno != int32(syscall.EACCES) {
		t.Errorf("read as uid 14777: errno %d data %q, want EACCES", r.Errno, r.Data)
	}
	if r := h.f.Read(&jfspb.ReadRequest{Ino: ino, Size: 10, Cred: credOwner}); r.Errno != 0 || string(r.Data) != "s3cret" {
		t.Errorf("read as the owner: errno %d data %q", r.Errno, r.Data)
	}
	if a := h.mustAttr(ino); a.Mode != syscall.S_IFREG|0o600 || a.Uid != 1000 {
		t.Fatalf("after the refused requests: mode %o uid %d", a.Mode, a.Uid)
	}
	// A log entry without credentials (written before they existed)
	// applies as root did: it may chmod, and a write keeps set-id bits.
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: 0o4777}))
	mustOK(t, h.do(cWrite, &jfspb.WriteRequest{Ino: ino, Data: []byte("x")}))
	if a := h.mustAttr(ino); a.Mode != syscall.S_IFREG|0o4777 {
		t.Fatalf("mode after an old chmod and write: %o, want 104777", a.Mode)
	}
	// A write by someone else clears S_ISUID, as Linux does.
	mustOK(t, h.do(cWrite, &jfspb.WriteRequest{Header: as(credOther), Ino: ino, Data: []byte("y")}))
	if a := h.mustAttr(ino); a.Mode != syscall.S_IFREG|0o777 {
		t.Fatalf("mode after a write by uid 14777: %o, want 100777", a.Mode)
	}
}
