package cluster

import (
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// maxCredGroups bounds the supplementary groups of a request's credentials
// (Linux's NGROUPS_MAX).
const maxCredGroups = 65536

// checkCred refuses, with INVALID_ARGUMENT, a request whose permission
// check needs the caller's credentials (jfspb.Cred) when it carries none or
// more than maxCredGroups groups. The state machine applies an entry
// without credentials as root, for the log entries written before requests
// carried them; a new request must not get that by leaving them out.
func checkCred(req proto.Message) error {
	var c *jfspb.Cred
	switch r := req.(type) {
	case *jfspb.LookupRequest:
		c = r.GetCred()
	case *jfspb.ReadDirRequest:
		c = r.GetCred()
	case *jfspb.ReadRequest:
		c = r.GetCred()
	case *jfspb.GetXattrRequest:
		c = r.GetCred()
	case *jfspb.ListXattrRequest:
		c = r.GetCred()
	case *jfspb.SetAttrRequest, *jfspb.MknodRequest, *jfspb.MkdirRequest, *jfspb.CreateRequest,
		*jfspb.UnlinkRequest, *jfspb.RmdirRequest, *jfspb.RenameRequest, *jfspb.LinkRequest,
		*jfspb.SymlinkRequest, *jfspb.OpenRequest, *jfspb.WriteRequest, *jfspb.FallocateRequest,
		*jfspb.SetXattrRequest, *jfspb.RemoveXattrRequest, *jfspb.SetLkRequest, *jfspb.FlockRequest:
		c = r.(interface{ GetHeader() *jfspb.Header }).GetHeader().GetCred()
	default:
		return nil
	}
	switch {
	case c == nil:
		return status.Errorf(codes.InvalidArgument, "%T carries no credentials (cred): the caller's uid and gid are needed for its permission check", req)
	case len(c.Groups) > maxCredGroups:
		return status.Errorf(codes.InvalidArgument, "credentials with %d groups (at most %d)", len(c.Groups), maxCredGroups)
	}
	return nil
}
