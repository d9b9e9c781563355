// Package fuse is the FUSE file system of a jfs mount. It converts each
// kernel request into one or a few calls of the jfs client and converts the
// answer back; it keeps no metadata of its own, and no file data but the
// writes it has not sent yet (writeback.go), which it sends before anything
// on the mount could miss them, so what a mount shows is what the cluster
// holds plus its own writes (see DESIGN.md).
package fuse

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hashicorp/go-hclog"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// Options configures an FS.
type Options struct {
	// AttrTimeout is how long the kernel may cache attributes; 0 makes it
	// ask for them on every use.
	AttrTimeout time.Duration
	// EntryTimeout is how long the kernel may cache a name that resolves to
	// a non-directory, DirEntryTimeout one that resolves to a directory.
	EntryTimeout, DirEntryTimeout time.Duration
	// NegativeTimeout is how long the kernel may remember that a name does
	// not exist.
	NegativeTimeout time.Duration
	// Coherent asks the leader for cache grants (coherent.go): a granted
	// lookup or getattr is cached by the kernel until the session's lease
	// ends, at most CacheMax (default 1m); anything else is cached for the
	// timeouts above, which coherent mode sets to 0. The mount must run
	// RunCaches, and Session must be a Lease (client.Session is).
	Coherent bool
	CacheMax time.Duration
	// NoAtime turns access-time updates off (mount -o noatime); by
	// default reads update them under relatime (atime.go).
	NoAtime bool
	// Session, when set, is the mount's session. Files opened under a
	// session the cluster has since ended fail every operation with EIO
	// (their opens and locks are gone); files opened later work under the
	// new session.
	Session Session
	// ReleaseBatch is the most plain releases (closes that free no lock)
	// sent in one request (0: 256; 1: one each, as the kernel sends them).
	ReleaseBatch int
	// LockDelegation lets the cluster delegate an inode's locks to this
	// mount while no other session uses them (delegated.go). It needs a
	// Session with a lease (client.Session).
	LockDelegation bool
	// Observer, when set, is told about every operation.
	Observer Observer
	// Metrics counts operations (see metrics.go); nil: New makes them.
	Metrics *Metrics
	Logger  hclog.Logger
}

// Session is the part of client.Session the file system looks at: the id
// requests are sent under now.
type Session interface {
	ID() uint64
}

// Observer receives the method name (as in RawFileSystem), result and
// duration of every operation. It is called concurrently.
type Observer interface {
	Observe(method string, st fuse.Status, d time.Duration)
}

// FS implements fuse.RawFileSystem on a jfs client. The cluster's inode
// numbers are the FUSE node ids (the root is 1 in both). Its methods are
// called concurrently by the go-fuse server.
type FS struct {
	fuse.RawFileSystem

	c    *client.Client
	opts Options
	log  hclog.Logger

	server atomic.Pointer[fuse.Server] // set by Init, for notifications

	// nextFh numbers open files; the number is also the flock owner.
	nextFh atomic.Uint64

	// owners records who took record locks through which open file, so
	// that a close (FLUSH) without locks costs no request and the last close
	// of an open file drops its OFD locks (owners.go).
	owners *lockOwners

	// releases sends RELEASE requests off the kernel's path (release.go).
	releases *releaser[pendingRelease]

	// handles maps an open file's fh to its openFile: the session it was
	// opened under and the inode. A new leader asks for them (OpenFiles).
	handles sync.Map
	// creating counts the creates in flight, whose handles OpenFiles
	// cannot list yet.
	creating atomic.Int64

	// ended holds the sessions a buffered write was refused for (ESTALE):
	// the cluster ended them, which the session keeper may not have
	// noticed yet.
	ended sync.Map

	// touching holds the inodes whose atime update is in flight (atime.go).
	touching sync.Map

	// dirs are the directories open on the mount (opendirs.go).
	dirs openDirs

	// creds are the callers' credentials by pid, fhCreds the openers' by
	// open file (fh -> *jfspb.Cred; creds.go).
	creds   *credCache
	fhCreds sync.Map

	// wb buffers writes until close, fsync, a lock call or a read of the
	// file (writeback.go).
	wb *writeBack

	// coh keeps the coherent caches (coherent.go); nil unless Coherent.
	coh *coherent
	// pages holds, in coherent mode, each inode's data version at its
	// last open on this mount (pages.go): an open that finds it unchanged
	// keeps the kernel's page cache.
	pages dataVersions
	// deleg holds the inodes whose locks are delegated to this mount
	// (delegated.go); nil without Options.LockDelegation.
	deleg *delegTable
}

