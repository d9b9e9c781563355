package cluster_test

import (
	"cmp"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/anishathalye/porcupine"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
)

// Linearizability of the metadata API, checked with porcupine.
//
// Concurrent clients write (setattr of two inodes, an exchange of their two
// names, create and unlink of a third name) and read (getattr, lookup) the
// same few inodes through the cluster's services while leadership moves
// every few hundred milliseconds. Each client finds the leader itself and
// retries a request that failed for want of a leader, with the same header
// for writes. Every history must be linearizable, and the same harness
// pointed at the unsafe single-flight read path must find a history that is
// not.

const (
	linAttempt = time.Second     // one attempt of a request
	linBound   = 5 * time.Second // after this a request is given up: pending
	linCheck   = 10 * time.Second
)

// TestLinearizableReads: with batched reads (the default) and with one
// leadership check per read, under the read lease (the default) and with a
// round of confirmations per check, while leadership is handed on or the
// leader is cut off from the others, every history checks out.
func TestLinearizableReads(t *testing.T) {
	for _, tc := range []struct {
		name string
		run  linRun
	}{
		{"batched", linRun{mode: cluster.ReadBatched, lease: true}},
		{"each", linRun{mode: cluster.ReadEach, lease: true}},
		{"batched-no-lease", linRun{mode: cluster.ReadBatched}},
		{"batched-isolate", linRun{mode: cluster.ReadBatched, lease: true, isolate: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seed := uint64(time.Now().UnixNano())
			h := runHistory(t, tc.run, 2500*time.Millisecond, seed)
			start := time.Now()
			res := porcupine.CheckOperationsTimeout(h.model, h.ops, linCheck)
			t.Logf("%s; check: %v in %v", h.summary(), res, time.Since(start).Round(time.Millisecond))
			switch res {
			case porcupine.Ok:
			case porcupine.Illegal:
				h.explain(t)
				t.Errorf("history of %d operations is not linearizable (seed %d)", len(h.ops), seed)
			default:
				t.Errorf("linearizability check of %d operations did not finish within %v (seed %d)", len(h.ops), linCheck, seed)
			}
		})
	}
}

// TestSingleFlightIsCaught: a read path that lets a read join an identical
// read that started before it was sent serves stale attributes, and the
// harness of TestLinearizableReads sees it. One short history usually
// shows it; up to three are tried.
func TestSingleFlightIsCaught(t *testing.T) {
	for try := 1; try <= 3; try++ {
		seed := uint64(time.Now().UnixNano())
		h := runHistory(t, linRun{mode: cluster.ReadSingleFlightUnsafe}, 1500*time.Millisecond, seed)
		start := time.Now()
		res := porcupine.CheckOperationsTimeout(h.model, h.ops, linCheck)
		t.Logf("try %d: %s; check: %v in %v", try, h.summary(), res, time.Since(start).Round(time.Millisecond))
		if t.Failed() {
			return
		}
		if res == porcupine.Illegal {
			if w := h.staleWitness(); w != "" {
				t.Logf("caught on try %d: %s", try, w)
			} else {
				t.Logf("caught on try %d", try)
			}
			return
		}
	}
	t.Fatal("three histories of the single-flight read path all checked out: the harness does not catch stale reads")
}

