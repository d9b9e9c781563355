package fuse

import (
	"bytes"
	"net/http"
	"strconv"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"golang.org/x/sys/unix"
)

// Metrics are a mount's Prometheus metrics, served by "jfs mount --metrics"
// and read from MOUNTPOINT/.stats (one registry for both):
//
//   - jfs_fuse_ops_total{method}, jfs_fuse_errors_total{method,errno},
//     jfs_fuse_op_duration_seconds{method}: FUSE operations, by the
//     RawFileSystem method name (GetAttr, Lookup, ...);
//   - jfs_meta_ops_total{method}, jfs_meta_ops_durations_histogram_seconds{method}:
//     requests sent to the cluster, by the access log's name (getattr,
//     lookup, ...). getattr and lookup are counted by the client per RPC
//     sent; the others once per FUSE operation that asks the cluster;
//   - jfs_meta_ops_merged_total{method}: getattr and lookup requests that
//     shared an RPC another request sent (client.ReadObserver);
//   - jfs_cache_ready: 1 while the coherent caches' stream is reset and
//     acknowledged (grants are asked for), jfs_cache_events_total: the
//     invalidations (resets included) it handled, jfs_cache_grants_total:
//     answers the kernel was allowed to keep (coherent.go),
//     jfs_cache_kept_pages_total: opens that kept the kernel's pages of an
//     unchanged file (pages.go);
//   - the Go runtime's and the process's metrics.
type Metrics struct {
	reg      *prometheus.Registry
	ops      *prometheus.CounterVec
	errs     *prometheus.CounterVec
	duration *prometheus.HistogramVec
	metaOps  *prometheus.CounterVec
	metaDur  *prometheus.HistogramVec
	merged   *prometheus.CounterVec

	cacheReady  prometheus.Gauge
	cacheEvents prometheus.Counter
	cacheGrants prometheus.Counter
	keptPages   prometheus.Counter
}

// NewMetrics returns the metrics of one mount, in a registry of their own.
func NewMetrics() *Metrics {
	m := &Metrics{
		reg: prometheus.NewRegistry(),
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfs_fuse_ops_total", Help: "FUSE operations served, by method.",
		}, []string{"method"}),
		errs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfs_fuse_errors_total", Help: "FUSE operations answered with an error, by method and errno.",
		}, []string{"method", "errno"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jfs_fuse_op_duration_seconds", Help: "Time to serve a FUSE operation, by method.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"method"}),
		metaOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfs_meta_ops_total", Help: "Requests sent to the cluster, by method (as in the access log).",
		}, []string{"method"}),
		metaDur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "jfs_meta_ops_durations_histogram_seconds", Help: "Time of the requests sent to the cluster, by method.",
			Buckets: prometheus.ExponentialBuckets(50e-6, 2, 16),
		}, []string{"method"}),
		merged: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "jfs_meta_ops_merged_total", Help: "Requests answered by an identical request's RPC instead of their own, by method.",
		}, []string{"method"}),
	}
	m.cacheReady = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "jfs_cache_ready", Help: "1 while the coherent caches' stream to the leader is reset and acknowledged: lookups and getattrs ask for cache grants.",
	})
	m.cacheEvents = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jfs_cache_events_total", Help: "Cache invalidations from the leader handled (resets included).",
	})
	m.cacheGrants = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jfs_cache_grants_total", Help: "Lookup and getattr answers the kernel was allowed to cache under a grant.",
	})
	m.keptPages = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "jfs_cache_kept_pages_total", Help: "Opens that kept the kernel's cached pages: the file's data was unchanged since its last open on this mount.",
	})
	m.reg.MustRegister(m.cacheReady, m.cacheEvents, m.cacheGrants, m.keptPages)
	m.reg.MustRegister(m.ops, m.errs, m.duration, m.metaOps, m.metaDur, m.merged,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	// The merged methods show up at 0 before the first merge.
	for _, method := range []string{"getattr", "lookup"} {
		m.merged.WithLabelValues(method)
		m.metaOps.WithLabelValues(method)
	}
	return m
}

// Registry is where the metrics are registered; others may add theirs.
func (m *Metrics) Registry() *prometheus.Registry { return m.reg }

// Handler serves the metrics over HTTP.
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{})
}

// Text is a snapshot of the metrics in Prometheus's text format.
func (m *Metrics) Text() ([]byte, error) {
	mfs, err := m.reg.Gather()
	var b bytes.Buffer
	enc := expfmt.NewEncoder(&b, expfmt.NewFormat(expfmt.TypeTextPlain))
	for _, mf := range mfs {
		if e := enc.Encode(mf); e != nil && err == nil {
			err = e
		}
	}
	return b.Bytes(), err
}

// observeFuse counts a FUSE operation.
func (m *Metrics) observeFuse(method string, st fuse.Status, d time.Duration) {
	m.ops.WithLabelValues(method).Inc()
	m.duration.WithLabelValues(method).Observe(d.Seconds())
	if !st.Ok() {
		m.errs.WithLabelValues(method, errnoName(st)).Inc()
	}
}

// observeMeta counts a request sent to the cluster.
func (m *Metrics) observeMeta(method string, d time.Duration) {
	m.metaOps.WithLabelValues(method).Inc()
	m.metaDur.WithLabelValues(method).Observe(d.Seconds())
}

// ObserveSent implements client.ReadObserver.
func (m *Metrics) ObserveSent(method string, d time.Duration, err error) { m.observeMeta(method, d) }

// ObserveMerged implements client.ReadObserver.
func (m *Metrics) ObserveMerged(method string) { m.merged.WithLabelValues(method).Inc() }

// Metrics are the mount's metrics.
func (m *Mounted) Metrics() *Metrics { return m.fs.opts.Metrics }

// errnoName is the errno's name for a metric label: "ENOENT".
func errnoName(st fuse.Status) string {
	if name := unix.ErrnoName(syscall.Errno(st)); name != "" {
		return name
	}
	return "errno " + strconv.Itoa(int(st))
}
