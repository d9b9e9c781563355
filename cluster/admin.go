package cluster

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"syscall"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// ClusterStatus is answered by any node from its own view, so an operator
// can see a cluster that has no leader.
func (s *Server) ClusterStatus(ctx context.Context, _ *jfspb.ClusterStatusRequest) (*jfspb.ClusterStatusResponse, error) {
	r := s.n.raft
	leaderAddr, leaderID := s.n.LeaderAPIAddr()
	resp := &jfspb.ClusterStatusResponse{
		NodeId:       s.n.ID(),
		State:        r.State().String(),
		LeaderId:     leaderID,
		LeaderAddr:   leaderAddr,
		Term:         r.CurrentTerm(),
		CommitIndex:  r.CommitIndex(),
		AppliedIndex: s.n.fsm.AppliedIndex(),
	}
	cf := r.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, s.toStatus(err)
	}
	for _, srv := range cf.Configuration().Servers {
		m := &jfspb.Member{
			Id:       string(srv.ID),
			Address:  string(srv.Address),
			Voter:    srv.Suffrage == raft.Voter,
			Leader:   string(srv.ID) == leaderID,
			Suffrage: srv.Suffrage.String(),
		}
		if rec := s.n.fsm.Member(string(srv.ID)); rec != nil {
			m.ApiAddr, m.Corrupt = rec.ApiAddr, rec.Corrupt
		}
		resp.Members = append(resp.Members, m)
	}
	slices.SortFunc(resp.Members, func(a, b *jfspb.Member) int {
		switch {
		case a.Id < b.Id:
			return -1
		case a.Id > b.Id:
			return 1
		}
		return 0
	})
	return resp, nil
}

const errnoInval = int32(syscall.EINVAL)

func checkHostPort(what, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("%s %q: %w", what, addr, err)
	}
	return nil
}

// AddMember adds a node to the raft configuration and records its API
// address. EINVAL for a bad id or address.
func (s *Server) AddMember(ctx context.Context, r *jfspb.AddMemberRequest) (*jfspb.AddMemberResponse, error) {
	if r.Id == "" || checkHostPort("raft address", r.Address) != nil ||
		(r.ApiAddr != "" && checkHostPort("api address", r.ApiAddr) != nil) {
		return &jfspb.AddMemberResponse{Errno: int32(syscall.EINVAL)}, nil
	}
	if !s.n.IsLeader() {
		return nil, s.toStatus(ErrNotLeader)
	}
	var f raft.IndexFuture
	if r.Nonvoter {
		f = s.n.raft.AddNonvoter(raft.ServerID(r.Id), raft.ServerAddress(r.Address), 0, s.n.cfg.ApplyTimeout)
	} else {
		f = s.n.raft.AddVoter(raft.ServerID(r.Id), raft.ServerAddress(r.Address), 0, s.n.cfg.ApplyTimeout)
	}
	if err := f.Error(); err != nil {
		return nil, s.toStatus(raftErr(err))
	}
	if r.ApiAddr != "" {
		m := &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: r.Id, Address: r.Address, ApiAddr: r.ApiAddr}}
		if _, err := propose[*jfspb.SetMemberResponse](ctx, s, cmdSetMember, nil, m); err != nil {
			return nil, err
		}
	}
	return &jfspb.AddMemberResponse{}, nil
}

// RemoveMember removes a node from the raft configuration and forgets its
// address. ENOENT: no such member.
func (s *Server) RemoveMember(ctx context.Context, r *jfspb.RemoveMemberRequest) (*jfspb.RemoveMemberResponse, error) {
	if !s.n.IsLeader() {
		return nil, s.toStatus(ErrNotLeader)
	}
	cf := s.n.raft.GetConfiguration()
	if err := cf.Error(); err != nil {
		return nil, s.toStatus(raftErr(err))
	}
	if !slices.ContainsFunc(cf.Configuration().Servers, func(srv raft.Server) bool { return string(srv.ID) == r.Id }) {
		return &jfspb.RemoveMemberResponse{Errno: int32(syscall.ENOENT)}, nil
	}
	if err := s.n.raft.RemoveServer(raft.ServerID(r.Id), 0, s.n.cfg.ApplyTimeout).Error(); err != nil {
		return nil, s.toStatus(raftErr(err))
	}
	m := &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: r.Id}, Remove: true}
	if _, err := propose[*jfspb.SetMemberResponse](ctx, s, cmdSetMember, nil, m); err != nil {
		return nil, err
	}
	return &jfspb.RemoveMemberResponse{}, nil
}

