package client

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// DefaultSessionTTL is the TTL assumed when the cluster does not name one.
const DefaultSessionTTL = 10 * time.Second

// SessionInfo describes the mount that owns a session, as jfsctl shows it.
type SessionInfo struct {
	Host, MountPoint string
	Pid              uint32
	Version          string
}

// Session keeps a registered session alive: it sends a heartbeat every
// third of the session's TTL until Close. The TTL is the one the cluster
// announces in every heartbeat answer and registration, so the keeper
// follows a cluster restarted with another --session-ttl. When the cluster
// has ended the session (its TTL lapsed while this process was paused, or
// an operator evicted it), the keeper registers a new one: requests sent
// from then on carry the new id, while whatever belonged to the old one
// (open files, locks) is gone. The session id has one home, the Client
// (Client.Session): requests and the keeper read the same value. Its
// methods are safe for concurrent use.
type Session struct {
	c     *Client
	info  SessionInfo
	ttlNs atomic.Int64
	lost  chan uint64 // ids the cluster answered ESTALE for

	// lease is the session id and the moment before which the cluster
	// cannot have ended it for lack of heartbeats (see LeaseUntil).
	lease atomic.Pointer[sessionLease]

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error

	opensMu sync.Mutex
	opens   func(session uint64) ([]*jfspb.OpenHandle, bool) // see SetOpenFiles
}

// SetOpenFiles installs fn, which lists the files open under a session
// (handle id and inode), and whether that list is complete (false while a
// create is in flight, whose handle is not known yet). The leader keeps
// open files in memory only; a new leader asks each session for them in a
// heartbeat's answer, and the keeper then sends what fn lists
// (ReportOpens); an incomplete list is sent again at the next heartbeat.
// Without fn a session reports none.
func (s *Session) SetOpenFiles(fn func(session uint64) ([]*jfspb.OpenHandle, bool)) {
	s.opensMu.Lock()
	s.opens = fn
	s.opensMu.Unlock()
}

// reportOpens sends the open files of session id to the leader.
func (s *Session) reportOpens(ctx context.Context, id uint64) {
	s.opensMu.Lock()
	fn := s.opens
	s.opensMu.Unlock()
	req := &jfspb.ReportOpensRequest{Session: id}
	if fn != nil {
		var complete bool
		req.Handles, complete = fn(id)
		req.Incomplete = !complete
	}
	r, err := s.c.ReportOpens(ctx, req)
	switch {
	case err != nil:
		s.c.log.Warn("reporting open files failed; the next heartbeat asks again", "session", id, "error", err)
	case r.Errno == int32(syscall.ESTALE):
		s.markLost(id)
	case r.Errno != 0:
		s.c.log.Warn("reporting open files refused", "session", id, "errno", syscall.Errno(r.Errno))
	}
}

// StartSession registers a session for c (see Client.Register) and starts
// its heartbeats. It fails with ErrNoLeader when no leader answers within
// the client's retry window.
func (c *Client) StartSession(ctx context.Context, info SessionInfo) (*Session, error) {
	sent := time.Now()
	r, err := c.Register(ctx, info.Host, info.MountPoint, info.Pid, info.Version)
	if err != nil {
		return nil, err
	}
	if err := Errno(r.Errno); err != nil {
		return nil, fmt.Errorf("register session: %w", err)
	}
	s := &Session{c: c, info: info, lost: make(chan uint64, 1), done: make(chan struct{})}
	s.ttlNs.Store(int64(DefaultSessionTTL))
	s.setTTL(r.TtlMs)
	s.extendLease(r.Session, sent)
	s.ctx, s.cancel = context.WithCancel(context.Background())
	c.onSessionLost(s.markLost)
	go s.loop()
	return s, nil
}

// ID is the current session id, the one requests carry from now on.
func (s *Session) ID() uint64 { return s.c.Session() }

// TTL is how long the session lives without a heartbeat, as the cluster
// last announced it.
func (s *Session) TTL() time.Duration { return time.Duration(s.ttlNs.Load()) }

// setTTL adopts the TTL the cluster announced; 0 (not announced) keeps the
// current one.
func (s *Session) setTTL(ms int64) {
	if ms <= 0 {
		return
	}
	ttl := time.Duration(ms) * time.Millisecond
	if old := time.Duration(s.ttlNs.Swap(int64(ttl))); old != ttl {
		s.c.log.Info("session TTL", "ttl", ttl, "previous", old)
	}
}

// sessionLease is what LeaseUntil answers from.
type sessionLease struct {
	id    uint64
	until time.Time
}

// leaseMargin is taken off every lease for the clocks of two hosts that
// run at slightly different rates (the bound cluster/lease assumes too).
const leaseMargin = 10 * time.Millisecond