type plockKey struct{ ino, owner uint64 }

var _ fuse.RawFileSystem = (*FS)(nil)

// New returns the file system of the cluster behind c. c must have a
// registered session (see client.Client.StartSession).
func New(c *client.Client, opts Options) *FS {
	if opts.Logger == nil {
		opts.Logger = hclog.NewNullLogger()
	}
	if opts.Metrics == nil {
		opts.Metrics = NewMetrics()
	}
	fs := &FS{
		RawFileSystem: fuse.NewDefaultRawFileSystem(),
		c:             c, opts: opts, log: opts.Logger.Named("fuse"),
		owners: newLockOwners(),
		creds:  newCredCache(),
	}
	fs.releases = newReleaser(fs.sendRelease, fs.sendReleases, opts.ReleaseBatch)
	fs.wb = newWriteBack(fs.sendBuffered)
	if opts.Coherent {
		fs.coh = newCoherent(fs, opts.CacheMax)
	}
	if l, ok := opts.Session.(leaser); ok && opts.LockDelegation {
		fs.deleg = newDelegTable(fs, l)
	}
	return fs
}

// NewServer mounts fs at mountPoint with opts, adding what fs needs:
// locks forwarded to it, O_TRUNC passed to Open, and shared mmap allowed
// on the files opened for direct I/O (O_APPEND, see Open). The server also
// answers .accesslog and .stats, writes the access log and counts
// operations (special.go). The caller serves the returned server (Serve)
// and unmounts it.
func (fs *FS) NewServer(mountPoint string, opts fuse.MountOptions) (*fuse.Server, error) {
	opts.EnableLocks = true
	opts.ExtraCapabilities |= fuse.CAP_ATOMIC_O_TRUNC | fuse.CAP_DIRECT_IO_ALLOW_MMAP
	return fuse.NewServer(newFront(fs), mountPoint, &opts)
}

// String names the file system.
func (fs *FS) String() string { return "jfs" }

// Init keeps the server for inode notifications.
func (fs *FS) Init(s *fuse.Server) { fs.server.Store(s) }

// status is the one place where results become errnos: a client error, or
// else a response's errno. A file-system errno passes through; an
// interrupted call is EINTR; the cluster being unreachable, an expired
// session and anything unknown are EIO, and are logged.
func (fs *FS) status(op string, err error, errno int32) fuse.Status {
	if err == nil {
		if errno == 0 {
			return fuse.OK
		}
		err = client.Errno(errno)
	}
	var e syscall.Errno
	switch {
	case errors.As(err, &e) && e == syscall.ESTALE:
		// The cluster ended the session the request was sent under; the
		// session keeper registers a new one.
		fs.log.Error("request refused: its session was ended by the cluster", "op", op)
		return fuse.EIO
	case errors.As(err, &e):
		return fuse.Status(e)
	case errors.Is(err, context.Canceled):
		return fuse.EINTR
	case errors.Is(err, client.ErrNoLeader):
		fs.log.Error("cluster unreachable", "op", op, "error", err)
	default:
		fs.log.Error("request failed", "op", op, "error", err)
	}
	return fuse.EIO
}

// byIno is status for a request that names an inode by number alone: when
// the inode is gone, ENOENT becomes ESTALE. The kernel then looks the path
// up again instead of failing on a name it cached before another mount
// removed it (the way NFS does); stat(2), open(2) and their kin retry once.
func (fs *FS) byIno(op string, err error, errno int32) fuse.Status {
	st := fs.status(op, err, errno)
	if st == fuse.ENOENT {
		return fuse.Status(syscall.ESTALE)
	}
	return st
}

// opened records that fh was opened under session sid: the session the
// open request carried, which the cluster recorded the open under. Reading
// the session's current id after the request instead would tag an open that
// raced with a renewal with the wrong session.
func (fs *FS) opened(fh, sid, ino uint64) {
	if fs.opts.Session != nil {
		fs.handles.Store(fh, openFile{sid, ino})
	}
}

// sessionOf is the session fh was opened under, 0 if unknown.
func (fs *FS) sessionOf(fh uint64) uint64 {
	f, _ := fs.handles.Load(fh)
	o, _ := f.(openFile)
	return o.session
}

// openFile is an open file of the mount: the session it was opened under
// and its inode.
type openFile struct{ session, ino uint64 }

