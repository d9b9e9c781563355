package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/urfave/cli/v2"

	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/fuse"
	"github.com/jfs-dev/jfs/internal/mtls"
	"github.com/jfs-dev/jfs/internal/sdnotify"
)

// readyFDEnv names the descriptor on which a mount started by "jfs mount -d"
// reports to its parent: "ready" once mounted, or "error: ..." before it
// exits.
const readyFDEnv = "JFS_MOUNT_READY_FD"

const unmountDetach = syscall.MNT_DETACH

func unmount(mnt string, flags int) error { return syscall.Unmount(mnt, flags) }

func mountCommand() *cli.Command {
	return &cli.Command{
		Name:      "mount",
		Usage:     "mount a jfs file system",
		ArgsUsage: "MOUNTPOINT",
		Description: `Mounts the cluster at --servers on MOUNTPOINT, an existing directory, and serves
it until it is unmounted (jfs umount) or the process gets SIGINT or SIGTERM,
which unmount it. The mount registers a session with the cluster (host, mount
point, pid, version), keeps it alive with heartbeats and closes it at unmount;
the session's locks and open files end with it.

--cache-mode says how the kernel caches attributes and names:

  coherent (the default): the kernel keeps what the leader granted until the
    leader says it changed, at most --cache-max and never past the session's
    lease (the cluster's --session-ttl, 30s by default: in practice 20-30s,
    granted again at the next look after that; a longer --session-ttl on
    jfsd makes caches last longer). A change made anywhere is answered to
    its writer only once every mount caching the old state dropped it, so a
    stat or lookup that starts after a change returned sees it, on any mount.
    What is not granted (new files, readdir's attributes, negative entries)
    is not cached.
  timed: the kernel caches attributes and names for the --*-cache durations
    (0 turns a cache off); another mount's change may show only after them.
    Giving one of those durations without --cache-mode selects timed.
  off: nothing is cached; every stat and lookup asks the cluster.

File data is never cached across an open or a lock: a file opened, or
locked, after another mount wrote and closed (or unlocked) it shows that write.

As root the file system is mounted directly, with allow_other; otherwise with
fusermount3. Prometheus metrics are served on --metrics /metrics and read from
MOUNTPOINT/.stats; MOUNTPOINT/.accesslog streams the access log while it is
read (see jfs stats and jfs profile). With --pprof the metrics listener also
serves Go's profiles under /debug/pprof/ (go tool pprof URL/debug/pprof/profile);
it is off by default, since a profile costs CPU and shows internals.

Under systemd, run it in the foreground with Type=notify: it reports READY=1
once the file system is mounted and STOPPING=1 when it unmounts. With
--background, Type=forking and PIDFile= take --pid-file. Invoked as mount.jfs
(a link to jfs), it is mount(8)'s helper: mount -t jfs SERVERS MOUNTPOINT -o
attr-cache=1s,noatime (see README.md).

With --tls-ca, --tls-cert and --tls-key (or JFS_TLS_CA, JFS_TLS_CERT,
JFS_TLS_KEY) it connects with mutual TLS under a client certificate
(jfsctl tls cert create --client NAME); the files are read again when they
change on disk, or at SIGHUP.`,
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "servers", EnvVars: []string{"JFS_SERVERS"}, Usage: "API addresses of some or all nodes, HOST:PORT[,HOST:PORT...] (required)"},
			&cli.BoolFlag{Name: "background", Aliases: []string{"d"}, Usage: "serve in the background; return once mounted, printing the mount process's pid"},
			&cli.StringFlag{Name: "pid-file", Usage: "once mounted, write the mount process's pid to this file; it is removed at unmount"},
			&cli.StringFlag{Name: "cache-mode", Value: "coherent", Usage: "coherent (cached until the leader says it changed), timed (the --*-cache durations) or off"},
			&cli.DurationFlag{Name: "cache-max", Value: time.Minute, Usage: "coherent mode: the longest the kernel keeps a granted item (also bounded by the session's lease)"},
			&cli.DurationFlag{Name: "attr-cache", Value: time.Second, Usage: "timed mode: how long the kernel may cache attributes (0: off)"},
			&cli.DurationFlag{Name: "entry-cache", Value: time.Second, Usage: "timed mode: how long the kernel may cache names of files (0: off)"},
			&cli.DurationFlag{Name: "dir-entry-cache", Value: time.Second, Usage: "timed mode: how long the kernel may cache names of directories (0: off)"},
			&cli.DurationFlag{Name: "negative-entry-cache", Value: 0, Usage: "timed mode: how long the kernel may remember that a name does not exist (0: off)"},
			&cli.DurationFlag{Name: "retry-for", Value: 30 * time.Second, Usage: "how long a request looks for a leader before it fails (EIO; at mount: the mount fails)"},
			&cli.StringFlag{Name: "metrics", Value: "127.0.0.1:9567", Usage: "HOST:PORT to serve Prometheus metrics on; a free port when taken; empty: off"},
			&cli.BoolFlag{Name: "pprof", Usage: "also serve Go's profiles (net/http/pprof) under /debug/pprof/ on --metrics"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "trace, debug, info, warn or error", EnvVars: []string{"JFS_LOG_LEVEL"}},
			&cli.StringFlag{Name: "log-file", Usage: "append logs to this file (default: stderr; with --background /var/log/jfs.log as root, else ~/.jfs/jfs.log)"},
			&cli.BoolFlag{Name: "debug-fuse", Usage: "log every FUSE request and answer"},
			&cli.BoolFlag{Name: "noatime", Usage: "never update access times (default: relatime, one log entry per file read after a change or a day)"},
			&cli.BoolFlag{Name: "lock-delegation", Value: true, Usage: "answer the locks of a file that only this mount locks here, without a request, until another mount asks for one (false: every lock call goes to the cluster)"},
			&cli.IntFlag{Name: "release-batch", Value: 256, Usage: "the most closes that free no lock sent to the cluster in one request (1: one each, for comparison)"},
			&cli.BoolFlag{Name: "read-merging", Value: true, Usage: "let identical getattr and lookup requests in flight at once share one request to the cluster (false: one each, for comparison)"},
		}, mtls.Flags(true)...),
		Action: runMount,
	}
}

