// Command jfsd runs a node of a jfs cluster, or (jfsd dev) a whole
// three-node cluster in one process for trying jfs out.
package main

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	gometrics "github.com/armon/go-metrics"
	armonprom "github.com/armon/go-metrics/prometheus"
	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/urfave/cli/v2"
	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/fsm"
	"github.com/jfs-dev/jfs/fuse"
	"github.com/jfs-dev/jfs/internal/mtls"
	"github.com/jfs-dev/jfs/internal/sdnotify"
)

// Version is the jfsd version, reported to clients and in --version.
var Version = "0.1.0-dev"

func main() {
	app := &cli.App{
		Name:    "jfsd",
		Usage:   "run a node of a jfs metadata cluster",
		Version: Version,
		Description: `jfsd keeps a share of a jfs file system: inodes, directory entries, file data,
locks and client sessions, replicated with Raft across three nodes.

Start a new three-node cluster by running, with the same --initial-cluster on all three:
  jfsd --id n1 --data-dir /var/lib/jfs/n1 --raft-addr 127.0.0.1:7001 --addr 127.0.0.1:7101 \
       --initial-cluster n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003
A node restarted with the same --data-dir rejoins with its state (--initial-cluster is then ignored).
For a quick try, "jfsd dev" runs a whole cluster in one process.

Without --tls-ca, --tls-cert and --tls-key a node serves plaintext, and then only on loopback
addresses unless --insecure is given. With them (certificates from "jfsctl tls"), the raft port
and the API serve mutual TLS only and every caller's certificate says what it may do; the files
are read again when they change on disk, or at SIGHUP.`,
		Flags:  nodeFlags(),
		Action: runNode,
		Commands: []*cli.Command{
			devCommand(),
		},
		ExitErrHandler: func(*cli.Context, error) {},
	}
	if err := app.Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "jfsd:", err)
		os.Exit(1)
	}
}

func logFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "log-level", Value: "info", Usage: "trace, debug, info, warn or error", EnvVars: []string{"JFSD_LOG_LEVEL"}},
	}
}

func nodeFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "id", Usage: "this node's id, as named in --initial-cluster (required)"},
		&cli.StringFlag{Name: "data-dir", Usage: "directory for the raft log, snapshots and state (required)"},
		&cli.StringFlag{Name: "raft-addr", Value: "127.0.0.1:7001", Usage: "host:port for raft traffic between nodes"},
		&cli.StringFlag{Name: "addr", Value: "127.0.0.1:7101", Usage: "host:port of the gRPC API for clients, jfsctl and other nodes"},
		&cli.StringFlag{Name: "initial-cluster", Usage: "ID=RAFT-ADDR,... of every node of a new cluster"},
		&cli.StringFlag{Name: "metrics-addr", Usage: "host:port to serve Prometheus metrics on /metrics, and /health and /ready (off when empty)"},
		&cli.Uint64Flag{Name: "ready-max-lag", Value: cluster.DefaultReadyMaxLag, Usage: "/ready answers 503 while more than this many committed log entries are not applied yet"},
		&cli.BoolFlag{Name: "pprof", Usage: "also serve Go's profiles (net/http/pprof) under /debug/pprof/ on --metrics-addr"},
		&cli.Uint64Flag{Name: "snapshot-threshold", Value: 8192, Usage: "take a snapshot once this many log entries were applied since the last one"},
		&cli.Uint64Flag{Name: "trailing-logs", Value: 10240, Usage: "log entries kept after a snapshot; a follower further behind catches up from a snapshot"},
		&cli.DurationFlag{Name: "snapshot-interval", Value: 30 * time.Second, Usage: "how often to check whether a snapshot is due"},
		&cli.StringFlag{Name: "trailing-logs-bytes", Value: "64M", Usage: "also bound the log kept after a snapshot by size (suffixes K, M, G): fewer than --trailing-logs entries are kept when they are large"},
		&cli.StringFlag{Name: "snapshot-threshold-bytes", Value: "64M", Usage: "also take a snapshot once this many bytes of log entries were applied since the last one; raft.db holds about this plus --trailing-logs-bytes"},
		&cli.StringFlag{Name: "compact-min", Value: "64M", Usage: "rewrite raft.db (at start) and fsm.db (at start and before a snapshot) without their free pages once half of a file at least this large is free; 0: never"},
		&cli.BoolFlag{Name: "sync-state", Usage: "fsync every commit of the state machine's fsm.db as well, as the first release did (the raft log is the durable record; without this an fsm.db that was not closed cleanly is rebuilt from the newest snapshot and the log)"},
		&cli.StringFlag{Name: "block-size", Value: "64K", Usage: "file data block size, a power of two from 4K to 4M; used only when the cluster is created (the first leader records it)"},
		&cli.StringFlag{Name: "capacity", Value: "0", Usage: "quota in bytes (suffixes K, M, G, T, P) that df reports and writes may not exceed; 0: none, df reports the leader's disk. Used only when the cluster is created; change it later with jfsctl settings set"},
		&cli.Uint64Flag{Name: "max-inodes", Usage: "limit on the number of inodes; 0: none. Used only when the cluster is created; change it later with jfsctl settings set"},
		&cli.DurationFlag{Name: "heartbeat-timeout", Value: cluster.DefaultHeartbeatTimeout, Usage: "a follower that has not heard from the leader for this long (up to twice as long, at random) starts an election; the leader sends heartbeats ten times as often"},
		&cli.DurationFlag{Name: "election-timeout", Value: cluster.DefaultElectionTimeout, Usage: "how long a candidate waits for votes before it tries again (at least --heartbeat-timeout)"},
		&cli.DurationFlag{Name: "leader-lease-timeout", Value: cluster.DefaultLeaderLeaseTimeout, Usage: "a leader that has not heard from a majority for this long steps down (at most --heartbeat-timeout)"},
		&cli.DurationFlag{Name: "commit-timeout", Value: cluster.DefaultCommitTimeout, Usage: "an idle leader tells the followers what is committed after this long (up to twice as long, at random); lower: followers' state closer to the leader's, more idle traffic"},
		&cli.DurationFlag{Name: "integrity-check", Value: time.Minute, Usage: "how often the leader compares the replicas' state digests; a member whose state differs from the majority's is marked corrupt (0: never)"},
		&cli.StringFlag{Name: "tls-ca", Usage: "the cluster's CA certificate (PEM); with --tls-cert and --tls-key the raft port and the API serve mutual TLS only"},
		&cli.StringFlag{Name: "tls-cert", Usage: "this node's certificate (PEM): jfsctl tls cert create --node ID; read again when it changes, or at SIGHUP"},
		&cli.StringFlag{Name: "tls-key", Usage: "the key of --tls-cert (PEM)"},
		&cli.BoolFlag{Name: "insecure", Usage: "allow serving without TLS on addresses other than loopback: anyone who reaches the ports owns the file system"},
	}, sessionFlags()...)
}

// loadNodeTLS loads the node's TLS files (nil without them) and applies
// the plaintext rule: without TLS, jfsd listens only on loopback
// addresses unless --insecure says otherwise.
func loadNodeTLS(c *cli.Context, log hclog.Logger) (*mtls.Source, error) {
	src, err := mtls.FromFlags(c)
	if err != nil {
		return nil, err
	}
	if src != nil {
		id := src.Identity()
		if id.Role != mtls.RoleNode || id.Name != c.String("id") {
			return nil, fmt.Errorf("--tls-cert %s is %s, not node/%s: make one with jfsctl tls cert create --node %s",
				c.String("tls-cert"), id, c.String("id"), c.String("id"))
		}
		src.OnReload = func(err error) {
			if err != nil {
				log.Error("TLS files not reloaded; the previous ones stay in use", "error", err)
			} else {
				log.Info("TLS files reloaded")
			}
		}
		return src, nil
	}
	for _, f := range []string{"raft-addr", "addr"} {
		if isLoopback(c.String(f)) {
			continue
		}
		if !c.Bool("insecure") {
			return nil, fmt.Errorf("--%s %s is not a loopback address and no TLS is set up: anyone who reaches it would own "+
				"the file system. Give --tls-ca, --tls-cert and --tls-key (see jfsctl tls), or --insecure to serve plaintext anyway", f, c.String(f))
		}
		log.Warn("serving WITHOUT TLS on a non-loopback address (--insecure): anyone who reaches it owns the file system", "flag", f, "addr", c.String(f))
	}
	return nil, nil
}

