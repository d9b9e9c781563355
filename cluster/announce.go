package cluster

import (
	"context"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// self is this node's member record.
func (n *Node) self() *jfspb.Member {
	return &jfspb.Member{Id: n.cfg.ID, Address: string(n.trans.LocalAddr()), ApiAddr: n.cfg.APIAddr}
}

// recorded reports whether the state machine holds this node's record as it
// is now.
func (n *Node) recorded() bool {
	m := n.fsm.Member(n.cfg.ID)
	return m != nil && m.Address == string(n.trans.LocalAddr()) && m.ApiAddr == n.cfg.APIAddr
}

// announceLoop makes sure the cluster knows this node's API address, so that
// followers can send clients to the leader and operators see every member.
// A leader records itself (becomeReady); a follower asks the leader to,
// over the leader's Admin service.
func (n *Node) announceLoop() {
	defer n.wg.Done()
	var conn *grpc.ClientConn
	var connAddr string
	defer func() {
		if conn != nil {
			conn.Close()
		}
	}()
	for {
		wait := 500 * time.Millisecond
		if n.recorded() {
			wait = 5 * time.Second
		} else if addr, _ := n.LeaderAPIAddr(); addr != "" && !n.IsLeader() {
			if conn == nil || connAddr != addr {
				if conn != nil {
					conn.Close()
				}
				var err error
				conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(n.peers.creds))
				if err != nil {
					n.log.Warn("dial leader", "addr", addr, "error", err)
					conn = nil
				}
				connAddr = addr
			}
			if conn != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				_, err := jfspb.NewAdminClient(conn).Announce(ctx, &jfspb.SetMemberRequest{Member: n.self()})
				cancel()
				if err != nil {
					n.log.Debug("announce to leader", "addr", addr, "error", err)
				}
			}
		}
		select {
		case <-n.stopped:
			return
		case <-time.After(wait):
		}
	}
}

// Announce records a member's addresses; nodes call it on the leader.
func (s *Server) Announce(ctx context.Context, r *jfspb.SetMemberRequest) (*jfspb.SetMemberResponse, error) {
	m := r.GetMember()
	if m == nil || m.Id == "" || r.Remove || checkHostPort("raft address", m.Address) != nil || checkHostPort("api address", m.ApiAddr) != nil {
		return &jfspb.SetMemberResponse{Errno: errnoInval}, nil
	}
	if cur := s.n.fsm.Member(m.Id); cur != nil && proto.Equal(cur, m) {
		return &jfspb.SetMemberResponse{}, nil
	}
	return propose[*jfspb.SetMemberResponse](ctx, s, cmdSetMember, nil, &jfspb.SetMemberRequest{Member: m})
}