// cacheOptions sets the kernel's cache timeouts of o by --cache-mode
// (checked by checkMount).
func cacheOptions(c *cli.Context, o fuse.Options) fuse.Options {
	switch cacheMode(c) {
	case "timed":
		o.AttrTimeout, o.EntryTimeout = c.Duration("attr-cache"), c.Duration("entry-cache")
		o.DirEntryTimeout, o.NegativeTimeout = c.Duration("dir-entry-cache"), c.Duration("negative-entry-cache")
	case "coherent":
		o.Coherent, o.CacheMax = true, c.Duration("cache-max")
	}
	return o
}

// timedFlags are the durations of --cache-mode timed.
var timedFlags = []string{"attr-cache", "entry-cache", "dir-entry-cache", "negative-entry-cache"}

// cacheMode is --cache-mode, or timed when it is not given but one of the
// timed durations is: a mount line written before coherent caches keeps
// the caching it asked for.
func cacheMode(c *cli.Context) string {
	if !c.IsSet("cache-mode") {
		for _, f := range timedFlags {
			if c.IsSet(f) {
				return "timed"
			}
		}
	}
	return c.String("cache-mode")
}

// mountConfig is what runMount checked.
type mountConfig struct {
	mountPoint string
	servers    []string
	log        hclog.Logger
}

func runMount(c *cli.Context) error {
	var readyFD *os.File
	if s := os.Getenv(readyFDEnv); s != "" {
		fd, err := strconv.Atoi(s)
		if err != nil {
			return fmt.Errorf("%s=%q: not a descriptor", readyFDEnv, s)
		}
		readyFD = os.NewFile(uintptr(fd), "ready")
		os.Unsetenv(readyFDEnv)
	}
	err := mount(c, readyFD)
	if err != nil && readyFD != nil {
		fmt.Fprintf(readyFD, "error: %v\n", err)
		readyFD.Close()
	}
	return err
}

func checkMount(c *cli.Context) (*mountConfig, error) {
	if c.Args().Len() != 1 {
		return nil, errors.New("want exactly one argument, the mount point (see jfs mount --help)")
	}
	if c.String("servers") == "" {
		return nil, errors.New("--servers (or JFS_SERVERS) is required: the API addresses of the cluster's nodes")
	}
	servers, err := client.ParseServers(c.String("servers"))
	if err != nil {
		return nil, fmt.Errorf("--servers: %w", err)
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(mnt)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return nil, fmt.Errorf("mount point %s does not exist", mnt)
	case err != nil:
		return nil, fmt.Errorf("mount point: %w", err)
	case !fi.IsDir():
		return nil, fmt.Errorf("mount point %s is not a directory", mnt)
	}
	switch m := c.String("cache-mode"); m {
	case "coherent", "timed", "off":
	default:
		return nil, fmt.Errorf("--cache-mode %q: want coherent, timed or off", m)
	}
	if m := cacheMode(c); m != "timed" {
		for _, f := range timedFlags {
			if c.IsSet(f) {
				return nil, fmt.Errorf("--%s applies to --cache-mode timed only, not %s", f, m)
			}
		}
	}
	if d := c.Duration("cache-max"); d <= 0 {
		return nil, fmt.Errorf("--cache-max %v: must be positive", d)
	}
	for _, f := range []string{"attr-cache", "entry-cache", "dir-entry-cache", "negative-entry-cache", "retry-for"} {
		if c.Duration(f) < 0 {
			return nil, fmt.Errorf("--%s %v: must not be negative", f, c.Duration(f))
		}
	}
	if m := c.String("metrics"); m != "" {
		if _, _, err := net.SplitHostPort(m); err != nil {
			return nil, fmt.Errorf("--metrics %q: %w", m, err)
		}
	}
	// The cluster takes up to 1024 releases in one request (fsm.MaxReleaseBatch).
	if n := c.Int("release-batch"); n < 1 || n > 1024 {
		return nil, fmt.Errorf("--release-batch %d: want 1 to 1024", n)
	}
	if hclog.LevelFromString(c.String("log-level")) == hclog.NoLevel {
		return nil, fmt.Errorf("--log-level %q: want trace, debug, info, warn or error", c.String("log-level"))
	}
	return &mountConfig{mountPoint: mnt, servers: servers}, nil
}

