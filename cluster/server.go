package cluster

import (
	"context"
	"errors"
	"fmt"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster/grants"
	"github.com/jfs-dev/jfs/rangelock"
)

// Server is the gRPC face of a Node: the Meta service for clients and the
// Admin service for operators. A follower answers UNAVAILABLE with a
// NotLeader detail naming the leader's API address, and the client goes
// there; it forwards to the leader only a request that asks for it
// (ForwardKey, forward.go; see DESIGN.md).
type Server struct {
	jfspb.UnimplementedMetaServer
	jfspb.UnimplementedAdminServer
	n *Node
}

// NewServer returns the services of n.
func NewServer(n *Node) *Server { return &Server{n: n} }

// RegisterServices registers both services on g.
func (s *Server) RegisterServices(g *grpc.Server) {
	jfspb.RegisterMetaServer(g, s)
	jfspb.RegisterAdminServer(g, s)
}

// toStatus turns a node error into the gRPC status clients act on.
func (s *Server) toStatus(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, ErrNotLeader):
		addr, id := s.n.LeaderAPIAddr()
		st, derr := status.New(codes.Unavailable, fmt.Sprintf("node %s is not the leader", s.n.ID())).
			WithDetails(&jfspb.NotLeader{LeaderId: id, LeaderAddr: addr})
		if derr != nil {
			return status.Error(codes.Unavailable, err.Error())
		}
		return st.Err()
	case errors.Is(err, ErrShutdown), errors.Is(err, raft.ErrEnqueueTimeout), errors.Is(err, ErrCorrupt):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded):
		return status.FromContextError(err).Err()
	}
	return status.Error(codes.Internal, err.Error())
}

// propose replicates req as a command of type typ and returns the state
// machine's response, which must be an R. A request with a size out of
// bounds (checkRequest) is answered its errno and never reaches the log.
func propose[R proto.Message](ctx context.Context, s *Server, typ jfspb.CommandType, h *jfspb.Header, req proto.Message) (R, error) {
	var zero R
	if err := checkCred(req); err != nil {
		return zero, err
	}
	if e := checkRequest(req); e != 0 {
		return errnoResponse[R](e), nil
	}
	sid := h.GetSession()
	if sid != 0 {
		// A new leader answers no session's write before the caches
		// an earlier leader granted are gone (caches.go, settled).
		if err := s.waitAsking(ctx, "waiting for the caches of an earlier leader to settle", func(ctx context.Context) error {
			return s.n.caches.settled(ctx, sid, true)
		}); err != nil {
			return zero, err
		}
	}
	resp, index, err := s.n.proposeIndex(ctx, typ, h, req)
	if err != nil {
		return zero, s.toStatus(err)
	}
	if sid != 0 {
		// The write is acknowledged once every mount that cached what it
		// changed dropped it, or lapsed (DESIGN.md "Coherent caches").
		if err := s.waitAsking(ctx, "waiting for mounts to drop their caches of what the request changed", func(ctx context.Context) error {
			return s.n.caches.waitChange(ctx, sid, index)
		}); err != nil {
			return zero, err
		}
	}
	r, ok := resp.(R)
	if !ok {
		return zero, status.Errorf(codes.Internal, "state machine answered %T to %v", resp, typ)
	}
	return r, nil
}

// read answers a read on the leader, in a batch that sees every write that
// completed before the read arrived (reads.go). method names it in metrics
// and the access log's terms. A request with a size out of bounds
// (checkRequest) is answered its errno without being read.
func read[Req proto.Message, R proto.Message](ctx context.Context, s *Server, method string, req Req, f func(Req) R) (R, error) {
	var zero R
	if err := checkCred(req); err != nil {
		return zero, err
	}
	if e := checkRequest(req); e != 0 {
		return errnoResponse[R](e), nil
	}
	resp, err := s.n.reads.do(ctx, method, req, func() proto.Message { return f(req) })
	if err != nil {
		return zero, s.toStatus(err)
	}
	return resp.(R), nil
}

