package cluster

import (
	"context"
	"errors"
	"fmt"
	"path"
	"strings"

	"github.com/hashicorp/raft"
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
		// but not its metadata: the leader sees a plain request. The call
		// is also cancelled when this node sees the leader change: a
		// blocking lock request would otherwise wait for good at a leader
		// that was frozen or cut off after the call began. The client then
		// sends it again, with the same (session, seq), to the new leader.
		ctx, stop := n.untilLeaderChanges(ctx, addr)
		defer stop()
		ctx = forwardCaller(ctx)
		err = cc.Invoke(ctx, info.FullMethod, req, reply,
			grpc.MaxCallRecvMsgSize(MaxMessageSize), grpc.MaxCallSendMsgSize(MaxMessageSize))
		n.metrics.Load().countForward(path.Base(info.FullMethod))
		if err != nil {
			if changed := context.Cause(ctx); errors.Is(changed, errLeaderChanged) {
				// Not ErrNotLeader's status with this node's view: the
				// client looks for the new leader by itself.
				return nil, status.Errorf(codes.Unavailable, "forward to leader at %s: %v", addr, changed)
			}
			if _, ok := status.FromError(err); ok {
				return nil, err
			}
			return nil, status.Errorf(codes.Unavailable, "forward to leader at %s: %v", addr, err)
		}
		return reply, nil
	}
}

// errLeaderChanged is the cause of a forwarded call's cancellation when
// this node saw the leader change while the call was under way.
var errLeaderChanged = errors.New("the leader changed while the request was forwarded")

// untilLeaderChanges returns a context derived from ctx that is cancelled,
// with cause errLeaderChanged, as soon as this node no longer sees the node
// at leaderAddr as the leader (a new leader, or none while an election
// runs). stop releases its resources and must be called.
func (n *Node) untilLeaderChanges(ctx context.Context, leaderAddr string) (context.Context, func()) {
	ctx, cancel := context.WithCancelCause(ctx)
	changes := make(chan raft.Observation, 1)
	obs := raft.NewObserver(changes, false, func(o *raft.Observation) bool {
		_, ok := o.Data.(raft.LeaderObservation)
		return ok
	})
	n.raft.RegisterObserver(obs)
	done := make(chan struct{})
	go func() {
		// Whatever changed before the observer was registered is seen here.
		for {
			if addr, _ := n.LeaderAPIAddr(); addr != leaderAddr {
				cancel(errLeaderChanged)
				return
			}
			select {
			case <-changes:
			case <-ctx.Done():
				return
			case <-done:
				return
			}
		}
	}()
	return ctx, func() {
		close(done)
		n.raft.DeregisterObserver(obs)
		cancel(nil)
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