// LeaseUntil returns the current session id and the moment (on this
// process's monotonic clock) before which the cluster cannot have ended
// that session for lack of heartbeats: the send time of the last heartbeat
// (or registration) the cluster acknowledged, plus the TTL, less 1% and
// leaseMargin. The leader starts a session's TTL when a heartbeat reaches
// it, which is after it was sent, and a new leader never starts it
// earlier (cluster/sessions.go). An operator's eviction can end a session
// at any moment; what relies on this lease must say how it treats one. The
// zero time means no lease is known.
func (s *Session) LeaseUntil() (id uint64, until time.Time) {
	l := s.lease.Load()
	if l == nil {
		return 0, time.Time{}
	}
	return l.id, l.until
}

// extendLease records that the cluster acknowledged a heartbeat or
// registration of session id sent at sent.
func (s *Session) extendLease(id uint64, sent time.Time) {
	ttl := s.TTL()
	until := sent.Add(ttl - ttl/100 - leaseMargin)
	for {
		old := s.lease.Load()
		if old != nil && old.id == id && !until.After(old.until) {
			return
		}
		if s.lease.CompareAndSwap(old, &sessionLease{id: id, until: until}) {
			return
		}
	}
}

// markLost tells the keeper that the cluster answered ESTALE for id.
func (s *Session) markLost(id uint64) {
	select {
	case s.lost <- id:
	default:
	}
}

func (s *Session) loop() {
	defer close(s.done)
	t := time.NewTicker(s.TTL() / 3)
	defer t.Stop()
	for {
		var gone uint64
		select {
		case <-s.ctx.Done():
			return
		case gone = <-s.lost:
		case <-t.C:
			// A heartbeat that takes longer than the TTL is pointless:
			// the session is gone by then or the next one will tell.
			id := s.ID()
			sent := time.Now()
			ctx, cancel := context.WithTimeout(s.ctx, s.TTL())
			r, err := s.heartbeat(ctx, id)
			cancel()
			switch {
			case s.ctx.Err() != nil:
				return
			case err != nil:
				s.c.log.Warn("heartbeat failed", "session", id, "error", err)
			case r.Errno == int32(syscall.ESTALE):
				gone = id
			case r.Errno != 0:
				s.c.log.Warn("heartbeat refused", "session", id, "errno", syscall.Errno(r.Errno))
			default:
				s.setTTL(r.TtlMs)
				s.extendLease(id, sent)
				if r.ReportOpens {
					ctx, cancel := context.WithTimeout(s.ctx, s.TTL())
					s.reportOpens(ctx, id)
					cancel()
				}
			}
		}
		if gone != 0 && gone == s.ID() {
			s.renew(gone)
		}
		t.Reset(s.TTL() / 3)
	}
}

// heartbeatAttempt bounds one try of a heartbeat at one node. The leader
// answers a heartbeat only once the SessionsAlive record that lists the
// session is committed, which happens at most every min(TTL/4, election/2)
// and a half: a healthy leader may take up to 3/8 of the TTL plus a commit.
// Half the TTL covers that; the client's AttemptTimeout, when longer, too.
func (s *Session) heartbeatAttempt() time.Duration {
	return max(s.c.cfg.AttemptTimeout, s.TTL()/2)
}

// heartbeat sends one heartbeat for session id to the leader. A try that
// times out does not make the client pass the node over (see Client.retry):
// a slow heartbeat says nothing about the leader's health.
func (s *Session) heartbeat(ctx context.Context, id uint64) (*jfspb.HeartbeatResponse, error) {
	var resp *jfspb.HeartbeatResponse
	req := &jfspb.HeartbeatRequest{Session: id}
	err := s.c.retry(ctx, s.heartbeatAttempt(), true, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = jfspb.NewMetaClient(cc).Heartbeat(ctx, req)
		return err
	})
	return resp, err
}

// renew registers a new session after the cluster ended session old,
// retrying until it succeeds or the keeper is closed.
func (s *Session) renew(old uint64) {
	s.c.log.Error("session ended by the cluster: its open files and locks are gone and fail with EIO; registering a new session", "session", old)
	for backoff := 100 * time.Millisecond; s.ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		sent := time.Now()
		r, err := s.c.Register(s.ctx, s.info.Host, s.info.MountPoint, s.info.Pid, s.info.Version)
		if err == nil && r.Errno == 0 {
			// Register made r.Session the client's session.
			s.setTTL(r.TtlMs)
			s.extendLease(r.Session, sent)
			s.c.log.Info("new session", "session", r.Session, "previous", old)
			return
		}
		s.c.log.Warn("registering a new session failed", "error", err, "errno", r.GetErrno())
		select {
		case <-s.ctx.Done():
		case <-time.After(backoff):
		}
	}
}

// Close stops the heartbeats and ends the session on the cluster, which
// releases its locks and open files. Later calls return the first result.
func (s *Session) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		r, err := s.c.CloseSession(ctx, &jfspb.CloseSessionRequest{})
		if err == nil {
			err = Errno(r.Errno)
		}
		if err != nil {
			s.closeErr = fmt.Errorf("close session %d: %w", s.ID(), err)
		}
	})
	return s.closeErr
}