const (
	cmdRegister     = jfspb.CommandType_COMMAND_TYPE_REGISTER
	cmdCloseSession = jfspb.CommandType_COMMAND_TYPE_CLOSE_SESSION
	cmdExpire       = jfspb.CommandType_COMMAND_TYPE_EXPIRE_SESSION
	cmdSetAttr      = jfspb.CommandType_COMMAND_TYPE_SETATTR
	cmdMknod        = jfspb.CommandType_COMMAND_TYPE_MKNOD
	cmdMkdir        = jfspb.CommandType_COMMAND_TYPE_MKDIR
	cmdCreate       = jfspb.CommandType_COMMAND_TYPE_CREATE
	cmdUnlink       = jfspb.CommandType_COMMAND_TYPE_UNLINK
	cmdRmdir        = jfspb.CommandType_COMMAND_TYPE_RMDIR
	cmdRename       = jfspb.CommandType_COMMAND_TYPE_RENAME
	cmdLink         = jfspb.CommandType_COMMAND_TYPE_LINK
	cmdSymlink      = jfspb.CommandType_COMMAND_TYPE_SYMLINK
	cmdOpen         = jfspb.CommandType_COMMAND_TYPE_OPEN
	cmdRelease      = jfspb.CommandType_COMMAND_TYPE_RELEASE
	cmdReleaseBatch = jfspb.CommandType_COMMAND_TYPE_RELEASE_BATCH
	cmdWrite        = jfspb.CommandType_COMMAND_TYPE_WRITE
	cmdSetXattr     = jfspb.CommandType_COMMAND_TYPE_SETXATTR
	cmdRemoveXattr  = jfspb.CommandType_COMMAND_TYPE_REMOVEXATTR
	cmdSetLk        = jfspb.CommandType_COMMAND_TYPE_SETLK
	cmdFlock        = jfspb.CommandType_COMMAND_TYPE_FLOCK
	cmdEndLockWait  = jfspb.CommandType_COMMAND_TYPE_END_LOCK_WAIT
	cmdReleaseOwner = jfspb.CommandType_COMMAND_TYPE_RELEASE_LOCK_OWNER
	cmdSetMember    = jfspb.CommandType_COMMAND_TYPE_SET_MEMBER
	cmdSetSettings  = jfspb.CommandType_COMMAND_TYPE_SET_SETTINGS
	cmdFreeData     = jfspb.CommandType_COMMAND_TYPE_FREE_DATA
	cmdTouchAtime   = jfspb.CommandType_COMMAND_TYPE_TOUCH_ATIME
	cmdAlive        = jfspb.CommandType_COMMAND_TYPE_SESSIONS_ALIVE
	cmdCheckpoint   = jfspb.CommandType_COMMAND_TYPE_CHECKPOINT
	cmdMarkCorrupt  = jfspb.CommandType_COMMAND_TYPE_MARK_CORRUPT
	cmdFreeOrphans  = jfspb.CommandType_COMMAND_TYPE_FREE_ORPHANS
	cmdDelegReturn  = jfspb.CommandType_COMMAND_TYPE_DELEG_RETURN
)

// ---- sessions ----

func (s *Server) Register(ctx context.Context, r *jfspb.RegisterRequest) (*jfspb.RegisterResponse, error) {
	resp, err := propose[*jfspb.RegisterResponse](ctx, s, cmdRegister, r.Header, r)
	if err == nil && resp.Errno == 0 {
		s.n.sessions.add(resp.Session)
		resp.TtlMs = s.n.cfg.SessionTTL.Milliseconds()
	}
	return resp, err
}

// Heartbeat resets the session's timer on the leader and answers once the
// leader's next SessionsAlive record, shared by every heartbeat since the
// previous one, is committed (sessions.go). ESTALE: the session expired or
// never was.
func (s *Server) Heartbeat(ctx context.Context, r *jfspb.HeartbeatRequest) (*jfspb.HeartbeatResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	b, ok := s.n.sessions.beat(r.Session)
	if !ok {
		return &jfspb.HeartbeatResponse{Errno: int32(syscall.ESTALE)}, nil
	}
	if err := b.wait(ctx); err != nil {
		return nil, s.toStatus(err)
	}
	return &jfspb.HeartbeatResponse{TtlMs: s.n.cfg.SessionTTL.Milliseconds(),
		ReportOpens: !s.n.opens.hasReported(r.Session)}, nil
}

