package fsm

import (
	"strings"
	"syscall"
	"testing"

	bolt "go.etcd.io/bbolt"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestXattr(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	long := strings.Repeat("n", 256)
	for _, tc := range []struct {
		name  string
		ino   uint64
		xname string
		value []byte
		flags uint32
		want  syscall.Errno
	}{
		{"set", f.Ino, "user.a", []byte("1"), 0, 0},
		{"create existing", f.Ino, "user.a", []byte("2"), xattrCreate, syscall.EEXIST},
		{"replace missing", f.Ino, "user.b", []byte("2"), xattrReplace, syscall.ENODATA},
		{"replace", f.Ino, "user.a", []byte("3"), xattrReplace, 0},
		{"create", f.Ino, "user.b", []byte{}, xattrCreate, 0},
		{"name too long", f.Ino, long, nil, 0, syscall.ERANGE},
		{"empty name", f.Ino, "", nil, 0, syscall.ERANGE},
		{"value too big", f.Ino, "user.c", make([]byte, MaxXattrValueLen+1), 0, syscall.E2BIG},
		{"largest value", f.Ino, "user.big", make([]byte, MaxXattrValueLen), 0, 0},
		{"bad flags", f.Ino, "user.c", nil, 4, syscall.EINVAL},
		{"missing inode", 999, "user.a", nil, 0, syscall.ENOENT},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mustErrno(t, h.do(cSetXattr, &jfspb.SetXattrRequest{Ino: tc.ino, Name: []byte(tc.xname), Value: tc.value, Flags: tc.flags}), tc.want)
		})
	}
	get := func(name string, size uint32) *jfspb.GetXattrResponse {
		return h.f.GetXattr(&jfspb.GetXattrRequest{Ino: f.Ino, Name: []byte(name), Size: size})
	}
	r := get("user.a", 0)
	mustOK(t, r)
	mustEqualBytes(t, "user.a", r.Value, []byte("3"))
	mustErrno(t, get("user.a", 0), 0)
	mustErrno(t, get("user.big", 10), syscall.ERANGE)
	mustErrno(t, get("user.none", 0), syscall.ENODATA)
	mustErrno(t, get(long, 0), syscall.ERANGE)
	mustErrno(t, h.f.GetXattr(&jfspb.GetXattrRequest{Ino: 999, Name: []byte("user.a")}), syscall.ENOENT)

	l := h.f.ListXattr(&jfspb.ListXattrRequest{Ino: f.Ino})
	mustOK(t, l)
	if len(l.Names) != 3 || string(l.Names[0]) != "user.a" || string(l.Names[1]) != "user.b" || string(l.Names[2]) != "user.big" {
		t.Fatalf("list %q", l.Names)
	}
	mustErrno(t, h.f.ListXattr(&jfspb.ListXattrRequest{Ino: f.Ino, Size: 5}), syscall.ERANGE)
	mustErrno(t, h.f.ListXattr(&jfspb.ListXattrRequest{Ino: 999}), syscall.ENOENT)

	rm := func(name string) *jfspb.RemoveXattrResponse {
		return h.do(cRemoveXattr, &jfspb.RemoveXattrRequest{Ino: f.Ino, Name: []byte(name)}).(*jfspb.RemoveXattrResponse)
	}
	mustOK(t, rm("user.a"))
	mustErrno(t, rm("user.a"), syscall.ENODATA)
	mustErrno(t, rm(""), syscall.ERANGE)
	mustErrno(t, get("user.a", 0), syscall.ENODATA)
	// ctime moved with the last successful remove, two entries ago.
	if a := h.mustAttr(f.Ino); a.CtimeNs != h.now-2e9 {
		t.Fatalf("ctime %d, want %d", a.CtimeNs, h.now-2e9)
	}
	// Unlinking frees the attributes.
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	if err := h.f.view(func(tx *txn) error {
		if tx.hasPrefix(bucketXattr, nil) {
			t.Error("xattrs left after unlink")
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestXattrPosixACLRefused: POSIX ACLs are refused with EOPNOTSUPP so that
// tools fall back to chmod, and one stored by an older version is hidden.
func TestXattrPosixACLRefused(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	// The ACL cp -a sets for mode 0644: user::rw- group::r-- other::r--.
	acl := []byte{2, 0, 0, 0, 1, 0, 6, 0, 255, 255, 255, 255, 4, 0, 4, 0, 255, 255, 255, 255, 32, 0, 4, 0, 255, 255, 255, 255}
	for _, name := range []string{"system.posix_acl_access", "system.posix_acl_default"} {
		t.Run(name, func(t *testing.T) {
			mustErrno(t, h.do(cSetXattr, &jfspb.SetXattrRequest{Ino: f.Ino, Name: []byte(name), Value: acl}), syscall.EOPNOTSUPP)
			mustErrno(t, h.f.GetXattr(&jfspb.GetXattrRequest{Ino: f.Ino, Name: []byte(name)}), syscall.EOPNOTSUPP)
			mustErrno(t, h.do(cRemoveXattr, &jfspb.RemoveXattrRequest{Ino: f.Ino, Name: []byte(name)}), syscall.EOPNOTSUPP)
		})
	}
	// An ACL stored before ACLs were refused is not listed.
	if err := h.f.db.Update(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketXattr).Put(keyName(f.Ino, []byte("system.posix_acl_access")), acl)
	}); err != nil {
		t.Fatal(err)
	}
	mustOK(t, h.do(cSetXattr, &jfspb.SetXattrRequest{Ino: f.Ino, Name: []byte("user.a"), Value: []byte("1")}))
	l := h.f.ListXattr(&jfspb.ListXattrRequest{Ino: f.Ino})
	mustOK(t, l)
	if len(l.Names) != 1 || string(l.Names[0]) != "user.a" {
		t.Fatalf("list %q, want only user.a", l.Names)
	}
	if a := h.mustAttr(f.Ino); a.Mode&0o777 != 0o644 {
		t.Fatalf("mode %o changed", a.Mode)
	}
}
