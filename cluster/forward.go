package cluster

import (
	"context"
	"fmt"
	"path"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// ForwardKey is the request metadata key by which a client asks a follower
// to pass a Meta request on to the leader instead of redirecting it: the
// client could not reach the leader itself (its API port is cut off from
// the client, but not from the other nodes). The value is "1". See
// DESIGN.md "Followers redirect, and forward on request".
const ForwardKey = "jfs-forward-to-leader"

// wantsForward reports whether the request's metadata asks for forwarding.
func wantsForward(ctx context.Context) bool {
	md, ok := metadata.FromIncomingContext(ctx)
	return ok && len(md.Get(ForwardKey)) > 0 && md.Get(ForwardKey)[0] == "1"
}

// metaPrefix starts the full name of every Meta method.
var metaPrefix = "/" + jfspb.Meta_ServiceDesc.ServiceName + "/"

// forwardInterceptor passes a Meta request that asks for it on to the
// leader when this node does not lead, and answers with the leader's answer,
// status included. Anything else goes to the handler. The request is passed
// on unchanged, with its (session, seq), so the leader applies it exactly
// once whichever way it arrived; the forwarded call carries no forwarding
// request, so it is never passed on again.
func forwardInterceptor(n *Node) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !strings.HasPrefix(info.FullMethod, metaPrefix) || n.IsLeader() || !wantsForward(ctx) {
			return handler(ctx, req)
		}
		addr, _ := n.LeaderAPIAddr()
		if addr == "" || addr == n.cfg.APIAddr {
			return handler(ctx, req) // no leader known: the usual NotLeader answer
		}
		reply, err := newReply(info.FullMethod)
		if err != nil {
			return nil, status.Error(codes.Internal, err.Error())
		}
		cc, err := n.peers.conn(addr)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "forward to leader at %s: %v", addr, err)
		}
		// The server context carries the caller's deadline and cancellation
		// but not its metadata: the leader sees a plain request.
		err = cc.Invoke(ctx, info.FullMethod, req, reply,
			grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))
		n.metrics.Load().countForward(path.Base(info.FullMethod))
		if err != nil {
			if _, ok := status.FromError(err); ok {
				return nil, err
			}
			return nil, status.Errorf(codes.Unavailable, "forward to leader at %s: %v", addr, err)
		}
		return reply, nil
	}
}

// newReply returns an empty response message of the Meta method named by
// fullMethod ("/jfs.v1.Meta/Create").
func newReply(fullMethod string) (any, error) {
	name := strings.TrimPrefix(fullMethod, metaPrefix)
	svc := jfspb.File_jfs_proto.Services().ByName("Meta")
	if svc == nil {
		return nil, fmt.Errorf("forward: no Meta service in jfs.proto")
	}
	m := svc.Methods().ByName(protoreflect.Name(name))
	if m == nil {
		return nil, fmt.Errorf("forward: unknown method %s", fullMethod)
	}
	mt, err := protoregistry.GlobalTypes.FindMessageByName(m.Output().FullName())
	if err != nil {
		return nil, fmt.Errorf("forward: response of %s: %w", fullMethod, err)
	}
	return mt.New().Interface(), nil
}
