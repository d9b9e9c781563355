// Package client is the Go client of a jfs cluster. Given any list of node
// addresses it finds the leader, sends every request there and, when the
// connection drops or the leader changes, finds the new leader and retries.
// A mutating request keeps its (session, sequence) across retries, so the
// cluster applies it exactly once and the caller sees only a pause.
package client

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// ErrNoLeader is returned when no leader answered within Config.RetryFor.
// File-system callers turn it into EIO.
var ErrNoLeader = errors.New("client: no leader reachable")

// Config configures a Client.
type Config struct {
	// Servers are the API addresses (host:port) of some or all nodes.
	Servers []string
	// AttemptTimeout bounds one try at one node (default 2s). A blocking
	// lock request is not bounded by it. A node whose try timed out or
	// failed to connect is passed over for SuspectFor (default 2s), even
	// when another node names it as the leader: a frozen leader is still
	// named so until the others notice.
	AttemptTimeout time.Duration
	SuspectFor     time.Duration
	// RetryFor bounds how long a request keeps looking for a leader before
	// it fails with ErrNoLeader (default 30s). The time a blocking lock
	// request spends in its attempts (queued on a leader, however long) does
	// not count: only the search for a leader does, so a wait of any length
	// survives any number of leader changes.
	RetryFor time.Duration
	// MinBackoff and MaxBackoff bound the pause between rounds of tries
	// (defaults 20ms and 1s); the pause doubles each round.
	MinBackoff, MaxBackoff time.Duration
	Logger                 hclog.Logger
	// TLS, when set, connects with mutual TLS, presenting its certificate
	// and accepting only nodes of its CA; nil connects in plaintext.
	TLS *mtls.Source
	// Dial, when set, opens the connections to the nodes instead of the
	// default TCP dialer (tests use it to cut the client off from a node).
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// Cred is the identity requests act for when their context names none
	// (WithCred); default: the process's own (ProcessCred).
	Cred *jfspb.Cred
	// Coherent registers sessions as keeping coherent caches
	// (RegisterRequest.coherent; WatchCaches); see also SetCoherent.
	Coherent bool
}

// ParseServers splits a comma-separated list of host:port addresses.
func ParseServers(s string) ([]string, error) {
	var out []string
	for _, a := range strings.Split(s, ",") {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("server address %q: %w", a, err)
		}
		out = append(out, a)
	}
	if len(out) == 0 {
		return nil, errors.New("no server addresses given (want HOST:PORT[,HOST:PORT...])")
	}
	return out, nil
}

// Client talks to a jfs cluster. It is safe for concurrent use.
type Client struct {
	cfg Config
	log hclog.Logger

	mu      sync.Mutex
	servers []string             // known API addresses; the leader's is added when learned
	leader  string               // best guess, "" when unknown
	suspect map[string]time.Time // nodes passed over until then
	conns   map[string]*grpc.ClientConn
	closed  bool

	seqMu    sync.Mutex
	session  uint64
	nextSeq  uint64
	inflight map[uint64]struct{}
	// unacked: completed seqs whose results the server may still keep, each
	// with the seq of the request carrying its acknowledgement (0: none).
	unacked map[uint64]uint64
	lost    func(session uint64) // told when a write answers ESTALE

	merge *merger // identical reads in flight (merge.go)
	// coherent: SetCoherent was called (see Config.Coherent).
	coherent atomic.Bool
}