// TestLinearizableModel: the model refuses what it must refuse and allows
// both outcomes of a write that was never answered.
func TestLinearizableModel(t *testing.T) {
	const ia, ib, ix = 2, 3, 9
	m := linModel(ia, ib, linState{na: ia, nb: ib, mtA: 1, mtB: 2})
	op := func(client int, call, ret int64, in linIn, out linOut) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: in, Call: call, Output: out, Return: ret}
	}
	never := int64(math.MaxInt64)
	for _, tc := range []struct {
		name string
		ops  []porcupine.Operation
		want porcupine.CheckResult
	}{
		{"stale getattr", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linSetAttr, ino: ia, mtime: 5}, linOut{}),
			op(1, 20, 30, linIn{kind: linGetAttr, ino: ia}, linOut{mtime: 1}),
		}, porcupine.Illegal},
		{"concurrent getattr", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linSetAttr, ino: ia, mtime: 5}, linOut{}),
			op(1, 5, 30, linIn{kind: linGetAttr, ino: ia}, linOut{mtime: 1}),
			op(2, 5, 30, linIn{kind: linGetAttr, ino: ib}, linOut{mtime: 2}),
		}, porcupine.Ok},
		{"lookup misses an exchange", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linExchange}, linOut{}),
			op(1, 20, 30, linIn{kind: linLookup, name: "a"}, linOut{ino: ia}),
		}, porcupine.Illegal},
		{"lookup misses a create", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linCreate}, linOut{ino: ix}),
			op(1, 20, 30, linIn{kind: linLookup, name: "x"}, linOut{errno: syscall.ENOENT}),
		}, porcupine.Illegal},
		{"create over x", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linCreate}, linOut{ino: ix}),
			op(1, 20, 30, linIn{kind: linCreate}, linOut{ino: ix + 1}),
		}, porcupine.Illegal},
		{"unlink of a missing x", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linUnlink}, linOut{ino: ix}),
		}, porcupine.Illegal},
		{"racing creates", []porcupine.Operation{
			op(0, 0, 10, linIn{kind: linCreate}, linOut{errno: syscall.EEXIST}),
			op(1, 0, 10, linIn{kind: linCreate}, linOut{ino: ix}),
			op(2, 20, 30, linIn{kind: linUnlink}, linOut{ino: ix}),
			op(0, 40, 50, linIn{kind: linUnlink}, linOut{errno: syscall.ENOENT}),
		}, porcupine.Ok},
		{"unanswered create that happened", []porcupine.Operation{
			op(0, 0, never, linIn{kind: linCreate}, linOut{pending: true}),
			op(1, 20, 30, linIn{kind: linLookup, name: "x"}, linOut{ino: ix}),
			op(1, 40, 50, linIn{kind: linLookup, name: "x"}, linOut{ino: ix}),
			op(2, 60, 70, linIn{kind: linUnlink}, linOut{ino: ix}),
		}, porcupine.Ok},
		{"unanswered create that did not happen", []porcupine.Operation{
			op(0, 0, never, linIn{kind: linCreate}, linOut{pending: true}),
			op(1, 20, 30, linIn{kind: linLookup, name: "x"}, linOut{errno: syscall.ENOENT}),
		}, porcupine.Ok},
		{"unanswered create seen as two inodes", []porcupine.Operation{
			op(0, 0, never, linIn{kind: linCreate}, linOut{pending: true}),
			op(1, 20, 30, linIn{kind: linLookup, name: "x"}, linOut{ino: ix}),
			op(1, 40, 50, linIn{kind: linLookup, name: "x"}, linOut{ino: ix + 1}),
		}, porcupine.Illegal},
		{"unanswered setattr", []porcupine.Operation{
			op(0, 0, never, linIn{kind: linSetAttr, ino: ib, mtime: 7}, linOut{pending: true}),
			op(1, 20, 30, linIn{kind: linGetAttr, ino: ib}, linOut{mtime: 2}),
			op(1, 40, 50, linIn{kind: linGetAttr, ino: ib}, linOut{mtime: 7}),
		}, porcupine.Ok},
		{"unanswered setattr undone", []porcupine.Operation{
			op(0, 0, never, linIn{kind: linSetAttr, ino: ib, mtime: 7}, linOut{pending: true}),
			op(1, 20, 30, linIn{kind: linGetAttr, ino: ib}, linOut{mtime: 7}),
			op(1, 40, 50, linIn{kind: linGetAttr, ino: ib}, linOut{mtime: 2}),
		}, porcupine.Illegal},
	} {
		if got := porcupine.CheckOperationsTimeout(m, tc.ops, time.Second); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

// ---- the history ----

type linKind uint8

const (
	linSetAttr linKind = iota
	linGetAttr
	linExchange
	linCreate
	linUnlink
	linLookup
)

// linIn is an operation's input.
type linIn struct {
	kind  linKind
	ino   uint64 // setattr, getattr
	mtime int64  // setattr
	name  string // lookup
}

// linOut is an operation's output. A pending write (never answered within
// linBound) may or may not have taken effect.
type linOut struct {
	pending bool
	errno   syscall.Errno
	ino     uint64 // create, unlink, lookup
	mtime   int64  // getattr
}

// linState is what the operations see: the inodes the names a, b and x
// map to (0: absent; linUnknownIno: present, made by a create whose answer
// was lost) and the mtimes of the inodes a and b started with.
type linState struct {
	na, nb, nx uint64
	mtA, mtB   int64
}

const linUnknownIno = math.MaxUint64

// linModel is the sequential specification. setattr and getattr of one
// inode touch only its mtime, and the name operations only the names, so
// the history splits into three independent parts.
func linModel(ia, ib uint64, init linState) porcupine.Model {
	part := func(in linIn) int {
		switch {
		case in.kind != linSetAttr && in.kind != linGetAttr:
			return 2
		case in.ino == ia:
			return 0
		default:
			return 1
		}
	}
	inoName := func(ino uint64) string {
		switch ino {
		case ia:
			return fmt.Sprintf("%d(a)", ino)
		case ib:
			return fmt.Sprintf("%d(b)", ino)
		case linUnknownIno:
			return "?"
		}
		return fmt.Sprint(ino)
	}
	return porcupine.Model{
		Partition: func(history []porcupine.Operation) [][]porcupine.Operation {
			parts := make([][]porcupine.Operation, 3)
			for _, op := range history {
				p := part(op.Input.(linIn))
				parts[p] = append(parts[p], op)
			}
			return slices.DeleteFunc(parts, func(p []porcupine.Operation) bool { return len(p) == 0 })
		},
		Init: func() any { return init },
		Step: func(state, input, output any) (bool, any) {
			s, in, out := state.(linState), input.(linIn), output.(linOut)
			switch in.kind {
			case linSetAttr:
				// Pending or not, it sets the mtime when it takes effect.
				if in.ino == ia {
					s.mtA = in.mtime
				} else {
					s.mtB = in.mtime
				}
				return true, s
			case linGetAttr:
				want := s.mtA
				if in.ino == ib {
					want = s.mtB
				}
				return out.mtime == want, s
			case linExchange:
				s.na, s.nb = s.nb, s.na
				return true, s
			case linCreate:
				switch {
				case out.pending:
					// Created an inode we do not know, or found x.
					if s.nx == 0 {
						s.nx = linUnknownIno
					}
					return true, s
				case out.errno == syscall.EEXIST:
					return s.nx != 0, s
				default:
					if s.nx != 0 {
						return false, s
					}
					s.nx = out.ino
					return true, s
				}
			case linUnlink:
				switch {
				case out.pending:
					s.nx = 0
					return true, s
				case out.errno == syscall.ENOENT:
					return s.nx == 0, s
				default:
					if s.nx == 0 || (s.nx != linUnknownIno && s.nx != out.ino) {
						return false, s
					}
					s.nx = 0
					return true, s
				}
			case linLookup:
				want := s.nx
				switch in.name {
				case "a":
					want = s.na
				case "b":
					want = s.nb
				}
				switch {
				case want == 0:
					return out.errno == syscall.ENOENT, s
				case out.errno != 0:
					return false, s
				case want == linUnknownIno:
					// Now we know which inode the lost create made.
					s.nx = out.ino
					return true, s
				default:
					return out.ino == want, s
				}
			}
			return false, s
		},
		Hash: func(state any) uint64 {
			s := state.(linState)
			return s.na*31 ^ s.nb*131 ^ s.nx*1031 ^ uint64(s.mtA)*10007 ^ uint64(s.mtB)*100003
		},
		DescribeOperation: func(input, output any) string {
			in, out := input.(linIn), output.(linOut)
			var call string
			switch in.kind {
			case linSetAttr:
				call = fmt.Sprintf("setattr(ino %s, mtime %d)", inoName(in.ino), in.mtime)
			case linGetAttr:
				call = fmt.Sprintf("getattr(ino %s)", inoName(in.ino))
			case linExchange:
				call = "rename(a, b, EXCHANGE)"
			case linCreate:
				call = "create(x, O_EXCL)"
			case linUnlink:
				call = "unlink(x)"
			case linLookup:
				call = fmt.Sprintf("lookup(%s)", in.name)
			}
			switch {
			case out.pending:
				return call + " -> (no answer)"
			case out.errno != 0:
				return fmt.Sprintf("%s -> %v", call, out.errno)
			case in.kind == linGetAttr:
				return fmt.Sprintf("%s -> mtime %d", call, out.mtime)
			case in.kind == linCreate || in.kind == linUnlink || in.kind == linLookup:
				return fmt.Sprintf("%s -> ino %s", call, inoName(out.ino))
			}
			return call + " -> ok"
		},
		DescribeState: func(state any) string {
			s := state.(linState)
			name := func(ino uint64) string {
				if ino == 0 {
					return "-"
				}
				return inoName(ino)
			}
			return fmt.Sprintf("a=%s b=%s x=%s mtime[%d]=%d mtime[%d]=%d",
				name(s.na), name(s.nb), name(s.nx), ia, s.mtA, ib, s.mtB)
		},
	}
}

// ---- clients ----

// linHarness is one run: a cluster, its services and the clock of the
// history.
type linHarness struct {
	t    *testing.T
	c    *clustertest.Cluster
	ids  []string
	srvs []*cluster.Server
	t0   time.Time
	regs []*prometheus.Registry

	retries atomic.Int64 // attempts that found no leader
}

func (h *linHarness) now() int64 { return time.Since(h.t0).Nanoseconds() }

// linClient is one process: it remembers which node it believes leads.
type linClient struct {
	h   *linHarness
	id  int // porcupine client id
	cur int // index of the node it sends to
	rnd *rand.Rand
}

type linOutcome int

const (
	linDone    linOutcome = iota
	linPending            // no leader answered within linBound
	linBroken             // an error that is not about leadership: the test fails
)

// linCall sends one request until a leader answers it. f is called again
// with the same request on every attempt, so a write keeps its header and
// is applied at most once.
func linCall[R any](cl *linClient, what string, f func(context.Context, *cluster.Server) (R, error)) (R, linOutcome) {
	start := time.Now()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), linAttempt)
		r, err := f(ctx, cl.h.srvs[cl.cur])
		cancel()
		if err == nil {
			return r, linDone
		}
		switch status.Code(err) {
		case codes.Unavailable, codes.DeadlineExceeded:
		default:
			cl.h.t.Errorf("client %d: %s on %s: %v", cl.id, what, cl.h.ids[cl.cur], err)
			return r, linBroken
		}
		cl.h.retries.Add(1)
		if time.Since(start) > linBound {
			return r, linPending
		}
		cl.redirect(err)
	}
}

