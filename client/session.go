package client

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// ErrSessionExpired is returned for a session the cluster no longer knows:
// its TTL lapsed or an operator evicted it, so its locks and open files are
// gone. File-system callers turn it into EIO.
var ErrSessionExpired = errors.New("client: session expired")

// DefaultSessionTTL is the TTL assumed when the cluster does not name one.
const DefaultSessionTTL = 10 * time.Second

// SessionInfo describes the mount that owns a session, as jfsctl shows it.
type SessionInfo struct {
	Host, MountPoint string
	Pid              uint32
	Version          string
}

// Session keeps a registered session alive: it sends a heartbeat every
// third of the session's TTL until Close. Its methods are safe for
// concurrent use.
type Session struct {
	c       *Client
	id      uint64
	ttl     time.Duration
	expired atomic.Bool

	ctx       context.Context // ends at Close
	cancel    context.CancelFunc
	done      chan struct{}
	closeOnce sync.Once
	closeErr  error
}

// StartSession registers a session for c (see Client.Register) and starts
// its heartbeats. It fails with ErrNoLeader when no leader answers within
// the client's retry window.
func (c *Client) StartSession(ctx context.Context, info SessionInfo) (*Session, error) {
	r, err := c.Register(ctx, info.Host, info.MountPoint, info.Pid, info.Version)
	if err != nil {
		return nil, err
	}
	if err := Errno(r.Errno); err != nil {
		return nil, fmt.Errorf("register session: %w", err)
	}
	ttl := time.Duration(r.TtlMs) * time.Millisecond
	if ttl <= 0 {
		ttl = DefaultSessionTTL
	}
	s := &Session{c: c, id: r.Session, ttl: ttl, done: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.loop()
	return s, nil
}

// ID is the session id.
func (s *Session) ID() uint64 { return s.id }

// TTL is how long the session lives without a heartbeat.
func (s *Session) TTL() time.Duration { return s.ttl }

// Expired reports whether a heartbeat was answered with ESTALE: the cluster
// has ended the session, and with it this client's locks and open files.
func (s *Session) Expired() bool { return s.expired.Load() }

func (s *Session) loop() {
	defer close(s.done)
	interval := s.ttl / 3
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		}
		// A heartbeat that takes longer than the TTL is pointless: the
		// session is gone by then or the next one will tell.
		ctx, cancel := context.WithTimeout(s.ctx, s.ttl)
		r, err := s.c.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: s.id})
		cancel()
		switch {
		case s.ctx.Err() != nil:
			return
		case err != nil:
			s.c.log.Warn("heartbeat failed", "session", s.id, "error", err)
		case r.Errno == int32(syscall.ESTALE):
			s.expired.Store(true)
			s.c.log.Error("session expired: its locks and open files are gone; the mount fails further changes with EIO", "session", s.id)
			return
		case r.Errno != 0:
			s.c.log.Warn("heartbeat refused", "session", s.id, "errno", syscall.Errno(r.Errno))
		}
	}
}

// Close stops the heartbeats and ends the session on the cluster, which
// releases its locks and open files. Later calls return the first result.
func (s *Session) Close(ctx context.Context) error {
	s.closeOnce.Do(func() {
		s.cancel()
		<-s.done
		if s.Expired() {
			return
		}
		r, err := s.c.CloseSession(ctx, &jfspb.CloseSessionRequest{})
		if err == nil {
			err = Errno(r.Errno)
		}
		if err != nil {
			s.closeErr = fmt.Errorf("close session %d: %w", s.id, err)
		}
	})
	return s.closeErr
}
