package cluster

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/internal/mtls"
)

// NewRaftTransport listens for raft traffic on addr: TCP, wrapped in
// mutual TLS when src is set, in which case only peers with a node
// certificate of the cluster's CA get through. Without src it is plain
// TCP (see jfsd's loopback rule).
func NewRaftTransport(addr string, src *mtls.Source, log hclog.Logger) (*raft.NetworkTransport, error) {
	if src == nil {
		return raft.NewTCPTransportWithLogger(addr, nil, 3, 10*time.Second, log)
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	return raft.NewNetworkTransportWithLogger(&tlsStream{Listener: l, src: src, server: src.ServerConfig(),
		client: src.ClientConfig(), log: log}, 3, 10*time.Second, log), nil
}

// tlsStream is a raft.StreamLayer over mutual TLS.
type tlsStream struct {
	net.Listener
	src            *mtls.Source
	server, client *tls.Config
	log            hclog.Logger
}

// handshakeTimeout bounds a TLS handshake on the raft port.
const handshakeTimeout = 10 * time.Second

// Accept hands raft a connection whose handshake, and the check that the
// peer is a node, run on its first read or write, so that one slow or
// hostile peer does not hold up the accept loop.
func (t *tlsStream) Accept() (net.Conn, error) {
	c, err := t.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &nodeConn{Conn: tls.Server(c, t.server), log: t.log}, nil
}

func (t *tlsStream) Dial(address raft.ServerAddress, timeout time.Duration) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout}
	return tls.DialWithDialer(d, "tcp", string(address), t.client)
}

// nodeConn is an accepted raft connection: nothing is read from it or
// written to it before the peer has shown a node certificate.
type nodeConn struct {
	*tls.Conn
	log  hclog.Logger
	once sync.Once
	err  error
}

func (c *nodeConn) check() error {
	c.once.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), handshakeTimeout)
		defer cancel()
		if err := c.Conn.HandshakeContext(ctx); err != nil {
			c.err = fmt.Errorf("raft: TLS handshake with %s: %w", c.RemoteAddr(), err)
		} else if id, err := mtls.PeerIdentity(c.ConnectionState()); err != nil {
			c.err = fmt.Errorf("raft: peer %s: %w", c.RemoteAddr(), err)
		} else if id.Role != mtls.RoleNode {
			c.err = fmt.Errorf("raft: peer %s is %s: only nodes may use the raft port", c.RemoteAddr(), id)
		}
		if c.err != nil {
			c.log.Warn("refused a raft connection", "error", c.err)
			c.Conn.Close()
		}
	})
	return c.err
}

func (c *nodeConn) Read(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *nodeConn) Write(b []byte) (int, error) {
	if err := c.check(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// ---- sane terms ----

// MaxTermJump is how far ahead of this node's term a vote or append may
// be: terms grow by one per election, so a jump of more than 2^32 is a
// forged or broken message. One such message would otherwise make every
// node step down at that term, and a term near 2^64 wraps round and no
// leader is ever elected again.
const MaxTermJump = 1 << 32

// ErrTermTooFar answers a raft request whose term is beyond MaxTermJump.
var ErrTermTooFar = errors.New("raft request refused: its term is absurdly far ahead of this node's")

// termGuard wraps a raft transport and answers every request whose term
// is more than MaxTermJump above the node's current term with
// ErrTermTooFar, before raft sees it: on the consumer channel and on the
// heartbeat fast path.
type termGuard struct {
	raft.Transport
	term func() uint64 // the node's current term
	log  hclog.Logger
	out  chan raft.RPC
	stop chan struct{}
	once sync.Once
}

// guardTerms starts the guard on t; term is read for every request.
func guardTerms(t raft.Transport, term func() uint64, log hclog.Logger) *termGuard {
	g := &termGuard{Transport: t, term: term, log: log, out: make(chan raft.RPC), stop: make(chan struct{})}
	go g.pump()
	return g
}

// requestTerm is the term a raft request carries, if it carries one.
func requestTerm(cmd any) (uint64, bool) {
	switch r := cmd.(type) {
	case *raft.AppendEntriesRequest:
		return r.Term, true
	case *raft.RequestVoteRequest:
		return r.Term, true
	case *raft.RequestPreVoteRequest:
		return r.Term, true
	case *raft.InstallSnapshotRequest:
		return r.Term, true
	}
	return 0, false
}

// refuse reports (and answers) a request whose term is too far ahead.
func (g *termGuard) refuse(rpc raft.RPC) bool {
	t, ok := requestTerm(rpc.Command)
	if !ok {
		return false
	}
	cur := g.term()
	if t <= cur || t-cur <= MaxTermJump {
		return false
	}
	g.log.Error("refused a raft request with an absurd term", "type", fmt.Sprintf("%T", rpc.Command),
		"term", t, "current", cur)
	rpc.Respond(nil, ErrTermTooFar)
	return true
}

func (g *termGuard) pump() {
	in := g.Transport.Consumer()
	for {
		select {
		case rpc := <-in:
			if g.refuse(rpc) {
				continue
			}
			select {
			case g.out <- rpc:
			case <-g.stop:
				return
			}
		case <-g.stop:
			return
		}
	}
}

func (g *termGuard) Consumer() <-chan raft.RPC { return g.out }

func (g *termGuard) SetHeartbeatHandler(cb func(raft.RPC)) {
	if cb == nil {
		g.Transport.SetHeartbeatHandler(nil)
		return
	}
	g.Transport.SetHeartbeatHandler(func(rpc raft.RPC) {
		if !g.refuse(rpc) {
			cb(rpc)
		}
	})
}

// RequestPreVote passes on to the wrapped transport, which must support
// pre-votes (both of hashicorp/raft's do).
func (g *termGuard) RequestPreVote(id raft.ServerID, target raft.ServerAddress, args *raft.RequestPreVoteRequest, resp *raft.RequestPreVoteResponse) error {
	pv, ok := g.Transport.(raft.WithPreVote)
	if !ok {
		return errors.New("transport does not support pre-vote")
	}
	return pv.RequestPreVote(id, target, args, resp)
}

// Close stops the guard and closes the wrapped transport.
func (g *termGuard) Close() error {
	g.once.Do(func() { close(g.stop) })
	if c, ok := g.Transport.(raft.WithClose); ok {
		return c.Close()
	}
	return nil
}