func mount(c *cli.Context, readyFD *os.File) error {
	mc, err := checkMount(c)
	if err != nil {
		return err
	}
	if c.Bool("background") && readyFD == nil {
		return background(c, mc)
	}
	out := io.Writer(os.Stderr)
	if f := c.String("log-file"); f != "" {
		lf, err := openLog(f)
		if err != nil {
			return err
		}
		defer lf.Close()
		out = lf
	}
	mc.log = hclog.New(&hclog.LoggerOptions{Name: "jfs", Level: hclog.LevelFromString(c.String("log-level")), Output: out})
	return serve(c, mc, readyFD)
}

func openLog(path string) (*os.File, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log file: %w", err)
	}
	return f, nil
}

// background starts this same command again, in the foreground, in a new
// session, and waits for it to report that the file system is mounted.
func background(c *cli.Context, mc *mountConfig) error {
	logPath := c.String("log-file")
	if logPath == "" {
		logPath = "/var/log/jfs.log"
		if os.Geteuid() != 0 {
			home, err := os.UserHomeDir()
			if err != nil {
				return fmt.Errorf("no --log-file and no home directory: %w", err)
			}
			logPath = filepath.Join(home, ".jfs", "jfs.log")
		}
	}
	logf, err := openLog(logPath)
	if err != nil {
		return err
	}
	defer logf.Close()
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	r, w, err := os.Pipe()
	if err != nil {
		return err
	}
	defer r.Close()
	// The same command line that started this process (for mount.jfs, the
	// jfs mount command it stands for), named jfs whatever this file is
	// called.
	cmd := exec.Command(exe, commandLine[1:]...)
	cmd.Args[0] = "jfs"
	cmd.Env = append(os.Environ(), readyFDEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		w.Close()
		return fmt.Errorf("start the mount process: %w", err)
	}
	w.Close()
	msg, _ := io.ReadAll(r) // ends when the child closes its end or exits
	answer := strings.TrimSpace(string(msg))
	switch {
	case answer == "ready":
		fmt.Fprintln(c.App.Writer, cmd.Process.Pid)
		return cmd.Process.Release()
	case strings.HasPrefix(answer, "error: "):
		cmd.Wait()
		return errors.New(strings.TrimPrefix(answer, "error: "))
	}
	cmd.Wait()
	return fmt.Errorf("the mount process exited (%v) before %s was mounted; see %s", cmd.ProcessState, mc.mountPoint, logPath)
}