// New returns a client of the cluster at cfg.Servers. It does not dial until
// the first request.
func New(cfg Config) (*Client, error) {
	if len(cfg.Servers) == 0 {
		return nil, errors.New("client: no servers")
	}
	for _, a := range cfg.Servers {
		if _, _, err := net.SplitHostPort(a); err != nil {
			return nil, fmt.Errorf("client: server address %q: %w", a, err)
		}
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.AttemptTimeout, 2*time.Second)
	def(&cfg.SuspectFor, 2*time.Second)
	def(&cfg.RetryFor, 30*time.Second)
	def(&cfg.MinBackoff, 20*time.Millisecond)
	def(&cfg.MaxBackoff, time.Second)
	if cfg.Logger == nil {
		cfg.Logger = hclog.NewNullLogger()
	}
	if cfg.Cred == nil {
		cfg.Cred = ProcessCred()
	}
	return &Client{
		cfg: cfg, log: cfg.Logger.Named("client"),
		servers: slices.Clone(cfg.Servers), conns: map[string]*grpc.ClientConn{}, suspect: map[string]time.Time{},
		nextSeq: 1, inflight: map[uint64]struct{}{}, unacked: map[uint64]uint64{}, merge: newMerger(),
	}, nil
}

// Close closes every connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	var first error
	for a, cc := range c.conns {
		if err := cc.Close(); err != nil && first == nil {
			first = err
		}
		delete(c.conns, a)
	}
	return first
}

func (c *Client) conn(addr string) (*grpc.ClientConn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, errors.New("client: closed")
	}
	if cc := c.conns[addr]; cc != nil {
		return cc, nil
	}
	creds := insecure.NewCredentials()
	if c.cfg.TLS != nil {
		creds = credentials.NewTLS(c.cfg.TLS.ClientConfig())
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(16<<20), grpc.MaxCallSendMsgSize(16<<20)),
		// A frozen leader keeps its connections open; pings find out, so a
		// blocked lock request moves on to the new leader.
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 5 * time.Second, Timeout: 3 * time.Second}),
		// gRPC's own reconnect backoff grows to two minutes: after a long
		// outage a mount would wait that long to see a cluster that is
		// back, past its session's grace at the new leader. A second at
		// most, as the client's own retries.
		grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay: 100 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: time.Second}})}
	if c.cfg.Dial != nil {
		opts = append(opts, grpc.WithContextDialer(c.cfg.Dial))
	}
	cc, err := grpc.NewClient(addr, opts...)
	if err != nil {
		return nil, err
	}
	c.conns[addr] = cc
	return cc, nil
}

// target is the node to try next: the leader if known, else the servers in
// turn, passing over suspect ones while any other is left.
func (c *Client) target(round int) string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader != "" {
		return c.leader
	}
	now := time.Now()
	for i := range c.servers {
		a := c.servers[(round+i)%len(c.servers)]
		if !now.Before(c.suspect[a]) {
			return a
		}
	}
	return c.servers[round%len(c.servers)]
}

// suspectNode passes addr over for a while, and forgets it as the leader.
func (c *Client) suspectNode(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.suspect[addr] = time.Now().Add(c.cfg.SuspectFor)
	if c.leader == addr {
		c.leader = ""
	}
}

// suspected reports whether addr is passed over now.
func (c *Client) suspected(addr string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return time.Now().Before(c.suspect[addr])
}

func (c *Client) setLeader(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if addr != "" && !slices.Contains(c.servers, addr) {
		c.servers = append(c.servers, addr)
	}
	if c.leader != addr {
		c.log.Debug("leader", "addr", addr)
	}
	c.leader = addr
}

// forget drops addr as the leader guess.
func (c *Client) forget(addr string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.leader == addr {
		c.leader = ""
	}
}

// Leader is the current guess of the leader's API address ("" if unknown).
func (c *Client) Leader() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.leader
}

