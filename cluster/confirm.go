package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Before a leader serves reads it confirms that it still leads: it asks the
// other voters whether their current term is still its own, and needs a
// majority (itself included) to say so.
//
// hashicorp/raft's VerifyLeader is not enough for this. It counts any
// successful AppendEntries response that arrives after the verification
// began, including responses to heartbeats sent before it: a leader that
// was frozen (SIGSTOP, a long pause) finds such responses in its socket
// buffers when it resumes and "confirms" a leadership that another node
// took over seconds ago. Each ConfirmTerm answer belongs to a request sent
// after the reads arrived, so it cannot be stale. Raft elects at most one
// leader per term and any two majorities share a node, so while a majority
// is still in this term, no later leader can have committed anything.

// PeerConfirmer asks voter peer for its current term.
type PeerConfirmer func(ctx context.Context, peer raft.Server, term uint64) (current uint64, err error)

// confirmTimeout bounds one round of confirmations.
const confirmTimeout = 2 * time.Second

// confirmLeadership returns nil when a majority of voters, this node
// included, is in term.
func (n *Node) confirmLeadership(ctx context.Context, term uint64) error {
	cf := n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	var peers []raft.Server
	voters := 0
	for _, s := range cf.Configuration().Servers {
		if s.Suffrage != raft.Voter {
			continue
		}
		voters++
		if string(s.ID) != n.cfg.ID {
			peers = append(peers, s)
		}
	}
	need := voters / 2 // besides this node
	if need == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	same := make(chan bool, len(peers))
	for _, p := range peers {
		go func(p raft.Server) {
			cur, err := n.confirmPeer(ctx, p, term)
			same <- err == nil && cur == term
		}(p)
	}
	yes, no := 0, 0
	for range peers {
		if <-same {
			if yes++; yes >= need {
				return nil
			}
		} else if no++; no > len(peers)-need {
			break
		}
	}
	return fmt.Errorf("%w: a majority did not confirm term %d", ErrNotLeader, term)
}

// confirmPeer asks peer for its term, through cfg.ConfirmPeer or over the
// peer's Admin service.
func (n *Node) confirmPeer(ctx context.Context, p raft.Server, term uint64) (uint64, error) {
	if n.cfg.ConfirmPeer != nil {
		return n.cfg.ConfirmPeer(ctx, p, term)
	}
	m := n.fsm.Member(string(p.ID))
	if m == nil || m.ApiAddr == "" {
		return 0, fmt.Errorf("no API address known for %s", p.ID)
	}
	cc, err := n.peers.conn(m.ApiAddr)
	if err != nil {
		return 0, err
	}
	resp, err := jfspb.NewAdminClient(cc).ConfirmTerm(ctx, &jfspb.ConfirmTermRequest{Term: term, LeaderId: n.cfg.ID})
	if err != nil {
		return 0, err
	}
	return resp.Term, nil
}

// ConfirmTerm answers a leader's confirmation with this node's term.
func (s *Server) ConfirmTerm(ctx context.Context, r *jfspb.ConfirmTermRequest) (*jfspb.ConfirmTermResponse, error) {
	cur := s.n.raft.CurrentTerm()
	return &jfspb.ConfirmTermResponse{Term: cur, Same: cur == r.Term}, nil
}

// peerConns keeps one connection per peer API address.
type peerConns struct {
	creds credentials.TransportCredentials // set before use
	mu    sync.Mutex
	conns map[string]*grpc.ClientConn
}

func (pc *peerConns) conn(addr string) (*grpc.ClientConn, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if cc := pc.conns[addr]; cc != nil {
		return cc, nil
	}
	// Pings find a peer that froze (SIGSTOP) or was cut off while its TCP
	// connection stays up, so no call to it (a forwarded lock wait above
	// all) hangs for good. The servers allow pings every 5s.
	cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(pc.creds),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}))
	if err != nil {
		return nil, err
	}
	if pc.conns == nil {
		pc.conns = map[string]*grpc.ClientConn{}
	}
	pc.conns[addr] = cc
	return cc, nil
}

func (pc *peerConns) close() {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	for a, cc := range pc.conns {
		cc.Close()
		delete(pc.conns, a)
	}
}

// dialCreds secures the node's calls to the other nodes: mutual TLS with
// its node certificate when Config.TLS is set, plaintext otherwise.
func (n *Node) dialCreds() credentials.TransportCredentials {
	if n.cfg.TLS == nil {
		return insecure.NewCredentials()
	}
	return credentials.NewTLS(n.cfg.TLS.ClientConfig())
}