// OpenFiles lists the files open under session sid, for a leader that has
// just taken office (client.Session.SetOpenFiles): the leader keeps open
// files in memory only, and frees an unlinked file once no session has it
// open. complete is false while a create is in flight: its handle, whose
// inode is not known yet, is missing from the list.
func (fs *FS) OpenFiles(sid uint64) (handles []*jfspb.OpenHandle, complete bool) {
	complete = fs.creating.Load() == 0
	var out []*jfspb.OpenHandle
	fs.handles.Range(func(k, v any) bool {
		if f := v.(openFile); f.session == sid {
			out = append(out, &jfspb.OpenHandle{Fh: k.(uint64), Ino: f.ino})
		}
		return true
	})
	return out, complete
}

// live fails an operation on a file opened under a session the cluster has
// since ended: the file's open and its locks are gone, and the process must
// not go on as if it held them.
func (fs *FS) live(op string, fh uint64) fuse.Status {
	s := fs.opts.Session
	if s == nil {
		return fuse.OK
	}
	f, ok := fs.handles.Load(fh)
	if !ok {
		return fuse.OK
	}
	sid := f.(openFile).session
	_, gone := fs.ended.Load(sid)
	if gone || sid != s.ID() {
		fs.log.Warn("file opened under an ended session", "op", op, "fh", fh, "session", sid)
		return fuse.EIO
	}
	return fuse.OK
}

// invalidateAttr drops the kernel's cached attributes of ino, keeping its
// cached data. Unlike invalidate it locks no page, so it may be called
// while the kernel waits for a write or fallocate of ino.
func (fs *FS) invalidateAttr(ino uint64) {
	s := fs.server.Load()
	if s == nil {
		return
	}
	if st := s.InodeNotify(ino, -1, 0); !st.Ok() && st != fuse.ENOENT {
		fs.log.Warn("dropping the kernel's attributes failed", "ino", ino, "status", st)
	}
}

// observe reports an operation to the Observer; use as
// defer fs.observe("Lookup", time.Now(), &st).
func (fs *FS) observe(method string, start time.Time, st *fuse.Status) {
	if o := fs.opts.Observer; o != nil {
		o.Observe(method, *st, time.Since(start))
	}
}

// ctx is the context of a request. Interrupts are not passed on: an
// interrupted change may still be applied, and saying EINTR would then be
// wrong. Only the wait of a blocking lock honours them (see SetLkw).
func ctx() context.Context { return context.Background() }

// blockSize is the st_blksize reported, the preferred I/O size.
const blockSize = 1 << 16

func fillAttr(a *jfspb.Attr, out *fuse.Attr) {
	*out = fuse.Attr{
		Ino: a.GetIno(), Size: a.GetSize(), Blocks: a.GetBlocks(),
		Mode: a.GetMode(), Nlink: a.GetNlink(), Rdev: a.GetRdev(),
		Owner:   fuse.Owner{Uid: a.GetUid(), Gid: a.GetGid()},
		Blksize: blockSize,
	}
	out.Atime, out.Atimensec = splitNs(a.GetAtimeNs())
	out.Mtime, out.Mtimensec = splitNs(a.GetMtimeNs())
	out.Ctime, out.Ctimensec = splitNs(a.GetCtimeNs())
}

func splitNs(ns int64) (uint64, uint32) {
	sec, nsec := ns/1e9, ns%1e9
	if nsec < 0 {
		sec, nsec = sec-1, nsec+1e9
	}
	return uint64(sec), uint32(nsec)
}

// fillEntry answers a lookup (or a create) of a with the configured
// timeouts. The attributes of an inode with writes buffered on this mount
// do not include them, so the kernel may not keep them: its next stat or
// read past the size they give asks GetAttr, which sends the writes first.
func (fs *FS) fillEntry(a *jfspb.Attr, out *fuse.EntryOut) {
	out.NodeId = a.GetIno()
	out.Generation = 0
	fillAttr(a, &out.Attr)
	if a.GetMode()&syscall.S_IFMT == syscall.S_IFDIR {
		out.SetEntryTimeout(fs.opts.DirEntryTimeout)
	} else {
		out.SetEntryTimeout(fs.opts.EntryTimeout)
	}
	out.SetAttrTimeout(fs.opts.AttrTimeout)
	if fs.wb.buffered(a.GetIno()) {
		out.SetAttrTimeout(0)
	}
}

func (fs *FS) fillAttrOut(a *jfspb.Attr, out *fuse.AttrOut) {
	fillAttr(a, &out.Attr)
	out.SetTimeout(fs.opts.AttrTimeout)
}
