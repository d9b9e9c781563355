package cluster

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
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
//
// The same answers give the leader a read lease (lease.go): for a while
// after a round, reads need no round at all.

// PeerConfirmer asks voter peer for its term and, for the read lease, its
// view of the leader (Node.AnswerConfirmTerm answers it).
type PeerConfirmer func(ctx context.Context, peer raft.Server, req *jfspb.ConfirmTermRequest) (*jfspb.ConfirmTermResponse, error)

// confirmTimeout bounds one round of confirmations.
const confirmTimeout = 2 * time.Second

// Why a round of confirmations was sent (jfsd_confirm_rounds_total{why}).
const (
	roundRead  = 0 // a read found no valid lease
	roundRenew = 1 // a read found the lease near its end
)

// confirmLeadership returns nil when a majority of voters, this node
// included, is in term. With read leases on, the answers also extend the
// lease (lease.go); why is counted.
func (n *Node) confirmLeadership(ctx context.Context, term uint64, why int) error {
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
	n.rounds[why].Add(1)
	// The lease counts from before the first request leaves.
	sent := n.now()
	ctx, cancel := context.WithTimeout(ctx, confirmTimeout)
	defer cancel()
	answers := make(chan *jfspb.ConfirmTermResponse, len(peers))
	req := &jfspb.ConfirmTermRequest{Term: term, LeaderId: n.cfg.ID}
	for _, p := range peers {
		go func(p raft.Server) {
			a, err := n.confirmPeer(ctx, p, req)
			if err != nil {
				a = nil
			}
			answers <- a
		}(p)
	}
	yes, no := 0, 0
	var heard []*jfspb.ConfirmTermResponse
	for range peers {
		a := <-answers
		if a != nil && a.Term == term {
			heard = append(heard, a)
			if yes++; yes >= need {
				n.leaseRound(term, sent, need, heard)
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
func (n *Node) confirmPeer(ctx context.Context, p raft.Server, req *jfspb.ConfirmTermRequest) (*jfspb.ConfirmTermResponse, error) {
	if n.cfg.ConfirmPeer != nil {
		return n.cfg.ConfirmPeer(ctx, p, req)
	}
	m := n.fsm.Member(string(p.ID))
	if m == nil || m.ApiAddr == "" {
		return nil, fmt.Errorf("no API address known for %s", p.ID)
	}
	cc, err := n.peers.conn(m.ApiAddr)
	if err != nil {
		return nil, err
	}
	return jfspb.NewAdminClient(cc).ConfirmTerm(ctx, req)
}

// ConfirmTerm answers a leader's confirmation with this node's term.
func (s *Server) ConfirmTerm(ctx context.Context, r *jfspb.ConfirmTermRequest) (*jfspb.ConfirmTermResponse, error) {
	return s.n.AnswerConfirmTerm(r), nil
}

// AnswerConfirmTerm answers a leader that confirms its term r.Term: this
// node's term, and for the read lease the leader it knows, how long ago its
// raft last heard from a leader, and its heartbeat timeout if it keeps the
// start rule (DESIGN.md, "Reads under a lease").
//
// The three are read in this order: the last contact, then the leader, then
// the term. If the leader read is the asker, this node forgets it no earlier
// than the contact read plus its heartbeat timeout (raft only moves the
// last contact forward), and until it forgets it votes for no one else.
func (n *Node) AnswerConfirmTerm(r *jfspb.ConfirmTermRequest) *jfspb.ConfirmTermResponse {
	last := n.raft.LastContact()
	_, leader := n.raft.LeaderWithID()
	cur := n.raft.CurrentTerm()
	resp := &jfspb.ConfirmTermResponse{Term: cur, Same: cur == r.Term, LeaderId: string(leader)}
	if n.cfg.ReadLease && !last.IsZero() {
		resp.SinceContactNs = int64(time.Since(last))
		resp.HeartbeatTimeoutNs = int64(n.cfg.HeartbeatTimeout)
	}
	return resp
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
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second, PermitWithoutStream: true}),
		// A peer back from an outage is reached within a second, not after
		// gRPC's reconnect backoff of up to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}}))
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