// redirect follows a NotLeader hint, or else tries the next node.
func (cl *linClient) redirect(err error) {
	if st, ok := status.FromError(err); ok {
		for _, d := range st.Details() {
			nl, ok := d.(*jfspb.NotLeader)
			if !ok || nl.LeaderId == "" {
				continue
			}
			if i := slices.Index(cl.h.ids, nl.LeaderId); i >= 0 {
				if i == cl.cur {
					// It leads but is not ready yet.
					time.Sleep(2 * time.Millisecond)
				}
				cl.cur = i
				return
			}
		}
	}
	cl.cur = (cl.cur + 1) % len(cl.h.ids)
	time.Sleep(5 * time.Millisecond)
}

// linWriter is a client with its own session.
type linWriter struct {
	*linClient
	session uint64
	seq     uint64
}

func (w *linWriter) header() *jfspb.Header {
	w.seq++
	return &jfspb.Header{Session: w.session, Seq: w.seq, Acked: w.seq - 1, Cred: &jfspb.Cred{}}
}

func (h *linHarness) newClient(id int, seed uint64) *linClient {
	rnd := rand.New(rand.NewPCG(seed, uint64(id)))
	return &linClient{h: h, id: id, cur: rnd.IntN(len(h.ids)), rnd: rnd}
}

