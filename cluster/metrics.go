package cluster

import (
	"context"
	"path"
	"time"

	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"
	"google.golang.org/grpc/status"
)

// Metrics are a node's Prometheus metrics. Register them with a registry of
// the caller's (jfsd serves its own on --metrics-addr).
type Metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	apply    prometheus.Histogram
	batch    prometheus.Histogram
	waits    *prometheus.CounterVec
	deadlock *prometheus.CounterVec
	reads    *prometheus.CounterVec
	fsmReads *prometheus.CounterVec
	rbatch   prometheus.Histogram
	forwards *prometheus.CounterVec
	checks   *prometheus.CounterVec
	cache    *prometheus.CounterVec
	delegs   *prometheus.CounterVec
	n        *Node
}

// NewMetrics creates the metrics of n and registers them with reg.
func NewMetrics(n *Node, reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		n: n,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfsd_requests_total", Help: "API requests received, by method and gRPC status code.",
		}, []string{"method", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jfsd_request_duration_seconds", Help: "API request latency, by method.",
			Buckets: prometheus.ExponentialBuckets(0.0001, 2, 18),
		}, []string{"method"}),
		apply: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jfsd_apply_duration_seconds", Help: "Time to apply one batch of log entries to the state machine.",
			Buckets: prometheus.ExponentialBuckets(0.00005, 2, 18),
		}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jfsd_apply_batch_size", Help: "Log entries applied per state-machine transaction.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 10),
		}),
		waits: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfsd_lock_waits_total", Help: "Blocking lock requests that had to wait, by kind (posix, flock).",
		}, []string{"kind"}),
		deadlock: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfsd_deadlocks_total", Help: "Lock waits refused with EDEADLK: immediate (the wait would close a cycle) or background (a cycle formed later).",
		}, []string{"how"}),
		reads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfsd_reads_total", Help: "Read requests received by the leader, by method.",
		}, []string{"method"}),
		fsmReads: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfsd_fsm_reads_total", Help: "Distinct state-machine reads done, by method: identical reads of one batch count once.",
		}, []string{"method"}),
		rbatch: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "jfsd_read_batch_size", Help: "Reads served per batch (one leadership check each).",
			Buckets: prometheus.ExponentialBuckets(1, 2, 12),
		}),
		forwards: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfsd_forwarded_total", Help: "Requests a follower passed on to the leader for a client that could not reach it, by method.",
		}, []string{"method"}),
	}
	m.cache = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jfsd_cache_total", Help: "Coherent caches on the leader, by what: grant (a read handed out a cache grant), event (an invalidation queued for a session), read_wait (a read waited for a change to reach every cache).",
	}, []string{"what"})
	for _, w := range []string{"grant", "event", "read_wait"} {
		m.cache.WithLabelValues(w)
	}
	m.checks = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jfsd_integrity_checks_total", Help: "Cross-replica digest comparisons run by this node as leader, by result: ok, mismatch (a member was marked corrupt), no_majority (members differ and no digest has a majority), incomplete (too few answered, and they agree), error.",
	}, []string{"result"})
	corrupt := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jfsd_corrupt", Help: "1 when this node's state was found to differ from the other replicas': it serves nothing until rebuilt.",
	}, func() float64 {
		if n.Corrupt() != "" {
			return 1
		}
		return 0
	})
	sessions := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jfsd_sessions", Help: "Client sessions live in this node's state machine.",
	}, func() float64 { return float64(len(n.fsm.Sessions())) })
	// Series of known labels exist from the start, at 0, so that rate()
	// and increase() see their first events and dashboards find them.
	for _, kind := range []string{"posix", "flock"} {
		m.waits.WithLabelValues(kind)
	}
	for _, how := range []string{"immediate", "background"} {
		m.deadlock.WithLabelValues(how)
	}
	freeChecks := prometheus.NewCounterFunc(prometheus.CounterOpts{
		Name: "jfsd_free_checks_total", Help: "Times the free loop woke to look for dead file data to free: after applies, not on a timer, so an idle node does not look.",
	}, func() float64 { return float64(n.freeLooks.Load()) })
	counter := func(name, help string, labels prometheus.Labels, f func() uint64) prometheus.Collector {
		return prometheus.NewCounterFunc(prometheus.CounterOpts{Name: name, Help: help, ConstLabels: labels},
			func() float64 { return float64(f()) })
	}
	const leaseHelp = "Leadership checks of read batches, by result: lease (served under the read lease, no round to the followers), confirmed (after a round of ConfirmTerm calls)."
	const roundsHelp = "Rounds of ConfirmTerm calls to the followers, by why: read (a read batch found no valid lease, or leases are off), renew (a read found the lease near its end; sent in the background)."
	reg.MustRegister(
		counter("jfsd_read_lease_total", leaseHelp, prometheus.Labels{"result": "lease"}, n.leaseReads.Load),
		counter("jfsd_read_lease_total", leaseHelp, prometheus.Labels{"result": "confirmed"}, n.confirmedReads.Load),
		counter("jfsd_confirm_rounds_total", roundsHelp, prometheus.Labels{"why": "read"}, n.rounds[roundRead].Load),
		counter("jfsd_confirm_rounds_total", roundsHelp, prometheus.Labels{"why": "renew"}, n.rounds[roundRenew].Load),
	)
	rebuilt := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jfsd_fsm_rebuilt", Help: "1 when this node discarded its fsm.db at start (it was not closed cleanly) and rebuilt it from the newest snapshot and the raft log.",
	}, func() float64 {
		if n.fsm.Discarded() != "" {
			return 1
		}
		return 0
	})
	trailing := prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "jfsd_raft_trailing_logs", Help: "Log entries kept after a snapshot: --trailing-logs, or fewer to stay within --trailing-logs-bytes at the recent average entry size.",
	}, func() float64 { return float64(n.raft.ReloadableConfig().TrailingLogs) })
	m.delegs = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "jfsd_lock_delegations_total", Help: "Lock delegations (deleg.go), by event: granted (a lock request's answer delegated its inode), recalled (a recall sent to the holder's mount), returned (a DelegReturn gave one back).",
	}, []string{"event"})
	reg.MustRegister(m.delegs)
	reg.MustRegister(m.requests, m.latency, m.apply, m.batch, m.waits, m.deadlock, m.reads, m.fsmReads, m.rbatch, m.forwards, m.checks, m.cache,
		corrupt, sessions, freeChecks, rebuilt, trailing, raftCollector{n})
	n.metrics.Store(m)
	return m
}

