package cluster

import (
	"context"
	"strings"
	"sync"
	"syscall"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// Who may call what, decided from the caller's certificate (DESIGN.md
// "Identities"):
//
//   - node: the node-to-node calls (ConfirmTerm, Digest, ClusterStatus,
//     Announce for its own id only) and Meta calls forwarded on behalf of
//     a client, under that client's identity.
//   - client: the Meta service, with the sessions it registered itself.
//   - admin: the Admin service, and Meta as a client.
//
// A node without TLS treats every caller as an admin that may use any
// session (jfsd serves without TLS only on loopback unless told
// otherwise).

// CallerKey is the metadata key by which a node forwarding a Meta call
// names the caller it forwards for (its identity's URI). It is believed
// only from a node.
const CallerKey = "jfs-caller"

// nodeCalls are the Admin methods that nodes call on each other.
var nodeCalls = map[string]bool{
	jfspb.Admin_ConfirmTerm_FullMethodName:   true,
	jfspb.Admin_Digest_FullMethodName:        true,
	jfspb.Admin_ClusterStatus_FullMethodName: true,
	jfspb.Admin_Announce_FullMethodName:      true,
}

type callerKey struct{}

// callerOf is the identity the authorization interceptor found for the
// call; ok is false on a node without TLS.
func callerOf(ctx context.Context) (mtls.Identity, bool) {
	id, ok := ctx.Value(callerKey{}).(mtls.Identity)
	return id, ok
}

// peerIdentity reads the identity of the TLS peer of ctx.
func peerIdentity(ctx context.Context) (mtls.Identity, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return mtls.Identity{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return mtls.Identity{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	id, err := mtls.PeerIdentity(ti.State)
	if err != nil {
		return mtls.Identity{}, status.Error(codes.Unauthenticated, err.Error())
	}
	return id, nil
}

// authorize finds the caller of a call to method and decides whether it
// may make it. The identity returned is the one the call runs as: a
// forwarded Meta call's client, not the forwarding node.
func authorize(ctx context.Context, method string) (mtls.Identity, error) {
	id, err := peerIdentity(ctx)
	if err != nil {
		return id, err
	}
	meta := strings.HasPrefix(method, metaPrefix)
	switch id.Role {
	case mtls.RoleAdmin:
		return id, nil
	case mtls.RoleClient:
		if meta {
			return id, nil
		}
	case mtls.RoleNode:
		if meta {
			md, _ := metadata.FromIncomingContext(ctx)
			if v := md.Get(CallerKey); len(v) == 1 {
				fwd, err := mtls.ParseCallerURI(v[0])
				if err != nil {
					return id, status.Errorf(codes.PermissionDenied, "forwarded caller: %v", err)
				}
				return fwd, nil
			}
		} else if nodeCalls[method] {
			return id, nil
		}
	}
	return id, status.Errorf(codes.PermissionDenied, "%s may not call %s", id, method)
}

// authUnary authorizes every unary call, and then, for a call that may go
// ahead, binds sessions to identities and applies the client certificate's
// options (read-only, root squash). On a node without TLS it lets
// everything through, and records no identity in the sessions it registers.
func authUnary(n *Node) grpc.UnaryServerInterceptor {
	if n.cfg.TLS == nil {
		return func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if r, ok := req.(*jfspb.RegisterRequest); ok {
				r.Identity = "" // nobody is proven: the session belongs to no identity
			}
			return h(ctx, req)
		}
	}
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		id, err := authorize(ctx, info.FullMethod)
		if err != nil {
			return nil, err
		}
		ctx = context.WithValue(ctx, callerKey{}, id)
		switch r := req.(type) {
		case *jfspb.SetMemberRequest:
			// Announce: a node records its own addresses only.
			if id.Role == mtls.RoleNode && r.GetMember().GetId() != id.Name {
				return nil, status.Errorf(codes.PermissionDenied, "%s may not announce member %q", id, r.GetMember().GetId())
			}
		case *jfspb.RegisterRequest:
			r.Identity = id.String()
		}
		if !strings.HasPrefix(info.FullMethod, metaPrefix) {
			return h(ctx, req)
		}
		if err := n.owns(id, req); err != nil {
			return nil, err
		}
		if id.ReadOnly && mutates(req) {
			reply, err := newReply(info.FullMethod)
			if err != nil {
				return nil, status.Error(codes.Internal, err.Error())
			}
			reply.(jfspb.Errno).SetErrno(int32(syscall.EROFS))
			return reply, nil
		}
		if id.RootSquash {
			squashRoot(req)
		}
		return h(ctx, req)
	}
}

// authStream authorizes the streaming calls (snapshots: admin only).
func authStream(n *Node) grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		if n.cfg.TLS != nil {
			if _, err := authorize(ss.Context(), info.FullMethod); err != nil {
				return err
			}
		}
		return h(srv, ss)
	}
}