func (h *linHarness) newWriter(id int, seed uint64) *linWriter {
	h.t.Helper()
	cl := h.newClient(id, seed)
	clientID := fmt.Sprintf("%s-w%d-%d", h.t.Name(), id, seed)
	r, out := linCall(cl, "register", func(ctx context.Context, s *cluster.Server) (*jfspb.RegisterResponse, error) {
		return s.Register(ctx, &jfspb.RegisterRequest{Host: "lin", MountPoint: "/lin", ClientId: clientID})
	})
	if out != linDone || r.Errno != 0 {
		h.t.Fatalf("register writer %d: outcome %d, %v", id, out, r)
	}
	return &linWriter{linClient: cl, session: r.Session}
}

// ---- the run ----

// linHistory is a finished run.
type linHistory struct {
	mode       cluster.ReadMode
	seed       uint64
	ia, ib     uint64
	init       linState
	model      porcupine.Model
	ops        []porcupine.Operation
	reads      int // answered reads in the history
	dropped    int // reads never answered (left out: they tell nothing)
	writes     int
	pending    int // writes never answered
	errnos     map[string]int
	retries    int64
	transfers  int
	isolations int
	served     float64 // read attempts that reached a node's read path
	fsmReads   float64 // state-machine reads the leaders did for them
	// Read checks answered under the lease, and after a round.
	leaseChecks, roundChecks float64
	took                     time.Duration
}