// ReportOpens records the open files of a session that this leader has
// not heard since it took office (opens.go): ESTALE for a session that is
// not live.
func (s *Server) ReportOpens(ctx context.Context, r *jfspb.ReportOpensRequest) (*jfspb.ReportOpensResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	if s.n.fsm.Session(r.Session) == nil {
		return &jfspb.ReportOpensResponse{Errno: int32(syscall.ESTALE)}, nil
	}
	handles := make(map[uint64]uint64, len(r.Handles))
	for _, h := range r.Handles {
		handles[h.Fh] = h.Ino
	}
	if !s.n.opens.report(r.Session, handles, !r.Incomplete) {
		return nil, s.toStatus(ErrNotLeader)
	}
	s.n.kickFree() // the table may be complete now
	return &jfspb.ReportOpensResponse{}, nil
}

func (s *Server) CloseSession(ctx context.Context, r *jfspb.CloseSessionRequest) (*jfspb.CloseSessionResponse, error) {
	resp, err := propose[*jfspb.CloseSessionResponse](ctx, s, cmdCloseSession, r.Header, r)
	if err == nil && resp.Errno == 0 {
		s.n.sessions.forget(r.GetHeader().GetSession())
	}
	return resp, err
}

// ---- names and attributes ----

// Lookup and GetAttr may hand out a cache grant (caches.go): registered
// before the read, confirmed after it. The read itself is shared with
// every identical one (reads.go), so the request it is keyed by carries
// no cache fields. Any of them waits, after its read, while a change of
// what it read is on its way to the caches that hold the old state.
func (s *Server) Lookup(ctx context.Context, r *jfspb.LookupRequest) (*jfspb.LookupResponse, error) {
	if err := s.waitAsking(ctx, "waiting for the caches of an earlier leader to settle", func(ctx context.Context) error {
		return s.n.caches.settled(ctx, r.CacheSession, false)
	}); err != nil {
		return nil, err
	}
	var etok grants.Token
	key := r
	if r.MayCache || r.CacheSession != 0 {
		if r.MayCache {
			etok = s.n.caches.grantEntry(r.CacheSession, r.Parent, r.Name)
		}
		key = &jfspb.LookupRequest{Parent: r.Parent, Name: r.Name, Cred: r.Cred}
	}
	resp, err := read(ctx, s, "lookup", key, s.n.fsm.Lookup)
	if err != nil {
		return nil, err
	}
	entry := []grants.Entry{{Parent: r.Parent, Name: string(r.Name)}}
	if resp.Errno != 0 || resp.Attr == nil || !etok.Valid() {
		// Not granted (negative entries never are); still wait for a
		// change in progress.
		var inos []uint64
		if resp.Attr != nil {
			inos = []uint64{resp.Attr.Ino}
		}
		if _, err := s.afterRead(ctx, r.CacheSession, inos, entry); err != nil {
			return nil, err
		}
		return resp, nil
	}
	// The inode was not known before the read: its grant is registered
	// now and its attributes read again, under the grant.
	ino := resp.Attr.Ino
	itok := s.n.caches.grantIno(r.CacheSession, ino)
	attr := resp.Attr
	if itok.Valid() {
		a := s.n.fsm.GetAttr(&jfspb.GetAttrRequest{Ino: ino})
		if a.Errno != 0 || a.Attr == nil {
			itok = grants.Token{}
		} else {
			attr = a.Attr
		}
	}
	ok, err := s.afterRead(ctx, r.CacheSession, []uint64{ino}, entry, etok, itok)
	if err != nil {
		return nil, err
	}
	if !ok {
		return resp, nil
	}
	s.n.metrics.Load().countCacheGrant()
	return &jfspb.LookupResponse{Attr: attr, CacheGrant: true}, nil
}

func (s *Server) GetAttr(ctx context.Context, r *jfspb.GetAttrRequest) (*jfspb.GetAttrResponse, error) {
	if err := s.waitAsking(ctx, "waiting for the caches of an earlier leader to settle", func(ctx context.Context) error {
		return s.n.caches.settled(ctx, r.CacheSession, false)
	}); err != nil {
		return nil, err
	}
	var tok grants.Token
	key := r
	if r.MayCache || r.CacheSession != 0 {
		if r.MayCache {
			tok = s.n.caches.grantIno(r.CacheSession, r.Ino)
		}
		key = &jfspb.GetAttrRequest{Ino: r.Ino}
	}
	resp, err := read(ctx, s, "getattr", key, s.n.fsm.GetAttr)
	if err != nil {
		return nil, err
	}
	ok, err := s.afterRead(ctx, r.CacheSession, []uint64{r.Ino}, nil, tok)
	if err != nil {
		return nil, err
	}
	if !ok || resp.Errno != 0 {
		return resp, nil
	}
	s.n.metrics.Load().countCacheGrant()
	return &jfspb.GetAttrResponse{Attr: resp.Attr, CacheGrant: true}, nil
}

