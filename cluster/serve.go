package cluster

import (
	"net"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"
)

// MaxMessageSize bounds one gRPC message; a write carries at most 4 MiB of
// data, so this leaves room for the envelope.
const MaxMessageSize = 16 << 20

// Serve serves n's API on lis in the background and returns the gRPC
// server (opts are added to the defaults); GracefulStop or Stop it before n.Shutdown.
func Serve(n *Node, lis net.Listener, opts ...grpc.ServerOption) *grpc.Server {
	g := grpc.NewServer(append([]grpc.ServerOption{
		grpc.MaxRecvMsgSize(MaxMessageSize),
		grpc.MaxSendMsgSize(MaxMessageSize),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// Runs after any interceptor in opts (grpc.UnaryInterceptor), so a
		// forwarded request is counted by the follower's metrics too.
		grpc.ChainUnaryInterceptor(forwardInterceptor(n)),
	}, opts...)...)
	NewServer(n).RegisterServices(g)
	go g.Serve(lis)
	return g
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