// TransferLeader hands leadership to r.Id, or to any voter when it is empty.
// ENOENT: no such member. EINVAL: the member does not vote, or is marked
// corrupt.
func (s *Server) TransferLeader(ctx context.Context, r *jfspb.TransferLeaderRequest) (*jfspb.TransferLeaderResponse, error) {
	if !s.n.IsLeader() {
		return nil, s.toStatus(ErrNotLeader)
	}
	var f raft.Future
	if r.Id == "" {
		f = s.n.TransferLeadership("", "")
	} else {
		cf := s.n.raft.GetConfiguration()
		if err := cf.Error(); err != nil {
			return nil, s.toStatus(raftErr(err))
		}
		i := slices.IndexFunc(cf.Configuration().Servers, func(srv raft.Server) bool { return string(srv.ID) == r.Id })
		if i < 0 {
			return &jfspb.TransferLeaderResponse{Errno: int32(syscall.ENOENT)}, nil
		}
		srv := cf.Configuration().Servers[i]
		if srv.Suffrage != raft.Voter || s.n.fsm.Member(r.Id).GetCorrupt() != "" {
			return &jfspb.TransferLeaderResponse{Errno: errnoInval}, nil
		}
		if string(srv.ID) == s.n.ID() {
			return &jfspb.TransferLeaderResponse{}, nil // already the leader
		}
		f = s.n.TransferLeadership(srv.ID, srv.Address)
	}
	if err := f.Error(); err != nil {
		return nil, s.toStatus(raftErr(err))
	}
	return &jfspb.TransferLeaderResponse{}, nil
}

// ListSessions lists every session with, from the leader's timers, when it
// last sent a heartbeat, how many locks it holds and, from the leader's
// memory, how many files it has open.
func (s *Server) ListSessions(ctx context.Context, r *jfspb.ListSessionsRequest) (*jfspb.ListSessionsResponse, error) {
	return read(ctx, s, "list_sessions", r, func(*jfspb.ListSessionsRequest) *jfspb.ListSessionsResponse {
		sessions := s.n.fsm.Sessions()
		held := map[uint64]uint32{}
		for _, l := range s.n.fsm.Locks(&jfspb.ListLocksRequest{}).Locks {
			held[l.GetOwner().GetSession()]++
		}
		for _, ss := range sessions {
			if t := s.n.sessions.lastHeartbeat(ss.Id); !t.IsZero() {
				ss.LastHeartbeatNs = t.UnixNano()
			}
			ss.LocksHeld = held[ss.Id]
			ss.StoredResults = s.n.fsm.StoredResults(ss.Id)
			ss.OpenFiles = uint64(s.n.opens.openFiles(ss.Id))
		}
		return &jfspb.ListSessionsResponse{Sessions: sessions}
	})
}

// ListLocks lists held locks and the leader's waiters, each with the host
// of its session and a path of its inode.
func (s *Server) ListLocks(ctx context.Context, r *jfspb.ListLocksRequest) (*jfspb.ListLocksResponse, error) {
	resp, err := read(ctx, s, "list_locks", r, func(r *jfspb.ListLocksRequest) *jfspb.ListLocksResponse {
		resp := s.n.fsm.Locks(r)
		resp.Locks = append(resp.Locks, s.n.locks.snapshot(r.Ino, r.Session)...)
		s.describeLocks(resp.Locks)
		return resp
	})
	if err != nil || resp.Errno != 0 {
		return resp, err
	}
	// Delegated locks are asked of their mounts, outside the read batch.
	if dl := s.n.deleg.delegatedLocks(ctx, r.Ino, r.Session); len(dl) > 0 {
		s.describeLocks(dl)
		resp = proto.Clone(resp).(*jfspb.ListLocksResponse) // may be shared by a read batch
		resp.Locks = append(resp.Locks, dl...)
	}
	return resp, nil
}