// CacheWatch is a session's invalidation stream (caches.go): a reset,
// then the invalidations of what the session was granted, and a ping at
// least every caches.ping. It ends with UNAVAILABLE (NotLeader) when this
// node stops leading, so that the mount follows the leader.
func (s *Server) CacheWatch(r *jfspb.CacheWatchRequest, stream jfspb.Meta_CacheWatchServer) error {
	ctx := stream.Context()
	if s.n.cfg.TLS != nil {
		id, err := peerIdentity(ctx)
		if err != nil {
			return err
		}
		if err := s.n.owns(id, r); err != nil {
			return err
		}
	}
	if !s.n.ready() {
		return s.toStatus(ErrNotLeader)
	}
	if s.n.fsm.Session(r.Session) == nil {
		return status.Errorf(codes.FailedPrecondition, "session %d is not live", r.Session)
	}
	select {
	case <-s.n.caches.draining:
		return s.toStatus(ErrShutdown)
	default:
	}
	cs, reset, ok := s.n.caches.open(r.Session)
	if !ok {
		return s.toStatus(ErrNotLeader)
	}
	defer s.n.caches.closeStream(cs)
	if err := stream.Send(reset); err != nil {
		return err
	}
	ping := time.NewTicker(s.n.caches.ping)
	defer ping.Stop()
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-cs.gone:
			return s.toStatus(ErrNotLeader)
		case <-s.n.caches.draining:
			return s.toStatus(ErrShutdown)
		case <-ping.C:
			if !s.n.ready() {
				return s.toStatus(ErrNotLeader)
			}
			if err := stream.Send(&jfspb.CacheEvent{Stream: cs.id}); err != nil {
				return err
			}
		case <-cs.wake:
			if ev := s.n.caches.take(cs); ev != nil {
				if err := stream.Send(ev); err != nil {
					return err
				}
			}
		}
	}
}

// CacheAck records that the session's mount dropped what the events of
// its stream up to seq named. ESTALE: the stream is not the session's
// current one on this leader (the mount reconnects).
func (s *Server) CacheAck(ctx context.Context, r *jfspb.CacheAckRequest) (*jfspb.CacheAckResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	if !s.n.caches.ack(r.Session, r.Stream, r.Seq) {
		return &jfspb.CacheAckResponse{Errno: int32(syscall.ESTALE)}, nil
	}
	return &jfspb.CacheAckResponse{}, nil
}

func (s *Server) SetAttr(ctx context.Context, r *jfspb.SetAttrRequest) (*jfspb.SetAttrResponse, error) {
	return propose[*jfspb.SetAttrResponse](ctx, s, cmdSetAttr, r.Header, r)
}

// TouchAtime records a read under the relatime rule. Readers send it only
// when the attributes their read returned say the atime is due, so most
// reads cost no log entry.
func (s *Server) TouchAtime(ctx context.Context, r *jfspb.TouchAtimeRequest) (*jfspb.TouchAtimeResponse, error) {
	return propose[*jfspb.TouchAtimeResponse](ctx, s, cmdTouchAtime, r.Header, r)
}

func (s *Server) Mknod(ctx context.Context, r *jfspb.MknodRequest) (*jfspb.MknodResponse, error) {
	return propose[*jfspb.MknodResponse](ctx, s, cmdMknod, r.Header, r)
}

func (s *Server) Mkdir(ctx context.Context, r *jfspb.MkdirRequest) (*jfspb.MkdirResponse, error) {
	return propose[*jfspb.MkdirResponse](ctx, s, cmdMkdir, r.Header, r)
}

// Create creates and opens a file; its apply tells the leader's table of
// the open (opens.go). Only a ready leader takes it, as its table hears
// applies only from when it took office.
func (s *Server) Create(ctx context.Context, r *jfspb.CreateRequest) (*jfspb.CreateResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	return propose[*jfspb.CreateResponse](ctx, s, cmdCreate, r.Header, r)
}