// Interceptor counts and times every unary call.
func (m *Metrics) Interceptor() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
		start := time.Now()
		resp, err := h(ctx, req)
		method := path.Base(info.FullMethod)
		m.latency.WithLabelValues(method).Observe(time.Since(start).Seconds())
		m.requests.WithLabelValues(method, status.Code(err).String()).Inc()
		return resp, err
	}
}

func (m *Metrics) countRead(method string) {
	if m != nil {
		m.reads.WithLabelValues(method).Inc()
	}
}

func (m *Metrics) countFSMRead(method string) {
	if m != nil {
		m.fsmReads.WithLabelValues(method).Inc()
	}
}

func (m *Metrics) observeReadBatch(n int) {
	if m != nil {
		m.rbatch.Observe(float64(n))
	}
}

func (m *Metrics) countCache(what string) {
	if m != nil {
		m.cache.WithLabelValues(what).Inc()
	}
}

func (m *Metrics) countCacheEvent()    { m.countCache("event") }
func (m *Metrics) countCacheReadWait() { m.countCache("read_wait") }
func (m *Metrics) countCacheGrant()    { m.countCache("grant") }

func (m *Metrics) countCheck(result string) {
	if m != nil {
		m.checks.WithLabelValues(result).Inc()
	}
}

func (m *Metrics) countWait(kind string) {
	if m != nil {
		m.waits.WithLabelValues(kind).Inc()
	}
}

func (m *Metrics) countDeleg(event string) {
	if m != nil {
		m.delegs.WithLabelValues(event).Inc()
	}
}

func (m *Metrics) countForward(method string) {
	if m != nil {
		m.forwards.WithLabelValues(method).Inc()
	}
}

func (m *Metrics) countDeadlock(how string) {
	if m != nil {
		m.deadlock.WithLabelValues(how).Inc()
	}
}

func (m *Metrics) observeApply(entries int, d time.Duration) {
	if m == nil {
		return
	}
	m.apply.Observe(d.Seconds())
	m.batch.Observe(float64(entries))
}

// raftCollector reads raft's state when scraped.
type raftCollector struct{ n *Node }

var (
	descState   = prometheus.NewDesc("jfsd_raft_state", "1 for the node's current raft state.", []string{"state"}, nil)
	descTerm    = prometheus.NewDesc("jfsd_raft_term", "Current raft term.", nil, nil)
	descCommit  = prometheus.NewDesc("jfsd_raft_commit_index", "Raft commit index.", nil, nil)
	descApplied = prometheus.NewDesc("jfsd_fsm_applied_index", "Last log index applied to the state machine.", nil, nil)
	descLeader  = prometheus.NewDesc("jfsd_is_leader", "1 when this node is the leader.", nil, nil)
	descWaiting = prometheus.NewDesc("jfsd_lock_waiters", "Blocking lock requests queued on this node now.", nil, nil)
)

func (c raftCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descState
	ch <- descTerm
	ch <- descCommit
	ch <- descApplied
	ch <- descLeader
	ch <- descWaiting
}

func (c raftCollector) Collect(ch chan<- prometheus.Metric) {
	r := c.n.raft
	state := r.State()
	for _, s := range []raft.RaftState{raft.Follower, raft.Candidate, raft.Leader, raft.Shutdown} {
		v := 0.0
		if s == state {
			v = 1
		}
		ch <- prometheus.MustNewConstMetric(descState, prometheus.GaugeValue, v, s.String())
	}
	leader := 0.0
	if state == raft.Leader {
		leader = 1
	}
	ch <- prometheus.MustNewConstMetric(descTerm, prometheus.GaugeValue, float64(r.CurrentTerm()))
	ch <- prometheus.MustNewConstMetric(descCommit, prometheus.GaugeValue, float64(r.CommitIndex()))
	ch <- prometheus.MustNewConstMetric(descApplied, prometheus.GaugeValue, float64(c.n.fsm.AppliedIndex()))
	ch <- prometheus.MustNewConstMetric(descLeader, prometheus.GaugeValue, leader)
	waiting := c.n.locks.waiting()
	ch <- prometheus.MustNewConstMetric(descWaiting, prometheus.GaugeValue, float64(waiting))
}