// sessionsOf are the sessions a Meta request names.
func sessionsOf(req any) []uint64 {
	switch r := req.(type) {
	case *jfspb.HeartbeatRequest:
		return []uint64{r.GetSession()}
	case *jfspb.CancelLockWaitRequest:
		return []uint64{r.GetSession()}
	case *jfspb.ReportOpensRequest:
		return []uint64{r.GetSession()}
	case *jfspb.CacheWatchRequest:
		return []uint64{r.GetSession()}
	case *jfspb.CacheAckRequest:
		return []uint64{r.GetSession()}
	case *jfspb.GetAttrRequest:
		if s := r.GetCacheSession(); s != 0 {
			return []uint64{s}
		}
	case *jfspb.LookupRequest:
		if s := r.GetCacheSession(); s != 0 {
			return []uint64{s}
		}
	case *jfspb.DelegRecallsRequest:
		return []uint64{r.GetSession()}
	case *jfspb.DelegReportRequest:
		return []uint64{r.GetSession()}
	case interface{ GetHeader() *jfspb.Header }:
		if s := r.GetHeader().GetSession(); s != 0 {
			return []uint64{s}
		}
	}
	return nil
}

// owns refuses, with PermissionDenied, a request that names a session
// registered by another identity. A session this node does not know (not
// yet applied here, or gone) is let through: the leader, which checks
// again under the same identity, answers for it.
func (n *Node) owns(id mtls.Identity, req any) error {
	for _, sid := range sessionsOf(req) {
		owner, ok := n.owners.of(n, sid)
		if ok && owner != id.String() {
			return status.Errorf(codes.PermissionDenied, "session %d belongs to %q, not to %s", sid, owner, id)
		}
	}
	return nil
}

// sessionOwners caches who registered each session: a session's identity
// never changes and its id (a log index) is never used again.
type sessionOwners struct {
	mu sync.Mutex
	m  map[uint64]string
}

// maxOwners bounds the cache; it is emptied when full.
const maxOwners = 1 << 16

func (o *sessionOwners) of(n *Node, sid uint64) (string, bool) {
	o.mu.Lock()
	owner, ok := o.m[sid]
	o.mu.Unlock()
	if ok {
		return owner, true
	}
	s := n.fsm.Session(sid)
	if s == nil {
		return "", false
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.m == nil || len(o.m) >= maxOwners {
		o.m = map[uint64]string{}
	}
	o.m[sid] = s.GetIdentity()
	return s.GetIdentity(), true
}

// mutates reports whether a Meta request changes the file system, and so
// is refused to a read-only client with EROFS. Sessions, opens for
// reading, closes and locks are not changes: a read-only client may lock
// (as flock(2) works on a read-only mount).
func mutates(req any) bool {
	switch r := req.(type) {
	case *jfspb.SetAttrRequest, *jfspb.MknodRequest, *jfspb.MkdirRequest, *jfspb.CreateRequest, *jfspb.UnlinkRequest, *jfspb.RmdirRequest,
		*jfspb.RenameRequest, *jfspb.LinkRequest, *jfspb.SymlinkRequest, *jfspb.WriteRequest,
		*jfspb.FallocateRequest, *jfspb.SetXattrRequest, *jfspb.RemoveXattrRequest, *jfspb.TouchAtimeRequest:
		return true
	case *jfspb.OpenRequest:
		return r.GetFlags()&(syscall.O_WRONLY|syscall.O_RDWR|syscall.O_TRUNC|syscall.O_CREAT) != 0
	}
	return false
}

// squashRoot maps uid and gid 0 in req to mtls.NobodyID, in place, as
// NFS's root_squash does: every id a request carries goes through here
// before anything is proposed or read.
func squashRoot(req any) {
	sq := func(v *uint32) {
		if *v == 0 {
			*v = mtls.NobodyID
		}
	}
	// The caller's credentials, which the state machine's permission
	// checks use: a squashed root is nobody, in no group 0.
	cred := func(c *jfspb.Cred) {
		if c == nil {
			return
		}
		sq(&c.Uid)
		sq(&c.Gid)
		for i := range c.Groups {
			sq(&c.Groups[i])
		}
	}
	if h, ok := req.(interface{ GetHeader() *jfspb.Header }); ok {
		cred(h.GetHeader().GetCred())
	}
	if c, ok := req.(interface{ GetCred() *jfspb.Cred }); ok {
		cred(c.GetCred())
	}
	// The owner a new inode is given: a squashed client names nobody where
	// it said root. A chown's target is left alone: the permission check
	// refuses nobody's chown to root with EPERM, as NFS does.
	switch r := req.(type) {
	case *jfspb.MknodRequest:
		sq(&r.Uid)
		sq(&r.Gid)
	case *jfspb.MkdirRequest:
		sq(&r.Uid)
		sq(&r.Gid)
	case *jfspb.CreateRequest:
		sq(&r.Uid)
		sq(&r.Gid)
	case *jfspb.SymlinkRequest:
		sq(&r.Uid)
		sq(&r.Gid)
	}
}

// forwardCaller adds the caller's identity to the metadata of a call this
// node forwards, so that the leader checks the caller, not this node.
func forwardCaller(ctx context.Context) context.Context {
	id, ok := callerOf(ctx)
	if !ok {
		return ctx
	}
	return metadata.AppendToOutgoingContext(ctx, CallerKey, id.URI().String())
}