// Unlink, Rmdir and Rename carry a FreeHint when the leader's memory shows
// the inode they may remove unused (opens.go), so that it is freed in the
// same entry rather than left an orphan.

func (s *Server) Unlink(ctx context.Context, r *jfspb.UnlinkRequest) (resp *jfspb.UnlinkResponse, err error) {
	var done func(error)
	r.FreeHint, done = s.n.freeHint(r.Parent, r.Name)
	defer func() { done(err) }()
	return propose[*jfspb.UnlinkResponse](ctx, s, cmdUnlink, r.Header, r)
}

func (s *Server) Rmdir(ctx context.Context, r *jfspb.RmdirRequest) (resp *jfspb.RmdirResponse, err error) {
	var done func(error)
	r.FreeHint, done = s.n.freeHint(r.Parent, r.Name)
	defer func() { done(err) }()
	return propose[*jfspb.RmdirResponse](ctx, s, cmdRmdir, r.Header, r)
}

func (s *Server) Rename(ctx context.Context, r *jfspb.RenameRequest) (resp *jfspb.RenameResponse, err error) {
	var done func(error)
	r.FreeHint, done = s.n.freeHint(r.NewParent, r.NewName)
	defer func() { done(err) }()
	return propose[*jfspb.RenameResponse](ctx, s, cmdRename, r.Header, r)
}

func (s *Server) Link(ctx context.Context, r *jfspb.LinkRequest) (*jfspb.LinkResponse, error) {
	return propose[*jfspb.LinkResponse](ctx, s, cmdLink, r.Header, r)
}

func (s *Server) Symlink(ctx context.Context, r *jfspb.SymlinkRequest) (*jfspb.SymlinkResponse, error) {
	return propose[*jfspb.SymlinkResponse](ctx, s, cmdSymlink, r.Header, r)
}

func (s *Server) ReadLink(ctx context.Context, r *jfspb.ReadLinkRequest) (*jfspb.ReadLinkResponse, error) {
	return read(ctx, s, "readlink", r, s.n.fsm.ReadLink)
}

func (s *Server) ReadDir(ctx context.Context, r *jfspb.ReadDirRequest) (*jfspb.ReadDirResponse, error) {
	return read(ctx, s, "readdir", r, s.n.fsm.ReadDir)
}

// ---- open files and data ----

// Open opens a file for the session. The open lives in the leader's
// memory (opens.go) and costs no log entry, unless O_TRUNC makes it a write:
// then the Open command truncates in the log and its apply tells the
// table of the open. An in-memory open is recorded before the inode is
// checked, with a read that sees every write completed before it, so an
// orphan's free (FreeOrphans) either is applied before the check, which
// then answers ENOENT, or is decided after the open is recorded and leaves
// the inode alone.
func (s *Server) Open(ctx context.Context, r *jfspb.OpenRequest) (*jfspb.OpenResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	if r.Flags&syscall.O_TRUNC != 0 {
		return propose[*jfspb.OpenResponse](ctx, s, cmdOpen, r.Header, r)
	}
	if e := checkRequest(r); e != 0 {
		return errnoResponse[*jfspb.OpenResponse](e), nil
	}
	sid, fh := r.Header.GetSession(), r.Fh
	wait, ok := s.n.opens.open(sid, fh, r.Ino)
	if !ok {
		return nil, s.toStatus(ErrNotLeader)
	}
	if wait != nil {
		select {
		case <-wait:
		case <-ctx.Done():
			s.closeHandle(sid, fh)
			return nil, s.toStatus(ctx.Err())
		}
	}
	resp, err := read(ctx, s, "open", r, func(r *jfspb.OpenRequest) *jfspb.OpenResponse {
		return s.n.fsm.CheckOpen(sid, r)
	})
	if err != nil || resp.Errno != 0 {
		s.closeHandle(sid, fh)
	}
	return resp, err
}

// closeHandle forgets handle (sid, fh) of the leader's memory and, when it
// was its inode's last, looks for orphans to free.
func (s *Server) closeHandle(sid, fh uint64) {
	if ino, last := s.n.opens.release(sid, fh); ino != 0 && last {
		s.n.kickFree()
	}
}