// describeLocks fills in the host and path of each lock.
func (s *Server) describeLocks(locks []*jfspb.LockInfo) {
	hosts := map[uint64]string{}
	paths := map[uint64]string{}
	for _, l := range locks {
		sid := l.GetOwner().GetSession()
		if _, ok := hosts[sid]; !ok {
			hosts[sid] = s.n.fsm.Session(sid).GetHost()
		}
		if _, ok := paths[l.Ino]; !ok {
			paths[l.Ino] = s.n.fsm.Path(l.Ino)
		}
		l.Host, l.Path = hosts[sid], paths[l.Ino]
	}
}

func (s *Server) EvictSession(ctx context.Context, r *jfspb.EvictSessionRequest) (*jfspb.EvictSessionResponse, error) {
	req := &jfspb.ExpireSessionRequest{SessionId: r.Session, Reason: r.Reason}
	// The evicted mount may answer its delegated inodes' locks locally
	// until its lease lapses, which is no later than this leader's timer
	// for it: those inodes stay fenced until then (fsm/deleg.go), in the
	// state, so a new leader keeps the fence.
	if until, ok := s.n.sessions.deadlineOf(r.Session); ok {
		req.DelegFenceUntilNs = until.UnixNano()
	}
	resp, err := propose[*jfspb.ExpireSessionResponse](ctx, s, cmdExpire, nil, req)
	if err != nil {
		return nil, err
	}
	if resp.Errno == 0 {
		s.n.sessions.forget(r.Session)
	}
	return &jfspb.EvictSessionResponse{Errno: resp.Errno}, nil
}

// raftErr marks raft's leadership errors as ErrNotLeader.
func raftErr(err error) error {
	switch err {
	case raft.ErrNotLeader, raft.ErrLeadershipLost, raft.ErrLeadershipTransferInProgress:
		return fmt.Errorf("%w: %v", ErrNotLeader, err)
	}
	return err
}

// Digest is answered by any node from its own state machine, leader or not:
// a hash of every key and value but the applied index, and that index, so
// that replicas at the same index can be compared. With at_index, the
// digest taken at the checkpoint at that index (integrity.go); NOT_FOUND
// when the node kept none.
func (s *Server) Digest(ctx context.Context, r *jfspb.DigestRequest) (*jfspb.DigestResponse, error) {
	if r.AtIndex != 0 {
		sum, err := s.n.digestAt(ctx, r.AtIndex)
		if errors.Is(err, errNoDigest) {
			return nil, status.Errorf(codes.NotFound, "node %s: index %d: %v", s.n.ID(), r.AtIndex, err)
		}
		if err != nil {
			return nil, s.toStatus(err)
		}
		return &jfspb.DigestResponse{AppliedIndex: r.AtIndex, Digest: sum[:], NodeId: s.n.ID()}, nil
	}
	applied, sum, err := s.n.fsm.Digest()
	if err != nil {
		return nil, s.toStatus(err)
	}
	return &jfspb.DigestResponse{AppliedIndex: applied, Digest: sum[:], NodeId: s.n.ID()}, nil
}

// SetSettings changes the file system's settings through the log (see
// fsm/settings.go): EINVAL, EBUSY as the state machine answers, and EINVAL
// for initial, which only a new cluster's first leader proposes.
func (s *Server) SetSettings(ctx context.Context, r *jfspb.SetSettingsRequest) (*jfspb.SetSettingsResponse, error) {
	if r.GetSettings() == nil || r.GetInitial() {
		return &jfspb.SetSettingsResponse{Errno: int32(syscall.EINVAL)}, nil
	}
	return propose[*jfspb.SetSettingsResponse](ctx, s, cmdSetSettings, nil, r)
}
