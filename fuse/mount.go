package fuse

import (
	"context"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hashicorp/go-hclog"

	"github.com/jfs-dev/jfs/client"
)

// mountName names the FUSE file system: the mount table shows a jfs mount's
// type as fuse.jfs (go-fuse mounts with that type, or passes subtype=jfs to
// fusermount), and jfs bench recognizes jfs mounts by it.
const mountName = "jfs"

// MountConfig describes a mount of the cluster behind a client.
type MountConfig struct {
	MountPoint string
	// FsName is shown in the mount table and by df.
	FsName string
	// Version is reported with the session.
	Version string
	// Options configures the file system; Session is filled in by Mount.
	Options Options
	// Debug logs every FUSE request.
	Debug bool
}

// Mounted is a live mount: a session with the cluster and a FUSE server.
type Mounted struct {
	cfg    MountConfig
	fs     *FS
	srv    *fuse.Server
	sess   *client.Session
	served chan struct{}
	// stopCaches ends the coherent caches' stream (RunCaches), which
	// closes cachesDone; nil before the mount is served.
	stopCaches context.CancelFunc
	cachesDone chan struct{}
	log        hclog.Logger
	// stopRecalls ends the delegation recall stream (delegated.go).
	stopRecalls context.CancelFunc
}

// Mount opens a session for c, mounts the file system at cfg.MountPoint and
// serves it in the background. It fails with client.ErrNoLeader when the
// cluster cannot be reached within c's retry window (or ctx).
func Mount(ctx context.Context, c *client.Client, cfg MountConfig) (*Mounted, error) {
	log := cfg.Options.Logger
	if log == nil {
		log = hclog.NewNullLogger()
	}
	host, _ := os.Hostname()
	if cfg.Options.Coherent {
		c.SetCoherent(true)
	}
	sess, err := c.StartSession(ctx, client.SessionInfo{Host: host, MountPoint: cfg.MountPoint, Pid: uint32(os.Getpid()), Version: cfg.Version})
	if err != nil {
		return nil, err
	}
	log.Info("session opened", "session", sess.ID(), "ttl", sess.TTL())
	m := &Mounted{cfg: cfg, sess: sess, served: make(chan struct{}), log: log}
	opts := cfg.Options
	opts.Session = sess
	m.fs = New(c, opts)
	sess.SetOpenFiles(m.fs.OpenFiles)
	var rctx context.Context
	rctx, m.stopRecalls = context.WithCancel(context.Background())
	if m.fs.deleg != nil {
		go m.fs.deleg.run(rctx)
	}
	root := os.Geteuid() == 0
	m.srv, err = m.fs.NewServer(cfg.MountPoint, fuse.MountOptions{
		FsName:      cfg.FsName,
		Name:        mountName,
		Options:     []string{"default_permissions"},
		AllowOther:  root,
		DirectMount: root,
		MaxWrite:    client.MaxDataRequest,
		Debug:       cfg.Debug,
		Logger:      log.Named("go-fuse").StandardLogger(&hclog.StandardLoggerOptions{InferLevels: true}),
	})
	if err != nil {
		m.closeSession()
		return nil, fmt.Errorf("mount %s: %w", cfg.MountPoint, err)
	}
	go func() {
		m.srv.Serve()
		close(m.served)
	}()
	if err := m.srv.WaitMount(); err != nil {
		m.closeSession()
		return nil, fmt.Errorf("mount %s: %w", cfg.MountPoint, err)
	}
	var cctx context.Context
	cctx, m.stopCaches = context.WithCancel(context.Background())
	m.cachesDone = make(chan struct{})
	go func() {
		defer close(m.cachesDone)
		m.fs.RunCaches(cctx)
	}()
	return m, nil
}

// Session is the mount's session keeper.
func (m *Mounted) Session() *client.Session { return m.sess }

// FS is the mounted file system.
func (m *Mounted) FS() *FS { return m.fs }

// Done is closed when the file system is unmounted (by Unmount or from
// outside, e.g. umount(8)).
func (m *Mounted) Done() <-chan struct{} { return m.served }

// Unmount unmounts (detaching the mount point if it is busy: open files on
// it then fail), waits up to wait for the server to stop, and closes the
// session, which releases this mount's locks and open files in the cluster.
func (m *Mounted) Unmount(wait time.Duration) {
	select {
	case <-m.served: // already unmounted from outside
		m.closeSession()
		return
	default:
	}
	if err := m.srv.Unmount(); err != nil {
		m.log.Warn("mount point busy; detaching it", "error", err)
		if err := syscall.Unmount(m.cfg.MountPoint, syscall.MNT_DETACH); err != nil && !errors.Is(err, syscall.EINVAL) {
			m.log.Error("detaching the mount point", "error", err)
		}
	}
	select {
	case <-m.served:
	case <-time.After(wait):
		m.log.Warn("files still open on the detached mount; they fail from now on")
	}
	m.closeSession()
}

// closeSession sends what the mount still buffers (files left open on a
// detached mount), then ends the session.
func (m *Mounted) closeSession() {
	if m.stopCaches != nil {
		m.stopCaches()
		<-m.cachesDone
	}
	m.stopRecalls()
	m.fs.wb.syncAll()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := m.sess.Close(ctx); err != nil {
		m.log.Warn("closing the session", "error", err)
	}
	m.log.Info("session closed", "session", m.sess.ID())
}