// Release ends an open file. Only a release that drops a lock, or ends an
// open that an older version recorded in the log, is a log entry
// (fsm.ReleaseNeedsLog); any other ends the open in the leader's memory.
// A release of a handle the leader does not know succeeds.
func (s *Server) Release(ctx context.Context, r *jfspb.ReleaseRequest) (*jfspb.ReleaseResponse, error) {
	if e := checkRequest(r); e != 0 {
		return errnoResponse[*jfspb.ReleaseResponse](e), nil
	}
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	sid := r.Header.GetSession()
	resp := &jfspb.ReleaseResponse{}
	var err error
	if s.n.fsm.ReleaseNeedsLog(sid, r) {
		resp, err = propose[*jfspb.ReleaseResponse](ctx, s, cmdRelease, r.Header, r)
	} else if s.n.fsm.Session(sid) == nil {
		resp.Errno = int32(syscall.ESTALE)
	}
	if err == nil && resp.Errno != int32(syscall.ESTALE) {
		s.closeHandle(sid, r.Fh)
		if len(r.LockOwners) > 0 {
			s.n.locks.forgetOwners(sid, r.LockOwners...)
		}
	}
	return resp, err
}

// ReleaseBatch ends several open files of the session as Release does: the
// releases that need the log go in one entry, the others only end opens
// in the leader's memory.
func (s *Server) ReleaseBatch(ctx context.Context, r *jfspb.ReleaseBatchRequest) (*jfspb.ReleaseBatchResponse, error) {
	if e := checkRequest(r); e != 0 {
		return errnoResponse[*jfspb.ReleaseBatchResponse](e), nil
	}
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	sid := r.Header.GetSession()
	if s.n.fsm.Session(sid) == nil {
		return &jfspb.ReleaseBatchResponse{Errno: int32(syscall.ESTALE)}, nil
	}
	out := &jfspb.ReleaseBatchResponse{Errnos: make([]int32, len(r.Releases))}
	var logged []*jfspb.ReleaseRequest
	var at []int
	for i, rr := range r.Releases {
		if s.n.fsm.ReleaseNeedsLog(sid, rr) {
			logged = append(logged, rr)
			at = append(at, i)
		}
	}
	if len(logged) > 0 {
		resp, err := propose[*jfspb.ReleaseBatchResponse](ctx, s, cmdReleaseBatch, r.Header,
			&jfspb.ReleaseBatchRequest{Header: r.Header, Releases: logged})
		if err != nil {
			return nil, err
		}
		if resp.Errno != 0 {
			return resp, nil
		}
		for j, e := range resp.Errnos {
			if j < len(at) { // a retry may find fewer to log than the stored answer has
				out.Errnos[at[j]] = e
			}
		}
	}
	for _, rr := range r.Releases {
		s.closeHandle(sid, rr.Fh)
		if len(rr.LockOwners) > 0 {
			s.n.locks.forgetOwners(sid, rr.LockOwners...)
		}
	}
	return out, nil
}

func (s *Server) Read(ctx context.Context, r *jfspb.ReadRequest) (*jfspb.ReadResponse, error) {
	return read(ctx, s, "read", clampRead(r), s.n.fsm.Read)
}

func (s *Server) Write(ctx context.Context, r *jfspb.WriteRequest) (*jfspb.WriteResponse, error) {
	return propose[*jfspb.WriteResponse](ctx, s, cmdWrite, r.Header, r)
}

func (s *Server) Fallocate(ctx context.Context, r *jfspb.FallocateRequest) (*jfspb.FallocateResponse, error) {
	return propose[*jfspb.FallocateResponse](ctx, s, jfspb.CommandType_COMMAND_TYPE_FALLOCATE, r.Header, r)
}