// isLoopback reports whether addr's host is a loopback address or
// localhost.
func isLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func sessionFlags() []cli.Flag {
	return append([]cli.Flag{
		&cli.DurationFlag{Name: "session-ttl", Value: 30 * time.Second, Usage: "a client session without a heartbeat for this long expires: its locks are released and its writes refused"},
		&cli.BoolFlag{Name: "read-batching", Value: true, Usage: "serve concurrent reads in batches that share one leadership check and compute identical reads once (false: check and read for every request, for comparison)"},
		&cli.BoolFlag{Name: "read-lease", Value: true, Usage: "let the leader serve reads without asking the followers while it holds a lease from their last answers (false: a round of confirmations per read batch); a restarted node then waits one heartbeat timeout before it joins raft. Use the same setting on every node"},
	}, logFlags()...)
}

func newLogger(c *cli.Context, name string) (hclog.Logger, error) {
	lvl := hclog.LevelFromString(c.String("log-level"))
	if lvl == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", c.String("log-level"))
	}
	return hclog.New(&hclog.LoggerOptions{Name: name, Level: lvl, Output: os.Stderr}), nil
}

// parseSize parses a byte count with an optional binary suffix K, M, G, T
// or P ("64K" is 65536).
func parseSize(s string) (uint64, error) {
	s = strings.TrimSpace(s)
	shift := 0
	if s != "" {
		if i := strings.IndexByte("KMGTP", strings.ToUpper(s[len(s)-1:])[0]); i >= 0 {
			shift = 10 * (i + 1)
			s = s[:len(s)-1]
		}
	}
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("size %q: want a number of bytes, optionally with K, M, G, T or P", s)
	}
	if v > math.MaxUint64>>shift {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return v << shift, nil
}

func checkAddr(flag, addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("--%s %q: %w", flag, addr, err)
	}
	if host == "" || port == "" || port == "0" {
		return fmt.Errorf("--%s %q: want HOST:PORT with an explicit host and port", flag, addr)
	}
	return nil
}