// retry calls try against the leader until it succeeds, fails with an error
// that is not about reaching the leader, ctx ends, or RetryFor passes.
// attemptTimeout 0 leaves an attempt bounded by ctx alone: such an attempt
// (a blocking lock request, queued on the leader) may legitimately last any
// time, so its duration is left out of the RetryFor window; an attempt that
// hangs on a frozen node is ended by the connection's keepalive.
//
// When a follower names as the leader a node this client could not reach
// (its attempt timed out or could not connect), the next attempt goes to
// that follower again and asks it to forward the request to the leader
// (cluster.ForwardKey). The follower reaches the leader over its own
// connection; the request keeps its (session, seq), so it is still applied
// exactly once. The leader is tried directly again once its suspicion
// lapses (SuspectFor).
//
// A call known to wait long on a healthy leader (a heartbeat, which is
// answered only once the record listing it is committed) passes patient:
// its timeout then makes the client forget the leader guess, but does not
// make it pass the node over (suspectNode), which would send all other
// traffic through a follower for SuspectFor.
func (c *Client) retry(ctx context.Context, attemptTimeout time.Duration, patient bool, try func(ctx context.Context, cc *grpc.ClientConn) error) error {
	start := time.Now() // of the window, moved on by unbounded attempts
	backoff := c.cfg.MinBackoff
	var last error
	via := "" // a follower to ask for forwarding on the next attempt
	for round := 0; ; round++ {
		if time.Since(start) > c.cfg.RetryFor {
			return fmt.Errorf("%w within %v: %v", ErrNoLeader, c.cfg.RetryFor, last)
		}
		addr, forward := c.target(round), via != ""
		if forward {
			addr, via = via, ""
		}
		cc, err := c.conn(addr)
		if err != nil {
			return err
		}
		actx, cancel := ctx, context.CancelFunc(func() {})
		if attemptTimeout > 0 {
			actx, cancel = context.WithTimeout(ctx, attemptTimeout)
		}
		if forward {
			actx = metadata.AppendToOutgoingContext(actx, forwardKey, "1")
		}
		began := time.Now()
		err = try(actx, cc)
		cancel()
		if attemptTimeout == 0 {
			start = start.Add(time.Since(began))
		}
		if err == nil {
			if !forward {
				c.setLeader(addr)
			}
			return nil
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		last = err
		st, _ := status.FromError(err)
		if askAgain(st) {
			// The leader waits on the request's behalf (for another
			// mount to return a lock delegation, or to drop its caches
			// of what the request changed): ask it again at once; the
			// wait is the leader's, not a failure to reach it.
			start = start.Add(time.Since(began))
			continue
		}
		switch st.Code() {
		case codes.Unavailable, codes.DeadlineExceeded, codes.Canceled:
		default:
			return err // the leader answered; not ours to retry
		}
		redirected := false
		for _, d := range st.Details() {
			nl, ok := d.(*jfspb.NotLeader)
			if !ok || nl.LeaderAddr == "" || nl.LeaderAddr == addr {
				continue
			}
			if !c.suspected(nl.LeaderAddr) {
				c.setLeader(nl.LeaderAddr)
				redirected = true
			} else if !forward {
				via = addr // the leader is out of our reach: ask this node to pass it on
			}
		}
		if redirected || via != "" {
			continue
		}
		if st.Code() == codes.DeadlineExceeded && patient {
			c.forget(addr)
		} else if st.Code() == codes.DeadlineExceeded || (st.Code() == codes.Unavailable && !isNotLeader(st)) {
			if !forward {
				c.suspectNode(addr) // timed out, or could not connect
			}
		} else {
			c.forget(addr)
		}
		// A full round over every server without success: pause.
		if (round+1)%len(c.servers) == 0 || c.Leader() == "" {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, c.cfg.MaxBackoff)
		}
	}
}

// forwardKey is cluster.ForwardKey; the client does not import the cluster.
const forwardKey = "jfs-forward-to-leader"

// askAgain reports whether st is the leader's "still waiting on your
// behalf; ask again": for a lock delegation's return (cluster/deleg.go) or
// for the coherent caches (jfspb.AskAgain, cluster/caches.go).
func askAgain(st *status.Status) bool {
	if st.Code() != codes.Unavailable {
		return false
	}
	for _, d := range st.Details() {
		switch d.(type) {
		case *jfspb.DelegRecall, *jfspb.AskAgain:
			return true
		}
	}
	return false
}

// isNotLeader reports whether st is a node's "not the leader" answer, as
// opposed to a failed connection.
func isNotLeader(st *status.Status) bool {
	for _, d := range st.Details() {
		if _, ok := d.(*jfspb.NotLeader); ok {
			return true
		}
	}
	return false
}

