package integration

import (
	"context"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// TestAPIPermissions talks to real nodes through the Go client, as a
// program that bypasses the kernel would: claiming uid 14777, it cannot
// read, write, chmod, chown or remove a 0600 file of uid 1000 in a sticky
// directory, while uid 1000 can; and a request without credentials is
// refused rather than applied as root.
func TestAPIPermissions(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	root := client.WithCred(ctx, &jfspb.Cred{})
	owner := client.WithCred(ctx, &jfspb.Cred{Uid: 1000, Gid: 1000})
	intruder := client.WithCred(ctx, &jfspb.Cred{Uid: 14777, Gid: 14777, Groups: []uint32{100}})
	errno := func(r interface{ GetErrno() int32 }, err error) syscall.Errno {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return syscall.Errno(r.GetErrno())
	}
	mustOK := func(what string, r interface{ GetErrno() int32 }, err error) {
		t.Helper()
		if e := errno(r, err); e != 0 {
			t.Fatalf("%s: %v", what, e)
		}
	}

	tmp, err := c.Mkdir(root, &jfspb.MkdirRequest{Parent: 1, Name: []byte("tmp"), Mode: 0o1777})
	mustOK("mkdir tmp as root", tmp, err)
	cr, err := c.Create(owner, &jfspb.CreateRequest{Parent: tmp.Attr.Ino, Name: []byte("secret"), Mode: 0o600, Uid: 1000, Gid: 1000, Fh: 1})
	mustOK("create as uid 1000", cr, err)
	ino := cr.Attr.Ino
	if _, _, err := c.WriteAt(owner, ino, 1, 0, []byte("s3cret")); err != nil {
		t.Fatalf("write as uid 1000: %v", err)
	}
	rel, err := c.Release(owner, &jfspb.ReleaseRequest{Ino: ino, Fh: 1})
	mustOK("release", rel, err)

	// The intruder.
	if _, err := c.ReadAt(intruder, ino, 0, 100); err != syscall.EACCES {
		t.Errorf("read as uid 14777: %v, want EACCES", err)
	}
	if e := errno(c.Open(intruder, &jfspb.OpenRequest{Ino: ino, Flags: syscall.O_RDONLY, Fh: 2})); e != syscall.EACCES {
		t.Errorf("open as uid 14777: %v, want EACCES", e)
	}
	if _, _, err := c.WriteAt(intruder, ino, 2, 0, []byte("pwned")); err != syscall.EACCES {
		t.Errorf("write as uid 14777: %v, want EACCES", err)
	}
	if e := errno(c.SetAttr(intruder, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_SIZE)})); e != syscall.EACCES {
		t.Errorf("truncate as uid 14777: %v, want EACCES", e)
	}
	if e := errno(c.SetAttr(intruder, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: 0o4777})); e != syscall.EPERM {
		t.Errorf("chmod 4777 as uid 14777: %v, want EPERM", e)
	}
	if e := errno(c.SetAttr(intruder, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_UID | jfspb.SetAttrMask_SET_ATTR_GID), Uid: 14777, Gid: 14777})); e != syscall.EPERM {
		t.Errorf("chown as uid 14777: %v, want EPERM", e)
	}
	if e := errno(c.Unlink(intruder, &jfspb.UnlinkRequest{Parent: tmp.Attr.Ino, Name: []byte("secret")})); e != syscall.EPERM {
		t.Errorf("unlink in the sticky directory as uid 14777: %v, want EPERM", e)
	}
	if e := errno(c.Rename(intruder, &jfspb.RenameRequest{Parent: tmp.Attr.Ino, Name: []byte("secret"), NewParent: tmp.Attr.Ino, NewName: []byte("mine")})); e != syscall.EPERM {
		t.Errorf("rename in the sticky directory as uid 14777: %v, want EPERM", e)
	}
	if e := errno(c.SetXattr(intruder, &jfspb.SetXattrRequest{Ino: ino, Name: []byte("user.x"), Value: []byte("v")})); e != syscall.EACCES {
		t.Errorf("setxattr as uid 14777: %v, want EACCES", e)
	}
	a, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: ino})
	mustOK("getattr", a, err)
	if a.Attr.Mode != syscall.S_IFREG|0o600 || a.Attr.Uid != 1000 || a.Attr.Size != 6 {
		t.Fatalf("after the intruder: mode %o uid %d size %d", a.Attr.Mode, a.Attr.Uid, a.Attr.Size)
	}

	// A client that leaves its credentials out is refused.
	cc, err := grpc.NewClient(c.Leader(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	if _, err := jfspb.NewMetaClient(cc).Read(ctx, &jfspb.ReadRequest{Ino: ino, Size: 100}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("read without credentials: %v, want INVALID_ARGUMENT", err)
	}

	// The owner.
	data, err := c.ReadAt(owner, ino, 0, 100)
	if err != nil || string(data) != "s3cret" {
		t.Fatalf("read as uid 1000: %q, %v", data, err)
	}
	if e := errno(c.SetAttr(owner, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: 0o640})); e != 0 {
		t.Errorf("chmod as uid 1000: %v", e)
	}
	if e := errno(c.SetAttr(owner, &jfspb.SetAttrRequest{Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_UID), Uid: 14777})); e != syscall.EPERM {
		t.Errorf("chown to another uid as uid 1000: %v, want EPERM", e)
	}
	if e := errno(c.Unlink(owner, &jfspb.UnlinkRequest{Parent: tmp.Attr.Ino, Name: []byte("secret")})); e != 0 {
		t.Errorf("unlink as uid 1000: %v", e)
	}
}