func runNode(c *cli.Context) error {
	catchSignals()
	if c.Args().Len() > 0 {
		return fmt.Errorf("unexpected argument %q (see jfsd --help)", c.Args().First())
	}
	for _, f := range []string{"id", "data-dir"} {
		if c.String(f) == "" {
			return fmt.Errorf("--%s is required (see jfsd --help)", f)
		}
	}
	for _, f := range []string{"raft-addr", "addr"} {
		if err := checkAddr(f, c.String(f)); err != nil {
			return err
		}
	}
	if c.Duration("session-ttl") < 100*time.Millisecond {
		return fmt.Errorf("--session-ttl %v: must be at least 100ms", c.Duration("session-ttl"))
	}
	if err := cluster.CheckTiming(c.Duration("heartbeat-timeout"), c.Duration("election-timeout"), c.Duration("leader-lease-timeout")); err != nil {
		return err
	}
	if m := c.String("metrics-addr"); m != "" {
		if err := checkAddr("metrics-addr", m); err != nil {
			return err
		}
	}
	if ct := c.Duration("commit-timeout"); ct < time.Millisecond {
		return fmt.Errorf("--commit-timeout %v: must be at least 1ms", ct)
	}
	if c.Uint64("snapshot-threshold") == 0 || c.Uint64("trailing-logs") == 0 {
		return errors.New("--snapshot-threshold and --trailing-logs must be at least 1")
	}
	integrity := c.Duration("integrity-check")
	switch {
	case integrity < 0 || (integrity > 0 && integrity < 10*time.Millisecond):
		return fmt.Errorf("--integrity-check %v: must be 0 (never) or at least 10ms", integrity)
	case integrity == 0:
		integrity = -1 // cluster.Config: negative is never
	}
	if c.Duration("snapshot-interval") < 10*time.Millisecond {
		return fmt.Errorf("--snapshot-interval %v: must be at least 10ms", c.Duration("snapshot-interval"))
	}
	var diskSizes [3]uint64
	for i, name := range []string{"trailing-logs-bytes", "snapshot-threshold-bytes", "compact-min"} {
		v, err := parseSize(c.String(name))
		if err != nil || (v == 0 && name != "compact-min") {
			return fmt.Errorf("--%s %q: want a size of at least 1 (suffixes K, M, G)", name, c.String(name))
		}
		diskSizes[i] = v
	}
	compactMin := int64(diskSizes[2])
	if compactMin == 0 {
		compactMin = -1 // cluster.Config: negative is never
	}
	bs, err := parseSize(c.String("block-size"))
	if err != nil || bs < 4<<10 || bs > fsm.MaxBlockSize || bs&(bs-1) != 0 {
		return fmt.Errorf("--block-size %q: want a power of two from 4K to 4M", c.String("block-size"))
	}
	capacity, err := parseSize(c.String("capacity"))
	if err != nil {
		return fmt.Errorf("--capacity: %w", err)
	}
	var peers []cluster.Peer
	if s := c.String("initial-cluster"); s != "" {
		var err error
		if peers, err = cluster.ParseInitialCluster(s); err != nil {
			return fmt.Errorf("--initial-cluster: %w", err)
		}
	}
	log, err := newLogger(c, c.String("id"))
	if err != nil {
		return err
	}
	tlsSrc, err := loadNodeTLS(c, log)
	if err != nil {
		return err
	}
	if tlsSrc != nil {
		defer tlsSrc.ReloadOnSIGHUP(tlsSrc.OnReload)()
	}
	n, err := startNode(nodeSpec{
		cfg: cluster.Config{
			ID: c.String("id"), DataDir: c.String("data-dir"), RaftAddr: c.String("raft-addr"),
			APIAddr: c.String("addr"), InitialCluster: peers, Logger: log,
			SessionTTL: c.Duration("session-ttl"), ReadMode: readMode(c), ReadLease: c.Bool("read-lease"), Started: processStart,
			SnapshotThreshold: c.Uint64("snapshot-threshold"), TrailingLogs: c.Uint64("trailing-logs"),
			SnapshotInterval: c.Duration("snapshot-interval"), IntegrityCheck: integrity,
			TrailingLogsBytes: diskSizes[0], SnapshotThresholdBytes: diskSizes[1], CompactMin: compactMin,
			FSM: fsm.Options{BlockSize: int(bs), Capacity: capacity, MaxInodes: c.Uint64("max-inodes"),
				SyncCommits: c.Bool("sync-state")},
			HeartbeatTimeout: c.Duration("heartbeat-timeout"), ElectionTimeout: c.Duration("election-timeout"),
			LeaderLeaseTimeout: c.Duration("leader-lease-timeout"), CommitTimeout: c.Duration("commit-timeout"),
			TLS: tlsSrc,
		},
		metricsAddr: c.String("metrics-addr"),
		raftMetrics: c.String("metrics-addr") != "",
		readyMaxLag: c.Uint64("ready-max-lag"),
		pprof:       c.Bool("pprof"),
	})
	if err != nil {
		return err
	}
	log.Info("serving", "api", c.String("addr"), "raft", c.String("raft-addr"), "data-dir", c.String("data-dir"), "tls", tlsSrc != nil)
	// A Type=notify service (contrib/systemd/jfsd@.service) is started now.
	if _, err := sdnotify.Notify(sdnotify.Ready); err != nil {
		log.Warn("cannot notify the service manager", "error", err)
	}
	failed := waitForSignal(n.node)
	sdnotify.Notify(sdnotify.Stopping)
	if failed != nil {
		n.stop()
		return failed
	}
	log.Info("stopping")
	return n.stop()
}

// processStart is when jfsd started: the read lease's start rule counts
// from it (cluster.Config.Started).
var processStart = time.Now()

func readMode(c *cli.Context) cluster.ReadMode {
	if c.Bool("read-batching") {
		return cluster.ReadBatched
	}
	return cluster.ReadEach
}

// signals receives SIGINT and SIGTERM from catchSignals on: one that comes
// while a node starts (which can take a heartbeat timeout, the read lease's
// start rule) stops it cleanly once it has started, instead of killing the
// process.
var signals = make(chan os.Signal, 1)

func catchSignals() { signal.Notify(signals, syscall.SIGINT, syscall.SIGTERM) }

// waitForSignal returns nil on SIGINT or SIGTERM, or the error of the first
// of nodes that fails (see cluster.Node.Failed).
func waitForSignal(nodes ...*cluster.Node) error {
	ch := signals
	defer signal.Stop(ch)
	failed := make(chan *cluster.Node, len(nodes))
	stop := make(chan struct{})
	defer close(stop)
	for _, n := range nodes {
		go func() {
			select {
			case <-n.Failed():
				failed <- n
			case <-stop:
			}
		}()
	}
	select {
	case <-ch:
		return nil
	case n := <-failed:
		return fmt.Errorf("node %s failed: %w", n.ID(), n.Err())
	}
}

