package cluster

import (
	"context"
	"fmt"
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// MaxMessageSize bounds one gRPC message; a write carries at most 4 MiB of
// data, so this leaves room for the envelope.
const MaxMessageSize = 16 << 20

// Serve serves n's API on lis in the background and returns the gRPC
// server (opts are added to the defaults); with Config.TLS set it
// serves mutual TLS only, and authorizes every call (auth.go); GracefulStop or Stop it before
// n.Shutdown. If serving fails (the listener breaks), the node is failed:
// see Node.Failed.
func Serve(n *Node, lis net.Listener, opts ...grpc.ServerOption) *grpc.Server {
	sopts := append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Runs after any interceptor in opts (grpc.UnaryInterceptor), so a
		// forwarded request is counted by the follower's metrics too; a
		// corrupt node refuses before it forwards anything.
		//
		// Authorization comes first: a refused caller learns nothing, and a
		// forwarded call is passed on under its caller's identity.
		grpc.ChainUnaryInterceptor(authUnary(n), refuseWhenCorrupt(n), forwardInterceptor(n)),
		grpc.ChainStreamInterceptor(authStream(n)),
	}, opts...)
	if n.cfg.TLS != nil {
		sopts = append(sopts, grpc.Creds(credentials.NewTLS(n.cfg.TLS.ServerConfig())))
	}
	g := grpc.NewServer(sopts...)
	NewServer(n).RegisterServices(g)
	go func() {
		// Serve returns nil after Stop or GracefulStop.
		if err := g.Serve(lis); err != nil {
			n.fail(fmt.Errorf("api server on %s: %w", lis.Addr(), err))
		}
	}()
	return g
}

// answeredWhenCorrupt are the methods a corrupt node still answers: they
// report on it, or on raft, and serve no state.
var answeredWhenCorrupt = map[string]bool{
	jfspb.Admin_ClusterStatus_FullMethodName: true,
	jfspb.Admin_Digest_FullMethodName:        true,
	jfspb.Admin_ConfirmTerm_FullMethodName:   true,
}

// refuseWhenCorrupt answers UNAVAILABLE to every other call while n is
// marked corrupt, so that no client reads its state; clients go to another
// node.
func refuseWhenCorrupt(n *Node) grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		if why := n.Corrupt(); why != "" && !answeredWhenCorrupt[info.FullMethod] {
			return nil, status.Errorf(codes.Unavailable, "%v: node %s: %s", ErrCorrupt, n.ID(), why)
		}
		return h(ctx, req)
	}
}

// StopServer stops g gracefully, or at once after timeout.
func StopServer(g *grpc.Server, timeout time.Duration) {
	done := make(chan struct{})
	go func() {
		g.GracefulStop()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(timeout):
		g.Stop()
	}
}