// StatFS reports the capacity and inode limit of the settings when set,
// else the free space and inodes of the leader's data directory: the used
// figures are the file system's own, the free ones the disk's.
func (s *Server) StatFS(ctx context.Context, r *jfspb.StatFSRequest) (*jfspb.StatFSResponse, error) {
	resp, err := read(ctx, s, "statfs", r, s.n.fsm.StatFS)
	if err != nil || resp.Errno != 0 || (resp.TotalBytes != 0 && resp.TotalInodes != 0) {
		return resp, err
	}
	var st syscall.Statfs_t
	if err := syscall.Statfs(s.n.cfg.DataDir, &st); err != nil {
		s.n.log.Warn("statfs of the data directory", "dir", s.n.cfg.DataDir, "error", err)
		return &jfspb.StatFSResponse{Errno: int32(syscall.EIO)}, nil
	}
	c := proto.Clone(resp).(*jfspb.StatFSResponse) // resp may be shared by a read batch
	if c.TotalBytes == 0 {
		c.FreeBytes = st.Bavail * uint64(st.Bsize)
		c.TotalBytes = c.UsedBytes + c.FreeBytes
	}
	if c.TotalInodes == 0 {
		c.FreeInodes = st.Ffree
		c.TotalInodes = c.UsedInodes + c.FreeInodes
	}
	return c, nil
}

// ---- extended attributes ----

func (s *Server) GetXattr(ctx context.Context, r *jfspb.GetXattrRequest) (*jfspb.GetXattrResponse, error) {
	return read(ctx, s, "getxattr", r, s.n.fsm.GetXattr)
}

func (s *Server) SetXattr(ctx context.Context, r *jfspb.SetXattrRequest) (*jfspb.SetXattrResponse, error) {
	return propose[*jfspb.SetXattrResponse](ctx, s, cmdSetXattr, r.Header, r)
}

func (s *Server) ListXattr(ctx context.Context, r *jfspb.ListXattrRequest) (*jfspb.ListXattrResponse, error) {
	return read(ctx, s, "listxattr", r, s.n.fsm.ListXattr)
}

func (s *Server) RemoveXattr(ctx context.Context, r *jfspb.RemoveXattrRequest) (*jfspb.RemoveXattrResponse, error) {
	return propose[*jfspb.RemoveXattrResponse](ctx, s, cmdRemoveXattr, r.Header, r)
}

// ---- locks ----

// GetLk is F_GETLK. A delegated inode is recalled first (deleg.go).
func (s *Server) GetLk(ctx context.Context, r *jfspb.GetLkRequest) (*jfspb.GetLkResponse, error) {
	for {
		if err := s.awaitUndelegated(ctx, r.Ino); err != nil {
			return nil, err
		}
		resp, err := read(ctx, s, "getlk", r, s.n.fsm.GetLk)
		if err != nil || !resp.DelegBusy {
			return resp, err
		}
	}
}

// SetLk is F_SETLK, or with block F_SETLKW: see lockWaits.
func (s *Server) SetLk(ctx context.Context, r *jfspb.SetLkRequest) (*jfspb.SetLkResponse, error) {
	// A blocking request is proposed by the lock waits, not by propose:
	// its credentials are checked here, for either path.
	if err := checkCred(r); err != nil {
		return nil, err
	}
	if e := checkRequest(r); e != 0 {
		return &jfspb.SetLkResponse{Errno: int32(e)}, nil
	}
	if r.MaybeOfd && r.Type != jfspb.LockType_LOCK_TYPE_UNLOCK && r.Header != nil && s.n.ready() {
		done := s.n.locks.markOFD(rangelock.Owner{Session: r.Header.Session, ID: r.Owner}, r.Ino)
		defer done()
	}
	return setLock(ctx, s, cmdSetLk, r, func(d bool) { r.Delegate = d }, func() (*waiter, bool) { return newPosixWaiter(r) },
		func(errno int32, conflicts []*jfspb.LockOwner, delegated bool) *jfspb.SetLkResponse {
			return &jfspb.SetLkResponse{Errno: errno, Conflicts: conflicts, Delegated: delegated}
		})
}

// Flock is flock(2), blocking without LOCK_NB: see lockWaits.
func (s *Server) Flock(ctx context.Context, r *jfspb.FlockRequest) (*jfspb.FlockResponse, error) {
	if err := checkCred(r); err != nil { // as SetLk
		return nil, err
	}
	if e := checkRequest(r); e != 0 {
		return &jfspb.FlockResponse{Errno: int32(e)}, nil
	}
	return setLock(ctx, s, cmdFlock, r, func(d bool) { r.Delegate = d }, func() (*waiter, bool) { return newFlockWaiter(r) },
		func(errno int32, conflicts []*jfspb.LockOwner, delegated bool) *jfspb.FlockResponse {
			return &jfspb.FlockResponse{Errno: errno, Conflicts: conflicts, Delegated: delegated}
		})
}