type nodeSpec struct {
	cfg         cluster.Config
	apiListener net.Listener // nil: listen on cfg.APIAddr
	metricsAddr string
	// raftMetrics exports raft's internal timings (commit, log store, FSM
	// apply) as jfsd_raft_*. They are process-wide, so only a process that
	// runs one node asks for them.
	raftMetrics bool
	readyMaxLag uint64 // the bound of /ready, see cluster.Health
	// pprof serves net/http/pprof on the metrics listener.
	pprof bool
}

// raftMetricsKept are the go-metrics keys of hashicorp/raft exported as
// jfsd_raft_*.
var raftMetricsKept = []string{
	"jfsd.raft.commitTime",
	"jfsd.raft.leader.dispatchLog",
	"jfsd.raft.replication.heartbeat",
	"jfsd.raft.state.",
	"jfsd.raft.transition.",
	"jfsd.raft.snapshot.",
	"jfsd.raft.fsm.restore",
	"jfsd.raft.fsm.snapshot",
	"jfsd.raft.rpc.installSnapshot",
}

// exportRaftMetrics sends what hashicorp/raft measures through go-metrics
// to reg.
func exportRaftMetrics(reg prometheus.Registerer) error {
	sink, err := armonprom.NewPrometheusSinkFrom(armonprom.PrometheusOpts{Registerer: reg})
	if err != nil {
		return fmt.Errorf("raft metrics: %w", err)
	}
	conf := gometrics.DefaultConfig("jfsd")
	conf.EnableHostname = false
	conf.EnableRuntimeMetrics = false
	// Only the timings the dashboard, jfs bench and the tests read are kept.
	// raft times every RPC, append and apply; turned into Prometheus summaries,
	// all of them cost 4-6 % of a node's CPU under load.
	conf.FilterDefault = false
	conf.AllowedPrefixes = raftMetricsKept
	_, err = gometrics.NewGlobal(conf, sink)
	return err
}

type runningNode struct {
	node    *cluster.Node
	grpc    *grpc.Server
	metrics *http.Server
}