// ---- exactly-once headers ----

// Session is the session id, 0 before Register.
func (c *Client) Session() uint64 {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	return c.session
}

// maxAckedSeqs bounds the individual acknowledgements one header carries
// (the server refuses more than 1024).
const maxAckedSeqs = 64

// header numbers a new mutating request. Its acked is the highest seq below
// every request still in flight; the results of requests that completed
// above it (while, say, a blocked F_SETLKW holds acked back) are
// acknowledged one by one in acked_seqs, each until a request carrying it
// has been applied. done must be called once, when the result has arrived
// (answered true) or the caller gave up on it (answered false); applied
// tells that the result carried errno 0, so the acknowledgements it carried
// were certainly applied too (a request refused before the log, say for
// its size, carries them nowhere; sending one twice is harmless).
func (c *Client) header() (h *jfspb.Header, done func(answered, applied bool)) {
	c.seqMu.Lock()
	defer c.seqMu.Unlock()
	seq := c.nextSeq
	c.nextSeq++
	acked := seq - 1
	for s := range c.inflight {
		acked = min(acked, s-1)
	}
	c.inflight[seq] = struct{}{}
	var carried []uint64
	for s, by := range c.unacked {
		if s <= acked {
			delete(c.unacked, s) // covered by acked from now on
			continue
		}
		if by == 0 && len(carried) < maxAckedSeqs {
			c.unacked[s] = seq
			carried = append(carried, s)
		}
	}
	slices.Sort(carried)
	h = &jfspb.Header{Session: c.session, Seq: seq, Acked: acked, AckedSeqs: carried}
	return h, func(answered, applied bool) {
		c.seqMu.Lock()
		defer c.seqMu.Unlock()
		delete(c.inflight, seq)
		for _, s := range carried {
			if applied {
				// The server applied the request, and with it forgot s.
				delete(c.unacked, s)
			} else if c.unacked[s] == seq {
				c.unacked[s] = 0 // to be carried again
			}
		}
		if answered {
			c.unacked[seq] = 0
		}
	}
}

// SetCoherent makes the sessions registered from now on coherent, as
// Config.Coherent does.
func (c *Client) SetCoherent(on bool) { c.coherent.Store(on) }

// Register opens a session for this client; every later mutating request
// carries it. A retried registration returns the same session.
func (c *Client) Register(ctx context.Context, host, mountPoint string, pid uint32, version string) (*jfspb.RegisterResponse, error) {
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, err
	}
	req := &jfspb.RegisterRequest{Host: host, MountPoint: mountPoint, Pid: pid, Version: version, ClientId: hex.EncodeToString(id[:]), Coherent: c.cfg.Coherent || c.coherent.Load()}
	resp, err := write(ctx, c, jfspb.MetaClient.Register, req, func(r *jfspb.RegisterRequest, h *jfspb.Header) { r.Header = h })
	if err != nil {
		return nil, err
	}
	if resp.Errno == 0 {
		c.seqMu.Lock()
		c.session = resp.Session
		c.seqMu.Unlock()
	}
	return resp, nil
}

// onSessionLost installs fn, called with the session id of every mutating
// request the cluster answered ESTALE: that session no longer exists.
func (c *Client) onSessionLost(fn func(session uint64)) {
	c.seqMu.Lock()
	c.lost = fn
	c.seqMu.Unlock()
}

// errnoer is every response: each carries an errno.
type errnoer interface{ GetErrno() int32 }

// noteStale reports an ESTALE answer to a request of session sid.
func (c *Client) noteStale(sid uint64, resp any) {
	r, ok := resp.(errnoer)
	if !ok || sid == 0 || r.GetErrno() != int32(syscall.ESTALE) {
		return
	}
	c.seqMu.Lock()
	fn := c.lost
	c.seqMu.Unlock()
	if fn != nil {
		fn(sid)
	}
}

// ---- generic calls ----