// lockRequest is what setLock needs of a SetLk or Flock request, and
// lockAnswer of their answers.
type lockRequest interface {
	proto.Message
	GetIno() uint64
	GetBlock() bool
	GetHeader() *jfspb.Header
	GetDelegOk() bool
	GetType() jfspb.LockType
}

type lockAnswer interface {
	proto.Message
	GetDelegBusy() bool
	GetDelegated() bool
}

// setLock serves SetLk and Flock alike. A delegated inode is recalled
// first; a delegation made while the request was on its way makes it
// busy, and it is applied again. setDelegate marks the request as one the
// cluster may answer with a delegation, newWaiter makes its blocking wait
// (false: it does not wait, and is proposed), and answer builds the answer
// of a wait or of an interrupt while recalling.
func setLock[R lockAnswer](ctx context.Context, s *Server, typ jfspb.CommandType, r lockRequest, setDelegate func(bool),
	newWaiter func() (*waiter, bool), answer func(errno int32, conflicts []*jfspb.LockOwner, delegated bool) R) (R, error) {
	var zero R
	for {
		if err := s.awaitUndelegatedOr(ctx, r.GetIno(), blockHeader(r.GetBlock(), r.GetHeader())); errors.Is(err, errCanceledWhileRecalling) {
			return answer(int32(syscall.EINTR), nil, false), nil
		} else if err != nil {
			return zero, err
		}
		setDelegate(r.GetDelegOk() && r.GetHeader() != nil && r.GetType() != jfspb.LockType_LOCK_TYPE_UNLOCK && s.n.deleg.mayDelegate(r.GetIno()))
		w, ok := newWaiter()
		if !r.GetBlock() || !ok {
			resp, err := propose[R](ctx, s, typ, r.GetHeader(), r)
			if err == nil && resp.GetDelegBusy() {
				continue
			}
			if err == nil && resp.GetDelegated() {
				s.n.metrics.Load().countDeleg("granted")
			}
			return resp, err
		}
		errno, conflicts, err := s.n.locks.wait(ctx, w)
		if errors.Is(err, errDelegBusy) {
			continue
		}
		if err != nil {
			return zero, s.waitStatus(err)
		}
		if w.delegated {
			s.n.metrics.Load().countDeleg("granted")
		}
		return answer(int32(errno), conflicts, w.delegated), nil
	}
}

// blockHeader is h for a blocking request, nil otherwise.
func blockHeader(block bool, h *jfspb.Header) *jfspb.Header {
	if block {
		return h
	}
	return nil
}

// waitStatus: a wait taken over by a retry of the same request ends with
// ABORTED; anything else as other errors.
func (s *Server) waitStatus(err error) error {
	if errors.Is(err, errInterrupted) {
		return status.Error(codes.Aborted, "lock wait replaced by a retry of the same request")
	}
	return s.toStatus(err)
}

// CancelLockWait interrupts a blocked SetLk or Flock (FUSE INTERRUPT).
func (s *Server) CancelLockWait(ctx context.Context, r *jfspb.CancelLockWaitRequest) (*jfspb.CancelLockWaitResponse, error) {
	if !s.n.ready() {
		return nil, s.toStatus(ErrNotLeader)
	}
	if err := s.n.locks.cancel(ctx, waitKey{r.Session, r.Seq}); err != nil {
		return nil, s.toStatus(err)
	}
	return &jfspb.CancelLockWaitResponse{}, nil
}

func (s *Server) ReleaseLockOwner(ctx context.Context, r *jfspb.ReleaseLockOwnerRequest) (*jfspb.ReleaseLockOwnerResponse, error) {
	for {
		resp, err := propose[*jfspb.ReleaseLockOwnerResponse](ctx, s, cmdReleaseOwner, r.Header, r)
		if err == nil && resp.DelegBusy {
			// The session's own delegation: its mount returns the locks first.
			if err := s.awaitUndelegated(ctx, r.Ino); err != nil {
				return nil, err
			}
			continue
		}
		if err == nil {
			s.n.locks.forgetOwners(r.Header.GetSession(), r.Owner)
		}
		return resp, err
	}
}