func (h *linHistory) summary() string {
	var e []string
	for k, v := range h.errnos {
		e = append(e, fmt.Sprintf("%s=%d", k, v))
	}
	slices.Sort(e)
	return fmt.Sprintf("%s, seed %d: %d operations in %v: %d reads answered (%.0f attempts reached a read path, %.0f state-machine reads), %d unanswered; %d writes, %d pending, errnos [%s]; %d leadership transfers, %d isolations, %d retried attempts; read checks: %.0f under lease, %.0f after a round",
		linModeName(h.mode), h.seed, len(h.ops), h.took.Round(time.Millisecond), h.reads, h.served, h.fsmReads, h.dropped,
		h.writes, h.pending, strings.Join(e, " "), h.transfers, h.isolations, h.retries, h.leaseChecks, h.roundChecks)
}

func linModeName(m cluster.ReadMode) string {
	switch m {
	case cluster.ReadBatched:
		return "ReadBatched"
	case cluster.ReadEach:
		return "ReadEach"
	case cluster.ReadSingleFlightUnsafe:
		return "ReadSingleFlightUnsafe"
	}
	return fmt.Sprintf("ReadMode(%d)", int(m))
}

// linRun says how a history is run.
type linRun struct {
	mode  cluster.ReadMode
	lease bool // read leases on
	// isolate: the mover alternates between handing leadership on and
	// cutting the leader off from the others for 1.2-1.6s, which is longer
	// than a follower waits before it starts an election.
	isolate bool
}