// startNode starts a node, its API and its metrics endpoint.
func startNode(spec nodeSpec) (*runningNode, error) {
	lis := spec.apiListener
	if lis == nil {
		var err error
		if lis, err = net.Listen("tcp", spec.cfg.APIAddr); err != nil {
			return nil, fmt.Errorf("api: %w", err)
		}
	}
	n, err := cluster.NewNode(spec.cfg)
	if err != nil {
		lis.Close()
		return nil, err
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	if spec.raftMetrics {
		if err := exportRaftMetrics(reg); err != nil {
			n.Shutdown()
			lis.Close()
			return nil, err
		}
	}
	m := cluster.NewMetrics(n, reg)
	rn := &runningNode{node: n, grpc: cluster.Serve(n, lis, grpc.UnaryInterceptor(m.Interceptor()))}
	if spec.metricsAddr != "" {
		mlis, err := net.Listen("tcp", spec.metricsAddr)
		if err != nil {
			rn.stop()
			return nil, fmt.Errorf("metrics: %w", err)
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		mux.Handle("/health", cluster.LiveHandler(n, spec.readyMaxLag))
		mux.Handle("/ready", cluster.ReadyHandler(n, spec.readyMaxLag))
		if spec.pprof {
			servePprof(mux)
		}
		rn.metrics = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := rn.metrics.Serve(mlis); !errors.Is(err, http.ErrServerClosed) {
				log := spec.cfg.Logger
				if log != nil {
					log.Error("metrics server stopped", "addr", spec.metricsAddr, "error", err)
				}
			}
		}()
	}
	return rn, nil
}

// servePprof adds Go's profiles (net/http/pprof) to mux under /debug/pprof/.
func servePprof(mux *http.ServeMux) {
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
}

func (rn *runningNode) stop() error {
	if rn.metrics != nil {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		rn.metrics.Shutdown(ctx)
		cancel()
	}
	rn.node.EndStreams() // a graceful stop waits for every call in progress
	cluster.StopServer(rn.grpc, 5*time.Second)
	return rn.node.Shutdown()
}

// ---- jfsd dev ----

func devCommand() *cli.Command {
	return &cli.Command{
		Name:  "dev",
		Usage: "run a whole three-node cluster in this process, on free loopback ports",
		Description: `Starts nodes n1, n2 and n3 on 127.0.0.1, prints their addresses and serves until
Ctrl-C. With --dir the state is kept there and a later "jfsd dev --dir" with the
same directory starts the same cluster again (on the same ports); without it a
temporary directory is used and removed at exit. With --mount the cluster is
also mounted there (FUSE; as root, or with fusermount3), and unmounted at exit.
The cluster serves mutual TLS: a CA and certificates are made in DIR/tls, and
the JFS_TLS_* variables that jfsctl and jfs mount need are printed.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "keep the cluster's state in this directory"},
			&cli.StringFlag{Name: "mount", Usage: "also mount the cluster on this existing directory"},
		}, sessionFlags()...),
		Action: runDev,
	}
}

func runDev(c *cli.Context) error {
	catchSignals()
	if c.Args().Len() > 0 {
		return fmt.Errorf("unexpected argument %q (see jfsd dev --help)", c.Args().First())
	}
	log, err := newLogger(c, "dev")
	if err != nil {
		return err
	}
	mnt := c.String("mount")
	if mnt != "" {
		if fi, err := os.Stat(mnt); err != nil || !fi.IsDir() {
			return fmt.Errorf("--mount %s: not an existing directory", mnt)
		}
	}
	dir := c.String("dir")
	if dir == "" {
		if dir, err = os.MkdirTemp("", "jfs-dev-"); err != nil {
			return err
		}
		defer os.RemoveAll(dir)
	}
	tlsDir := filepath.Join(dir, "tls")
	nodeTLS, userTLS, err := devTLS(tlsDir)
	if err != nil {
		return fmt.Errorf("dev certificates in %s: %w", tlsDir, err)
	}
	nodes, err := startDev(dir, c.Duration("session-ttl"), readMode(c), nodeTLS, log)
	if err != nil {
		return err
	}
	var servers []string
	for _, rn := range nodes {
		servers = append(servers, rn.apiAddr)
	}
	var mounted *fuse.Mounted
	if mnt != "" {
		cl, err := client.New(client.Config{Servers: servers, Logger: log, TLS: userTLS})
		if err != nil {
			return err
		}
		defer cl.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		mounted, err = fuse.Mount(ctx, cl, fuse.MountConfig{MountPoint: mnt, FsName: "jfs:" + servers[0], Version: Version,
			Options: fuse.Options{AttrTimeout: time.Second, EntryTimeout: time.Second, DirEntryTimeout: time.Second, Logger: log}})
		cancel()
		if err != nil {
			for _, rn := range nodes {
				rn.stop()
			}
			return err
		}
	}
	// Printed once everything is up: scripts may wait for these lines.
	fmt.Printf("jfs dev cluster (data in %s):\n", dir)
	for _, rn := range nodes {
		fmt.Printf("  %s  raft %s  api %s\n", rn.node.ID(), rn.raftAddr, rn.apiAddr)
	}
	if mounted != nil {
		fmt.Printf("\n  mounted on %s\n", mnt)
	}
	fmt.Printf("\n  export JFS_SERVERS=%s\n", strings.Join(servers, ","))
	fmt.Printf("  export JFS_TLS_CA=%s\n  export JFS_TLS_CERT=%s\n  export JFS_TLS_KEY=%s\n",
		filepath.Join(tlsDir, mtls.CAFile), filepath.Join(tlsDir, devUser+".pem"), filepath.Join(tlsDir, devUser+"-key.pem"))
	fmt.Printf("  jfsctl cluster status\n")
	fmt.Printf("\nCtrl-C stops the cluster.\n")
	var nodeList []*cluster.Node
	for _, rn := range nodes {
		nodeList = append(nodeList, rn.node)
	}
	failed := waitForSignal(nodeList...)
	if mounted != nil {
		mounted.Unmount(5 * time.Second)
	}
	errs := []error{failed}
	for _, rn := range nodes {
		errs = append(errs, rn.stop())
	}
	return errors.Join(errs...)
}

// devUser names the admin certificate that jfsd dev makes for jfsctl and
// jfs mount.
const devUser = "dev"

// devTLS makes, once, a CA in dir with a certificate for each dev node and
// an admin certificate for the user, and loads them.
func devTLS(dir string) (map[string]*mtls.Source, *mtls.Source, error) {
	ids := []string{"n1", "n2", "n3"}
	if _, err := os.Stat(filepath.Join(dir, mtls.CAFile)); errors.Is(err, os.ErrNotExist) {
		if err := mtls.CreateCA(dir); err != nil {
			return nil, nil, err
		}
		for _, id := range ids {
			if _, err := mtls.CreateCert(dir, mtls.CertRequest{Identity: mtls.Identity{Role: mtls.RoleNode, Name: id}}, dir); err != nil {
				return nil, nil, err
			}
		}
		if _, err := mtls.CreateCert(dir, mtls.CertRequest{Identity: mtls.Identity{Role: mtls.RoleAdmin, Name: devUser}}, dir); err != nil {
			return nil, nil, err
		}
	}
	load := func(name string) (*mtls.Source, error) {
		return mtls.Load(mtls.Files{CA: filepath.Join(dir, mtls.CAFile),
			Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")})
	}
	nodes := map[string]*mtls.Source{}
	for _, id := range ids {
		src, err := load(id)
		if err != nil {
			return nil, nil, err
		}
		nodes[id] = src
	}
	user, err := load(devUser)
	return nodes, user, err
}

type devNode struct {
	*runningNode
	raftAddr, apiAddr string
}

// startDev starts three nodes in dir. The addresses of a new cluster are
// chosen by the kernel and saved in dir/dev-cluster so that a restart from
// the same dir finds its peers again.
func startDev(dir string, ttl time.Duration, mode cluster.ReadMode, tls map[string]*mtls.Source, log hclog.Logger) ([]*devNode, error) {
	addrFile := dir + "/dev-cluster"
	ids := []string{"n1", "n2", "n3"}
	raftAddrs := map[string]string{}
	apiAddrs := map[string]string{}
	if b, err := os.ReadFile(addrFile); err == nil {
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			f := strings.Fields(line)
			if len(f) != 3 {
				return nil, fmt.Errorf("%s: malformed line %q", addrFile, line)
			}
			raftAddrs[f[0]], apiAddrs[f[0]] = f[1], f[2]
		}
	}
	fresh := len(raftAddrs) == 0
	transports := map[string]*raft.NetworkTransport{}
	listeners := map[string]net.Listener{}
	cleanup := func() {
		for _, t := range transports {
			t.Close()
		}
		for _, l := range listeners {
			l.Close()
		}
	}
	var peers []cluster.Peer
	var saved strings.Builder
	for _, id := range ids {
		ra, aa := raftAddrs[id], apiAddrs[id]
		if fresh {
			ra, aa = "127.0.0.1:0", "127.0.0.1:0"
		}
		t, err := cluster.NewRaftTransport(ra, tls[id], log.Named(id))
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("%s raft: %w", id, err)
		}
		transports[id] = t
		l, err := net.Listen("tcp", aa)
		if err != nil {
			cleanup()
			return nil, fmt.Errorf("%s api: %w", id, err)
		}
		listeners[id] = l
		raftAddrs[id], apiAddrs[id] = string(t.LocalAddr()), l.Addr().String()
		peers = append(peers, cluster.Peer{ID: id, RaftAddr: raftAddrs[id]})
		fmt.Fprintf(&saved, "%s %s %s\n", id, raftAddrs[id], apiAddrs[id])
	}
	if fresh {
		if err := os.WriteFile(addrFile, []byte(saved.String()), 0o600); err != nil {
			cleanup()
			return nil, err
		}
	}
	var nodes []*devNode
	for _, id := range ids {
		rn, err := startNode(nodeSpec{
			cfg: cluster.Config{
				ID: id, DataDir: dir + "/" + id, APIAddr: apiAddrs[id], InitialCluster: peers,
				Transport: transports[id], Logger: log.Named(id), SessionTTL: ttl, ReadMode: mode, TLS: tls[id],
				// The three nodes live and die together: the start rule
				// counts from the process's start, not from each node's.
				ReadLease: true, Started: processStart,
			},
			apiListener: listeners[id],
		})
		if err != nil {
			for _, n := range nodes {
				n.stop()
			}
			cleanup()
			return nil, fmt.Errorf("%s: %w", id, err)
		}
		delete(listeners, id)
		nodes = append(nodes, &devNode{rn, raftAddrs[id], apiAddrs[id]})
	}
	return nodes, nil
}