// serve mounts and serves until the file system is unmounted or a signal
// asks for it.
func serve(c *cli.Context, mc *mountConfig, readyFD *os.File) error {
	log := mc.log
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)

	retryFor := c.Duration("retry-for")
	tlsSrc, err := mtls.FromFlags(c)
	if err != nil {
		return err
	}
	if tlsSrc != nil {
		tlsSrc.OnReload = tlsReloadLogger(log)
		defer tlsSrc.ReloadOnSIGHUP(tlsSrc.OnReload)()
	}
	cl, err := client.New(client.Config{Servers: mc.servers, RetryFor: retryFor, Logger: log, TLS: tlsSrc})
	if err != nil {
		return err
	}
	defer cl.Close()

	ctx, cancel := context.WithTimeout(context.Background(), retryFor+10*time.Second)
	// A signal while the cluster is sought or the file system is being
	// mounted ends the wait; if the mount got far enough to succeed
	// anyway, it is undone at once below (the kernel shows the mount
	// before Mount returns, so a signal can come in between).
	early := make(chan os.Signal, 1)
	watched := make(chan struct{})
	go func() {
		defer close(watched)
		select {
		case s := <-sigs:
			early <- s
			cancel()
		case <-ctx.Done():
		}
	}()
	if !c.Bool("read-merging") {
		cl.SetReadMerging(false)
	}
	m := newMetrics()
	stopMetrics, err := m.serve(c.String("metrics"), c.Bool("pprof"), log)
	if err != nil {
		cancel()
		return err
	}
	defer stopMetrics()
	mounted, err := fuse.Mount(ctx, cl, fuse.MountConfig{
		MountPoint: mc.mountPoint, FsName: "jfs:" + mc.servers[0], Version: Version, Debug: c.Bool("debug-fuse"),
		Options: cacheOptions(c, fuse.Options{
			NoAtime: c.Bool("noatime"), Metrics: m.Metrics, Logger: log, ReleaseBatch: c.Int("release-batch"),
			LockDelegation: c.Bool("lock-delegation"),
		}),
	})
	cancel()
	<-watched // a signal is now either in early or still in sigs
	switch {
	case errors.Is(err, client.ErrNoLeader):
		return fmt.Errorf("cannot reach the jfs cluster at %s: %w", strings.Join(mc.servers, ","), err)
	case err != nil:
		return err
	}
	select {
	case s := <-early:
		log.Info("unmounting: signalled while mounting", "signal", s)
		mounted.Unmount(5 * time.Second)
		return nil
	default:
	}
	log.Info("mounted", "mountpoint", mc.mountPoint, "servers", strings.Join(mc.servers, ","))
	if p := c.String("pid-file"); p != "" {
		if err := writePidFile(p); err != nil {
			mounted.Unmount(5 * time.Second)
			return err
		}
		defer os.Remove(p)
	}
	if readyFD != nil {
		fmt.Fprintln(readyFD, "ready")
		readyFD.Close()
	}
	notify(log, sdnotify.Ready)

	select {
	case <-mounted.Done():
		log.Info("unmounted", "mountpoint", mc.mountPoint)
		notify(log, sdnotify.Stopping)
		mounted.Unmount(0)
	case s := <-sigs:
		log.Info("unmounting", "signal", s)
		notify(log, sdnotify.Stopping)
		mounted.Unmount(5 * time.Second)
	}
	return nil
}

// notify tells systemd the mount's state when it runs as a Type=notify
// service; a failure is logged, not fatal.
func notify(log hclog.Logger, state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		log.Warn("cannot notify the service manager", "state", state, "error", err)
	}
}

// writePidFile writes this process's pid to path, replacing it at once so
// that a reader never sees half a file.
func writePidFile(path string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(strconv.Itoa(os.Getpid())+"\n"), 0o644); err != nil {
		return fmt.Errorf("--pid-file: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("--pid-file: %w", err)
	}
	return nil
}

// metrics serves a mount's metrics (fuse.Metrics, the same that
// MOUNTPOINT/.stats shows) over HTTP.
type metrics struct{ *fuse.Metrics }

func newMetrics() *metrics { return &metrics{fuse.NewMetrics()} }

// serve listens on addr ("" is off); when its port is taken, on a free port
// of the same host. With withPprof it also serves net/http/pprof.
func (m *metrics) serve(addr string, withPprof bool, log hclog.Logger) (stop func(), err error) {
	if addr == "" {
		return func() {}, nil
	}
	l, err := net.Listen("tcp", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		host, _, _ := net.SplitHostPort(addr)
		l, err = net.Listen("tcp", net.JoinHostPort(host, "0"))
		if err == nil {
			log.Warn("metrics address taken; using a free port", "wanted", addr, "addr", l.Addr().String())
		}
	}
	if err != nil {
		return nil, fmt.Errorf("metrics: %w", err)
	}
	log.Info("serving metrics", "addr", "http://"+l.Addr().String()+"/metrics")
	mux := http.NewServeMux()
	mux.Handle("/metrics", m.Handler())
	if withPprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
		log.Info("serving profiles", "addr", "http://"+l.Addr().String()+"/debug/pprof/")
	}
	s := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, ErrorLog: stdLogger(log)}
	go s.Serve(l)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		s.Shutdown(ctx)
	}, nil
}

func stdLogger(l hclog.Logger) *log.Logger {
	return l.StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true})
}

// tlsReloadLogger logs how a reload of the TLS files went.
func tlsReloadLogger(log hclog.Logger) func(error) {
	return func(err error) {
		if err != nil {
			log.Error("TLS files not reloaded; the previous ones stay in use", "error", err)
		} else {
			log.Info("TLS files reloaded")
		}
	}
}