// runHistory starts a three-node cluster with read mode run.mode, creates
// the files a and b, and runs for dur: one writer setting mtimes, two
// writers exchanging a and b, creating and unlinking x (and setting mtimes),
// eight readers getting attributes (six of a's inode only), two looking up
// a, b and x, and a mover that hands leadership on every 300-500ms.
func runHistory(t *testing.T, run linRun, dur time.Duration, seed uint64) *linHistory {
	t.Helper()
	mode := run.mode
	t.Logf("seed %d, read mode %s, lease %v, isolate %v", seed, linModeName(mode), run.lease, run.isolate)
	c := clustertest.NewCluster(t, 3, func(cfg *cluster.Config) { cfg.ReadMode, cfg.ReadLease = mode, run.lease })
	c.Leader()
	h := &linHarness{t: t, c: c, ids: c.IDs(), t0: time.Now()}
	for _, id := range h.ids {
		n := c.Node(id)
		h.srvs = append(h.srvs, cluster.NewServer(n))
		reg := prometheus.NewRegistry()
		cluster.NewMetrics(n, reg)
		h.regs = append(h.regs, reg)
	}

	// Setup: a and b, with known mtimes.
	setup := h.newWriter(99, seed)
	create := func(name string) uint64 {
		hd := setup.header()
		r, out := linCall(setup.linClient, "create "+name, func(ctx context.Context, s *cluster.Server) (*jfspb.CreateResponse, error) {
			return s.Create(ctx, &jfspb.CreateRequest{Header: hd, Parent: 1, Name: []byte(name), Mode: 0o644,
				Flags: uint32(syscall.O_CREAT | syscall.O_EXCL | syscall.O_RDWR), Fh: hd.Seq})
		})
		if out != linDone || r.Errno != 0 {
			t.Fatalf("setup: create %s: outcome %d, %v", name, out, r)
		}
		return r.Attr.Ino
	}
	ia, ib := create("a"), create("b")
	for ino, mt := range map[uint64]int64{ia: 1, ib: 2} {
		hd := setup.header()
		r, out := linCall(setup.linClient, "setattr", func(ctx context.Context, s *cluster.Server) (*jfspb.SetAttrResponse, error) {
			return s.SetAttr(ctx, &jfspb.SetAttrRequest{Header: hd, Ino: ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MTIME), MtimeNs: mt})
		})
		if out != linDone || r.Errno != 0 {
			t.Fatalf("setup: setattr %d: outcome %d, %v", ino, out, r)
		}
	}
	init := linState{na: ia, nb: ib, mtA: 1, mtB: 2}
	res := &linHistory{mode: mode, seed: seed, ia: ia, ib: ib, init: init, model: linModel(ia, ib, init), errnos: map[string]int{}}

	var (
		mu        sync.Mutex
		wg        sync.WaitGroup
		nextMtime atomic.Int64
		nextFh    atomic.Uint64
	)
	nextMtime.Store(1000)
	nextFh.Store(1000)
	record := func(ops []porcupine.Operation, reads, dropped, writes, pending int, errnos map[string]int) {
		mu.Lock()
		defer mu.Unlock()
		res.ops = append(res.ops, ops...)
		res.reads += reads
		res.dropped += dropped
		res.writes += writes
		res.pending += pending
		for k, v := range errnos {
			res.errnos[k] += v
		}
	}

	// Writers go first so that their sessions exist before the clock runs.
	var writers []*linWriter
	for i := range 3 {
		writers = append(writers, h.newWriter(i, seed))
	}
	h.t0 = time.Now()
	deadline := h.t0.Add(dur)
	stop := make(chan struct{})

	for i, w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ops []porcupine.Operation
			nwrites, npending := 0, 0
			errnos := map[string]int{}
			defer func() { record(ops, 0, 0, nwrites, npending, errnos) }()
			for time.Now().Before(deadline) {
				kind := linSetAttr
				if i > 0 {
					// x is created and unlinked by both, so their
					// attempts race: EEXIST and ENOENT happen.
					kind = []linKind{linSetAttr, linExchange, linExchange, linCreate, linCreate, linUnlink, linUnlink}[w.rnd.IntN(7)]
				}
				in := linIn{kind: kind}
				hd := w.header()
				call := h.now()
				var (
					out     linOut
					outcome linOutcome
					errno   int32
				)
				switch kind {
				case linSetAttr:
					in.ino = ia
					if w.rnd.IntN(4) == 0 {
						in.ino = ib
					}
					in.mtime = nextMtime.Add(1)
					var r *jfspb.SetAttrResponse
					r, outcome = linCall(w.linClient, "setattr", func(ctx context.Context, s *cluster.Server) (*jfspb.SetAttrResponse, error) {
						return s.SetAttr(ctx, &jfspb.SetAttrRequest{Header: hd, Ino: in.ino,
							Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MTIME), MtimeNs: in.mtime})
					})
					if outcome == linDone {
						errno = r.Errno
					}
				case linExchange:
					var r *jfspb.RenameResponse
					r, outcome = linCall(w.linClient, "rename exchange", func(ctx context.Context, s *cluster.Server) (*jfspb.RenameResponse, error) {
						return s.Rename(ctx, &jfspb.RenameRequest{Header: hd, Parent: 1, Name: []byte("a"),
							NewParent: 1, NewName: []byte("b"), Flags: 2 /* RENAME_EXCHANGE */})
					})
					if outcome == linDone {
						errno = r.Errno
					}
				case linCreate:
					fh := nextFh.Add(1)
					var r *jfspb.CreateResponse
					r, outcome = linCall(w.linClient, "create x", func(ctx context.Context, s *cluster.Server) (*jfspb.CreateResponse, error) {
						return s.Create(ctx, &jfspb.CreateRequest{Header: hd, Parent: 1, Name: []byte("x"), Mode: 0o644,
							Flags: uint32(syscall.O_CREAT | syscall.O_EXCL | syscall.O_RDWR), Fh: fh})
					})
					if outcome == linDone {
						errno = r.Errno
						if errno == 0 {
							out.ino = r.Attr.GetIno()
						}
					}
				case linUnlink:
					var r *jfspb.UnlinkResponse
					r, outcome = linCall(w.linClient, "unlink x", func(ctx context.Context, s *cluster.Server) (*jfspb.UnlinkResponse, error) {
						return s.Unlink(ctx, &jfspb.UnlinkRequest{Header: hd, Parent: 1, Name: []byte("x")})
					})
					if outcome == linDone {
						errno = r.Errno
						if errno == 0 {
							out.ino = r.Attr.GetIno()
						}
					}
				}
				ret := h.now()
				switch outcome {
				case linBroken:
					return
				case linPending:
					// It may take effect at any time from now on, or
					// never; the writer stops, as a client would.
					out.pending = true
					ops = append(ops, porcupine.Operation{ClientId: w.id, Input: in, Call: call, Output: out, Return: math.MaxInt64})
					npending++
					return
				}
				out.errno = syscall.Errno(errno)
				switch {
				case errno == 0:
				case kind == linCreate && out.errno == syscall.EEXIST, kind == linUnlink && out.errno == syscall.ENOENT:
					errnos[out.errno.Error()]++
				default:
					t.Errorf("writer %d: %v answered errno %v", w.id, in.kind, out.errno)
					return
				}
				nwrites++
				ops = append(ops, porcupine.Operation{ClientId: w.id, Input: in, Call: call, Output: out, Return: ret})
			}
		}()
	}

	// Readers: ids 3-10 getattr, 11-12 lookup. Each stops after
	// maxReadsPerReader answers too, so that the history stays small enough
	// to check in time however fast the reads are, and starts at most one
	// read per pace, so that its reads span the run and meet the leader
	// changes (reads under a lease are fast enough to reach the bound in
	// the first few hundred milliseconds).
	const maxReadsPerReader = 2500
	pace := dur / maxReadsPerReader
	for i := range 10 {
		cl := h.newClient(3+i, seed)
		wg.Add(1)
		go func() {
			defer wg.Done()
			var ops []porcupine.Operation
			nreads, ndropped := 0, 0
			defer func() { record(ops, nreads, ndropped, 0, 0, nil) }()
			tick := time.NewTicker(pace)
			defer tick.Stop()
			for time.Now().Before(deadline) && nreads < maxReadsPerReader {
				<-tick.C
				var in linIn
				var out linOut
				call := h.now()
				if i < 8 {
					in = linIn{kind: linGetAttr, ino: ia}
					if i >= 6 && cl.rnd.IntN(2) == 0 {
						in.ino = ib
					}
					r, outcome := linCall(cl, "getattr", func(ctx context.Context, s *cluster.Server) (*jfspb.GetAttrResponse, error) {
						return s.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: in.ino})
					})
					switch outcome {
					case linBroken:
						return
					case linPending:
						ndropped++
						continue
					}
					if r.Errno != 0 {
						t.Errorf("reader %d: getattr %d: errno %v", cl.id, in.ino, syscall.Errno(r.Errno))
						return
					}
					out.mtime = r.Attr.GetMtimeNs()
				} else {
					in = linIn{kind: linLookup, name: []string{"a", "b", "x"}[cl.rnd.IntN(3)]}
					r, outcome := linCall(cl, "lookup", func(ctx context.Context, s *cluster.Server) (*jfspb.LookupResponse, error) {
						return s.Lookup(ctx, &jfspb.LookupRequest{Parent: 1, Name: []byte(in.name), Cred: &jfspb.Cred{}})
					})
					switch outcome {
					case linBroken:
						return
					case linPending:
						ndropped++
						continue
					}
					out.errno = syscall.Errno(r.Errno)
					if out.errno != 0 && out.errno != syscall.ENOENT {
						t.Errorf("reader %d: lookup %s: errno %v", cl.id, in.name, out.errno)
						return
					}
					out.ino = r.Attr.GetIno()
				}
				ret := h.now()
				nreads++
				ops = append(ops, porcupine.Operation{ClientId: cl.id, Input: in, Call: call, Output: out, Return: ret})
			}
		}()
	}

	// The mover hands leadership on.
	moverDone := make(chan struct{})
	go func() {
		defer close(moverDone)
		rnd := rand.New(rand.NewPCG(seed, 1000))
		for turn := 0; ; turn++ {
			select {
			case <-stop:
				return
			case <-time.After(time.Duration(300+rnd.IntN(200)) * time.Millisecond):
			}
			for _, id := range h.ids {
				n := c.Node(id)
				if n == nil || !n.IsLeader() {
					continue
				}
				if run.isolate && turn%2 == 1 {
					c.Partition(id)
					select {
					case <-stop:
					case <-time.After(time.Duration(1200+rnd.IntN(400)) * time.Millisecond):
					}
					c.Heal()
					res.isolations++
					break
				}
				if err := n.TransferLeadership("", "").Error(); err != nil {
					t.Logf("leadership transfer from %s: %v", id, err)
				} else {
					res.transfers++
				}
				break
			}
		}
	}()

	wg.Wait()
	close(stop)
	<-moverDone
	res.took = time.Since(h.t0)
	res.retries = h.retries.Load()
	defer c.Close() // the history is all we need; a later run gets the cores
	for _, reg := range h.regs {
		mfs, err := reg.Gather()
		if err != nil {
			t.Fatalf("gather metrics: %v", err)
		}
		for _, mf := range mfs {
			for _, m := range mf.GetMetric() {
				switch mf.GetName() {
				case "jfsd_reads_total":
					res.served += m.GetCounter().GetValue()
				case "jfsd_fsm_reads_total":
					res.fsmReads += m.GetCounter().GetValue()
				case "jfsd_read_lease_total":
					if m.GetLabel()[0].GetValue() == "lease" {
						res.leaseChecks += m.GetCounter().GetValue()
					} else {
						res.roundChecks += m.GetCounter().GetValue()
					}
				}
			}
		}
	}
	return res
}