type method[Req, Resp any] func(jfspb.MetaClient, context.Context, Req, ...grpc.CallOption) (Resp, error)

// read sends a request that changes nothing.
func read[Req, Resp any](ctx context.Context, c *Client, m method[Req, Resp], req Req) (Resp, error) {
	var resp Resp
	err := c.retry(ctx, c.cfg.AttemptTimeout, false, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = m(jfspb.NewMetaClient(cc), ctx, req)
		return err
	})
	return resp, err
}

// write sends a mutating request under a new (session, seq) kept across
// retries.
func write[Req, Resp any](ctx context.Context, c *Client, m method[Req, Resp], req Req, setHeader func(Req, *jfspb.Header)) (Resp, error) {
	return writeWithin(ctx, c, c.cfg.AttemptTimeout, m, req, setHeader)
}

// writeWithin is write with an explicit bound on one attempt; 0 leaves it to
// ctx and the connection (a blocking lock request waits as long as it must,
// and a retry would lose its place in the queue).
func writeWithin[Req, Resp any](ctx context.Context, c *Client, attempt time.Duration, m method[Req, Resp], req Req, setHeader func(Req, *jfspb.Header)) (Resp, error) {
	return writeAs(ctx, c, 0, attempt, m, req, setHeader)
}

// writeAs is writeWithin under session instead of the client's current one
// (0: the current one). A request that ends something opened under an
// earlier session must name that session: sent under the current one it
// would end what that one opened. The cluster answers ESTALE for a session
// it has ended.
func writeAs[Req, Resp any](ctx context.Context, c *Client, session uint64, attempt time.Duration, m method[Req, Resp], req Req, setHeader func(Req, *jfspb.Header)) (Resp, error) {
	h, done := c.header()
	if session != 0 && session != h.Session {
		h.Session = session
	}
	h.Cred = c.cred(ctx)
	setHeader(req, h)
	var resp Resp
	err := c.retry(ctx, attempt, false, func(ctx context.Context, cc *grpc.ClientConn) error {
		var err error
		resp, err = m(jfspb.NewMetaClient(cc), ctx, req)
		return err
	})
	applied := false
	if r, ok := any(resp).(errnoer); ok && err == nil {
		applied = r.GetErrno() == 0
	}
	done(err == nil, applied)
	if err == nil {
		c.noteStale(h.Session, resp)
	}
	return resp, err
}

// Admin calls fn with the Admin service of the leader, retrying as other
// requests do.
func (c *Client) Admin(ctx context.Context, fn func(ctx context.Context, a jfspb.AdminClient) error) error {
	return c.retry(ctx, c.cfg.AttemptTimeout, false, func(ctx context.Context, cc *grpc.ClientConn) error {
		return fn(ctx, jfspb.NewAdminClient(cc))
	})
}

// AdminStream is Admin for a call whose length has no bound (a streaming
// backup or restore): an attempt is bounded by ctx alone.
func (c *Client) AdminStream(ctx context.Context, fn func(ctx context.Context, a jfspb.AdminClient) error) error {
	return c.retry(ctx, 0, false, func(ctx context.Context, cc *grpc.ClientConn) error {
		return fn(ctx, jfspb.NewAdminClient(cc))
	})
}

// AdminAt calls fn with the Admin service of the node at addr, once.
func (c *Client) AdminAt(ctx context.Context, addr string, fn func(ctx context.Context, a jfspb.AdminClient) error) error {
	cc, err := c.conn(addr)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
	defer cancel()
	return fn(ctx, jfspb.NewAdminClient(cc))
}

// Servers returns the addresses the client knows.
func (c *Client) Servers() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return slices.Clone(c.servers)
}

// Errno turns a response's errno field into an error: nil for 0, else a
// syscall.Errno.
func Errno(e int32) error {
	if e == 0 {
		return nil
	}
	if e < 0 || e > math.MaxUint16 {
		return syscall.EIO
	}
	return syscall.Errno(e)
}
