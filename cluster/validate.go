package cluster

import (
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// Size limits checked on the leader before a request is proposed or read,
// so that nothing oversized reaches the raft log and no read allocates more
// than a response may carry.
const (
	// maxShortString bounds host, mount point, version and client id of a
	// Register, the reason of an ExpireSession and a member's id and
	// addresses.
	maxShortString = 4096
	// maxAckedSeqs bounds the individual acknowledgements of one header.
	maxAckedSeqs = 1024
	// maxLockOwners bounds the OFD lock owners one release names.
	maxLockOwners = 1024
)

// checkRequest answers the errno that req must get without being proposed
// or read because one of its sizes is out of bounds, or 0 if it may go on.
// The errnos are those the state machine would answer (see fsm): a name
// past 255 bytes is ENAMETOOLONG, a symlink target past fsm.MaxSymlinkLen
// ENAMETOOLONG, a write past fsm.MaxWrite EFBIG, an xattr name ERANGE and
// value E2BIG; a header acknowledging more than 1024 seqs one by one is
// EINVAL. A Read's size is not refused but clamped (clampRead).
// maxDelegLocks bounds the locks of one DelegReturn (one log entry).
const maxDelegLocks = 1 << 16

func checkRequest(req proto.Message) syscall.Errno {
	name := func(b []byte) syscall.Errno {
		if len(b) > fsm.MaxNameLen {
			return syscall.ENAMETOOLONG
		}
		return 0
	}
	short := func(ss ...string) syscall.Errno {
		for _, s := range ss {
			if len(s) > maxShortString {
				return syscall.E2BIG
			}
		}
		return 0
	}
	xname := func(b []byte) syscall.Errno {
		if len(b) > fsm.MaxXattrNameLen {
			return syscall.ERANGE
		}
		return 0
	}
	if h, ok := req.(interface{ GetHeader() *jfspb.Header }); ok && len(h.GetHeader().GetAckedSeqs()) > maxAckedSeqs {
		return syscall.EINVAL
	}
	switch r := req.(type) {
	case *jfspb.DelegReturnRequest:
		if len(r.Locks) > maxDelegLocks {
			return syscall.E2BIG
		}
	case *jfspb.RegisterRequest:
		return short(r.Host, r.MountPoint, r.Version, r.ClientId)
	case *jfspb.ExpireSessionRequest:
		return short(r.Reason)
	case *jfspb.SetMemberRequest:
		m := r.GetMember()
		return short(m.GetId(), m.GetAddress(), m.GetApiAddr())
	case *jfspb.LookupRequest:
		return name(r.Name)
	case *jfspb.MknodRequest:
		return name(r.Name)
	case *jfspb.MkdirRequest:
		return name(r.Name)
	case *jfspb.CreateRequest:
		return name(r.Name)
	case *jfspb.UnlinkRequest:
		return name(r.Name)
	case *jfspb.RmdirRequest:
		return name(r.Name)
	case *jfspb.RenameRequest:
		if e := name(r.Name); e != 0 {
			return e
		}
		return name(r.NewName)
	case *jfspb.LinkRequest:
		return name(r.NewName)
	case *jfspb.SymlinkRequest:
		if e := name(r.Name); e != 0 {
			return e
		}
		if len(r.Target) > fsm.MaxSymlinkLen {
			return syscall.ENAMETOOLONG
		}
	case *jfspb.WriteRequest:
		if len(r.Data) > fsm.MaxWrite {
			return syscall.EFBIG
		}
	case *jfspb.SetXattrRequest:
		if e := xname(r.Name); e != 0 {
			return e
		}
		if len(r.Value) > fsm.MaxXattrValueLen {
			return syscall.E2BIG
		}
	case *jfspb.GetXattrRequest:
		return xname(r.Name)
	case *jfspb.RemoveXattrRequest:
		return xname(r.Name)
	case *jfspb.ReleaseRequest:
		if len(r.LockOwners) > maxLockOwners {
			return syscall.EINVAL
		}
	case *jfspb.ReleaseBatchRequest:
		if len(r.Releases) == 0 || len(r.Releases) > fsm.MaxReleaseBatch {
			return syscall.EINVAL
		}
		for _, rel := range r.Releases {
			if len(rel.LockOwners) > maxLockOwners {
				return syscall.EINVAL
			}
		}
	}
	return 0
}

// clampRead bounds a Read's size to fsm.MaxRead: the answer is then short,
// which POSIX allows and the client's ReadAt continues from.
func clampRead(r *jfspb.ReadRequest) *jfspb.ReadRequest {
	if r.GetSize() <= fsm.MaxRead {
		return r
	}
	c := proto.Clone(r).(*jfspb.ReadRequest)
	c.Size = fsm.MaxRead
	return c
}

// errnoResponse returns a new R carrying only errno. Every response
// message sets its errno through jfspb.Errno (api/jfspb/errno_test.go).
func errnoResponse[R proto.Message](e syscall.Errno) R {
	var zero R
	r := zero.ProtoReflect().New().Interface().(R)
	any(r).(jfspb.Errno).SetErrno(int32(e))
	return r
}