// ---- explaining a failure ----

// explain logs why a history is not linearizable: a stale read if there is
// a plain one, the smallest failing part's longest linearizable prefix and
// the operations that could not follow it, and a visualization file.
func (h *linHistory) explain(t *testing.T) {
	t.Helper()
	if w := h.staleWitness(); w != "" {
		t.Logf("stale read: %s", w)
	}
	for _, part := range h.model.Partition(h.ops) {
		if porcupine.CheckOperationsTimeout(h.model, part, linCheck) != porcupine.Illegal {
			continue
		}
		res, info := porcupine.CheckOperationsVerbose(h.model, part, linCheck)
		if res != porcupine.Illegal {
			continue
		}
		var best []porcupine.Operation
		for _, lin := range info.PartialLinearizationsOperations()[0] {
			if len(lin) > len(best) {
				best = lin
			}
		}
		type key struct {
			client int
			call   int64
		}
		done := map[key]bool{}
		for _, op := range best {
			done[key{op.ClientId, op.Call}] = true
		}
		var rest []porcupine.Operation
		for _, op := range part {
			if !done[key{op.ClientId, op.Call}] {
				rest = append(rest, op)
			}
		}
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Return, b.Return) })
		// The first operation to return among those left out is one no
		// extension of the prefix can place; show the ones called before
		// it returned.
		if len(rest) == 0 {
			continue
		}
		stuck := rest[0]
		var lines []string
		for _, op := range best[max(0, len(best)-8):] {
			lines = append(lines, "  linearized  "+h.describe(op))
		}
		slices.SortFunc(rest, func(a, b porcupine.Operation) int { return cmp.Compare(a.Call, b.Call) })
		n := 0
		for _, op := range rest {
			if op.Call <= stuck.Return && n < 20 {
				lines = append(lines, "  not placed  "+h.describe(op))
				n++
			}
		}
		t.Logf("part of %d operations is not linearizable: longest linearizable prefix has %d; its end and what cannot follow it:\n%s",
			len(part), len(best), strings.Join(lines, "\n"))
		f, err := os.CreateTemp("", "jfs-linearizability-*.html")
		if err == nil {
			f.Close()
			if err = porcupine.VisualizePath(h.model, info, f.Name()); err == nil {
				t.Logf("visualization: %s", f.Name())
			}
		}
		if err != nil {
			t.Logf("visualization: %v", err)
		}
		return
	}
}

func (h *linHistory) describe(op porcupine.Operation) string {
	ret := "never"
	if op.Return != math.MaxInt64 {
		ret = fmt.Sprintf("%.6fs", float64(op.Return)/1e9)
	}
	return fmt.Sprintf("client %2d [%.6fs, %s] %s", op.ClientId, float64(op.Call)/1e9, ret,
		h.model.DescribeOperation(op.Input, op.Output))
}

// staleWitness looks for the plainest violation: a getattr that returned
// an mtime that a later setattr had overwritten, wholly before the getattr
// was sent. mtimes are unique, so the value names the setattr that wrote
// it. It returns "" if there is none.
func (h *linHistory) staleWitness() string {
	type write struct{ call, ret int64 }
	writes := map[int64]write{} // mtime -> the setattr that wrote it
	initial := map[uint64]int64{h.ia: h.init.mtA, h.ib: h.init.mtB}
	byIno := map[uint64][]porcupine.Operation{} // setattrs per inode
	for _, op := range h.ops {
		if in := op.Input.(linIn); in.kind == linSetAttr {
			writes[in.mtime] = write{op.Call, op.Return}
			byIno[in.ino] = append(byIno[in.ino], op)
		}
	}
	for _, op := range h.ops {
		in := op.Input.(linIn)
		if in.kind != linGetAttr {
			continue
		}
		got := op.Output.(linOut).mtime
		w, ok := writes[got]
		if !ok && got != initial[in.ino] {
			return fmt.Sprintf("%s: nobody wrote that mtime", h.describe(op))
		}
		for _, later := range byIno[in.ino] {
			lin := later.Input.(linIn)
			if lin.mtime == got || later.Return >= op.Call {
				continue
			}
			if !ok || w.ret < later.Call {
				wrote := "the initial mtime"
				if ok {
					wrote = fmt.Sprintf("written by a setattr that returned at %.6fs", float64(w.ret)/1e9)
				}
				return fmt.Sprintf("%s (%s), but %s had returned before the getattr was sent",
					h.describe(op), wrote, h.describe(later))
			}
		}
	}
	return ""
}
