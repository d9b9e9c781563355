package fuse

import (
	"fmt"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The virtual files at the root of a mount, as in JuiceFS:
//
//   - .accesslog streams the access log (accesslog.go) while it is open;
//   - .stats is the mount's metrics in Prometheus's text format, a fresh
//     snapshot at each open.
//
// They answer lookup and getattr but are not listed by readdir (like
// JuiceFS's), live only in the mount, and have inode numbers far above any
// the cluster hands out. Operations on them are neither logged nor counted.

const (
	accessLogIno uint64 = 0x7FFFFFFF00000001
	statsIno     uint64 = 0x7FFFFFFF00000002
)

var virtualInos = map[string]uint64{".accesslog": accessLogIno, ".stats": statsIno}

func isVirtual(ino uint64) bool { return ino == accessLogIno || ino == statsIno }

// virtualName reports whether name in parent is a virtual file's.
func virtualName(parent uint64, name string) bool {
	_, ok := virtualInos[name]
	return ok && parent == rootIno
}

const rootIno = 1

// virtualTimeout is how long the kernel may cache the virtual files' names
// and attributes: they never change.
const virtualTimeout = time.Hour

// front is the RawFileSystem go-fuse serves: it answers the virtual files,
// writes the access log and counts operations, and hands everything else to
// the FS it embeds.
type front struct {
	*FS
	alog    *accessLog
	metrics *Metrics
	mounted time.Time

	handles sync.Map // fh -> *logReader or []byte (a .stats snapshot)
}

func newFront(fs *FS) *front {
	f := &front{FS: fs, alog: newAccessLog(), metrics: fs.opts.Metrics, mounted: time.Now()}
	fs.c.SetReadObserver(f.metrics)
	return f
}

func (f *front) virtualAttr(ino uint64, out *fuse.Attr) {
	mode := uint32(syscall.S_IFREG | 0o444)
	if ino == accessLogIno {
		mode = syscall.S_IFREG | 0o400
	}
	sec := uint64(f.mounted.Unix())
	*out = fuse.Attr{Ino: ino, Mode: mode, Nlink: 1, Blksize: blockSize,
		Atime: sec, Mtime: sec, Ctime: sec}
}

// done counts an operation: method is the FUSE method, meta the access
// log's name when the operation sent a request to the cluster that the
// client does not count itself ("" otherwise). It returns the duration.
func (f *front) done(method, meta string, start time.Time, st fuse.Status) time.Duration {
	d := time.Since(start)
	f.metrics.observeFuse(method, st, d)
	if meta != "" {
		f.metrics.observeMeta(meta, d)
	}
	return d
}

// ---- names ----

func (f *front) Lookup(cancel <-chan struct{}, h *fuse.InHeader, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	var st fuse.Status
	if virtualName(h.NodeId, name) {
		ino := virtualInos[name]
		*out = fuse.EntryOut{NodeId: ino}
		f.virtualAttr(ino, &out.Attr)
		out.SetEntryTimeout(virtualTimeout)
		out.SetAttrTimeout(virtualTimeout)
	} else {
		st = f.FS.Lookup(cancel, h, name, out)
	}
	d := f.done("Lookup", "", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "lookup", st, "(%d,%s):%s", h.NodeId, name, entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) GetAttr(cancel <-chan struct{}, in *fuse.GetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isVirtual(in.NodeId) {
		f.virtualAttr(in.NodeId, &out.Attr)
		out.SetTimeout(virtualTimeout)
		return fuse.OK
	}
	start := time.Now()
	st := f.FS.GetAttr(cancel, in, out)
	d := f.done("GetAttr", "", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "getattr", st, "(%d):%s", in.NodeId, entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) SetAttr(cancel <-chan struct{}, in *fuse.SetAttrIn, out *fuse.AttrOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	start := time.Now()
	st := f.FS.SetAttr(cancel, in, out)
	d := f.done("SetAttr", "setattr", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "setattr", st, "(%d[%d],0x%X,[%s]):%s", in.NodeId, in.Fh, in.Valid, setattrArgs(in), entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := fuse.Status(syscall.EEXIST)
	if !virtualName(in.NodeId, name) {
		st = f.FS.Mknod(cancel, in, name, out)
	}
	d := f.done("Mknod", "mknod", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "mknod", st, "(%d,%s,%s,0x%08X):%s", in.NodeId, name, argMode(in.Mode), in.Rdev, entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := fuse.Status(syscall.EEXIST)
	if !virtualName(in.NodeId, name) {
		st = f.FS.Mkdir(cancel, in, name, out)
	}
	d := f.done("Mkdir", "mkdir", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "mkdir", st, "(%d,%s,%s):%s", in.NodeId, name, argMode(in.Mode), entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) Unlink(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	start := time.Now()
	st := fuse.EPERM
	if !virtualName(h.NodeId, name) {
		st = f.FS.Unlink(cancel, h, name)
	}
	d := f.done("Unlink", "unlink", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "unlink", st, "(%d,%s)", h.NodeId, name)
	}
	return st
}

func (f *front) Rmdir(cancel <-chan struct{}, h *fuse.InHeader, name string) fuse.Status {
	start := time.Now()
	st := fuse.Status(syscall.ENOTDIR)
	if !virtualName(h.NodeId, name) {
		st = f.FS.Rmdir(cancel, h, name)
	}
	d := f.done("Rmdir", "rmdir", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "rmdir", st, "(%d,%s)", h.NodeId, name)
	}
	return st
}

func (f *front) Rename(cancel <-chan struct{}, in *fuse.RenameIn, oldName, newName string) fuse.Status {
	start := time.Now()
	st := fuse.EPERM
	if !virtualName(in.NodeId, oldName) && !virtualName(in.Newdir, newName) {
		st = f.FS.Rename(cancel, in, oldName, newName)
	}
	d := f.done("Rename", "rename", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "rename", st, "(%d,%s,%d,%s,%d)", in.NodeId, oldName, in.Newdir, newName, in.Flags)
	}
	return st
}

func (f *front) Link(cancel <-chan struct{}, in *fuse.LinkIn, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := fuse.EPERM
	if !isVirtual(in.Oldnodeid) && !virtualName(in.NodeId, name) {
		st = f.FS.Link(cancel, in, name, out)
	}
	d := f.done("Link", "link", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "link", st, "(%d,%d,%s):%s", in.Oldnodeid, in.NodeId, name, entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) Symlink(cancel <-chan struct{}, h *fuse.InHeader, target, name string, out *fuse.EntryOut) fuse.Status {
	start := time.Now()
	st := fuse.Status(syscall.EEXIST)
	if !virtualName(h.NodeId, name) {
		st = f.FS.Symlink(cancel, h, target, name, out)
	}
	d := f.done("Symlink", "symlink", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "symlink", st, "(%d,%s,%s):%s", h.NodeId, name, target, entryDetails(st, &out.Attr))
	}
	return st
}

func (f *front) Readlink(cancel <-chan struct{}, h *fuse.InHeader) ([]byte, fuse.Status) {
	if isVirtual(h.NodeId) {
		return nil, fuse.EINVAL
	}
	start := time.Now()
	target, st := f.FS.Readlink(cancel, h)
	d := f.done("Readlink", "readlink", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "readlink", st, "(%d): (%s)", h.NodeId, string(target))
	}
	return target, st
}

func (f *front) Access(cancel <-chan struct{}, in *fuse.AccessIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.OK
	}
	start := time.Now()
	st := f.FS.Access(cancel, in)
	d := f.done("Access", "", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "access", st, "(%d,0x%X)", in.NodeId, in.Mask)
	}
	return st
}

func (f *front) StatFs(cancel <-chan struct{}, h *fuse.InHeader, out *fuse.StatfsOut) fuse.Status {
	start := time.Now()
	st := f.FS.StatFs(cancel, h, out)
	d := f.done("StatFs", "statfs", start, st)
	if f.alog.active() {
		total, avail := out.Blocks*uint64(out.Bsize), out.Bavail*uint64(out.Bsize)
		f.alog.add(start, d, &h.Caller, "statfs", st, "(%d): (%d,%d,%d,%d)", h.NodeId, total-avail, avail, out.Files-out.Ffree, out.Ffree)
	}
	return st
}

// ---- extended attributes ----

func (f *front) GetXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string, dest []byte) (uint32, fuse.Status) {
	if isVirtual(h.NodeId) {
		return 0, fuse.ENODATA
	}
	start := time.Now()
	n, st := f.FS.GetXAttr(cancel, h, attr, dest)
	d := f.done("GetXAttr", "getxattr", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "getxattr", st, "(%d,%s,%d): (%d)", h.NodeId, attr, len(dest), n)
	}
	return n, st
}

func (f *front) ListXAttr(cancel <-chan struct{}, h *fuse.InHeader, dest []byte) (uint32, fuse.Status) {
	if isVirtual(h.NodeId) {
		return 0, fuse.OK
	}
	start := time.Now()
	n, st := f.FS.ListXAttr(cancel, h, dest)
	d := f.done("ListXAttr", "listxattr", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "listxattr", st, "(%d,%d): (%d)", h.NodeId, len(dest), n)
	}
	return n, st
}

func (f *front) SetXAttr(cancel <-chan struct{}, in *fuse.SetXAttrIn, attr string, data []byte) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	start := time.Now()
	st := f.FS.SetXAttr(cancel, in, attr, data)
	d := f.done("SetXAttr", "setxattr", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "setxattr", st, "(%d,%s,%d,%d)", in.NodeId, attr, len(data), in.Flags)
	}
	return st
}

func (f *front) RemoveXAttr(cancel <-chan struct{}, h *fuse.InHeader, attr string) fuse.Status {
	if isVirtual(h.NodeId) {
		return fuse.EPERM
	}
	start := time.Now()
	st := f.FS.RemoveXAttr(cancel, h, attr)
	d := f.done("RemoveXAttr", "removexattr", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &h.Caller, "removexattr", st, "(%d,%s)", h.NodeId, attr)
	}
	return st
}

// ---- files ----

func (f *front) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	start := time.Now()
	st := fuse.Status(syscall.EEXIST)
	if !virtualName(in.NodeId, name) {
		st = f.FS.Create(cancel, in, name, out)
	}
	d := f.done("Create", "create", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "create", st, "(%d,%s,%s):%s [fh:%d]", in.NodeId, name, argMode(in.Mode), entryDetails(st, &out.Attr), out.Fh)
	}
	return st
}

func (f *front) Tmpfile(cancel <-chan struct{}, in *fuse.CreateIn, out *fuse.CreateOut) fuse.Status {
	start := time.Now()
	st := f.FS.Tmpfile(cancel, in, out)
	d := f.done("Tmpfile", "tmpfile", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "tmpfile", st, "(%d,%s):%s [fh:%d]", in.NodeId, argMode(in.Mode), entryDetails(st, &out.Attr), out.Fh)
	}
	return st
}

func (f *front) Open(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return f.openVirtual(in, out)
	}
	start := time.Now()
	st := f.FS.Open(cancel, in, out)
	d := f.done("Open", "open", start, st)
	if f.alog.active() {
		if st.Ok() {
			f.alog.add(start, d, &in.Caller, "open", st, "(%d,%#x) [fh:%d]", in.NodeId, in.Flags, out.Fh)
		} else {
			f.alog.add(start, d, &in.Caller, "open", st, "(%d,%#x)", in.NodeId, in.Flags)
		}
	}
	return st
}

func (f *front) Read(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	if isVirtual(in.NodeId) {
		return f.readVirtual(cancel, in, buf)
	}
	start := time.Now()
	res, st := f.FS.Read(cancel, in, buf)
	d := f.done("Read", "read", start, st)
	if f.alog.active() {
		n := 0
		if st.Ok() {
			n = res.Size()
		}
		f.alog.add(start, d, &in.Caller, "read", st, "(%d,%d,%d,%d): (%d)", in.NodeId, in.Size, in.Offset, in.Fh, n)
	}
	return res, st
}

func (f *front) Write(cancel <-chan struct{}, in *fuse.WriteIn, data []byte) (uint32, fuse.Status) {
	if isVirtual(in.NodeId) {
		return 0, fuse.EPERM
	}
	start := time.Now()
	n, st := f.FS.Write(cancel, in, data)
	d := f.done("Write", "write", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "write", st, "(%d,%d,%d,%d)", in.NodeId, len(data), in.Offset, in.Fh)
	}
	return n, st
}

func (f *front) Fallocate(cancel <-chan struct{}, in *fuse.FallocateIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EPERM
	}
	start := time.Now()
	st := f.FS.Fallocate(cancel, in)
	d := f.done("Fallocate", "fallocate", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "fallocate", st, "(%d,%d,%d,%d)", in.NodeId, in.Mode, in.Offset, in.Length)
	}
	return st
}

func (f *front) Flush(cancel <-chan struct{}, in *fuse.FlushIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.OK
	}
	start := time.Now()
	st := f.FS.Flush(cancel, in)
	d := f.done("Flush", "", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "flush", st, "(%d,%d,%016X)", in.NodeId, in.Fh, in.LockOwner)
	}
	return st
}

func (f *front) Fsync(cancel <-chan struct{}, in *fuse.FsyncIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.OK
	}
	start := time.Now()
	st := f.FS.Fsync(cancel, in)
	d := f.done("Fsync", "", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "fsync", st, "(%d,%d)", in.NodeId, in.FsyncFlags)
	}
	return st
}

func (f *front) Release(cancel <-chan struct{}, in *fuse.ReleaseIn) {
	if isVirtual(in.NodeId) {
		f.releaseVirtual(in)
		return
	}
	start := time.Now()
	f.FS.Release(cancel, in)
	// The request to the cluster is counted when it is sent (sendRelease).
	d := f.done("Release", "", start, fuse.OK)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "release", fuse.OK, "(%d,%d)", in.NodeId, in.Fh)
	}
}

// ---- directories ----

func (f *front) OpenDir(cancel <-chan struct{}, in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.ENOTDIR
	}
	start := time.Now()
	st := f.FS.OpenDir(cancel, in, out)
	d := f.done("OpenDir", "", start, st) // its getattr is counted by the client
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "opendir", st, "(%d) [fh:%d]", in.NodeId, out.Fh)
	}
	return st
}

func (f *front) ReadDir(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	start := time.Now()
	n, st := f.FS.listDir(in, out, false)
	d := f.done("ReadDir", "readdir", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "readdir", st, "(%d,%d,%d,%t): (%d)", in.NodeId, in.Size, in.Offset, false, n)
	}
	return st
}

func (f *front) ReadDirPlus(cancel <-chan struct{}, in *fuse.ReadIn, out *fuse.DirEntryList) fuse.Status {
	start := time.Now()
	n, st := f.FS.listDir(in, out, true)
	d := f.done("ReadDirPlus", "readdir", start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "readdir", st, "(%d,%d,%d,%t): (%d)", in.NodeId, in.Size, in.Offset, true, n)
	}
	return st
}

func (f *front) ReleaseDir(in *fuse.ReleaseIn) {
	start := time.Now()
	f.FS.ReleaseDir(in)
	d := f.done("ReleaseDir", "", start, fuse.OK)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, "releasedir", fuse.OK, "(%d)", in.NodeId)
	}
}

// ---- locks ----

// lockOp is the access log's name of a lock request: flock or setlk.
func lockOp(in *fuse.LkIn) string {
	if in.LkFlags&fuse.FUSE_LK_FLOCK != 0 {
		return "flock"
	}
	return "setlk"
}

// lockArgs are a lock request's arguments in the access log, as JuiceFS
// writes them: (ino, fh, owner, LOCKSH|LOCKEX|UNLOCK, block) for flock,
// (ino, fh, owner, start, end, type, block, pid) for setlk.
func lockArgs(in *fuse.LkIn, block bool) string {
	if in.LkFlags&fuse.FUSE_LK_FLOCK != 0 {
		return fmt.Sprintf("(%d,%d,%016X,%s,%t)", in.NodeId, in.Fh, in.Owner, flockName(in.Lk.Typ), block)
	}
	return fmt.Sprintf("(%d,%d,%016X,%d,%d,%s,%t,%d)", in.NodeId, in.Fh, in.Owner, in.Lk.Start, in.Lk.End, lockType(in.Lk.Typ), block, in.Lk.Pid)
}

// lockType is a POSIX lock type in the access log: R, W, U, or X for
// anything else.
func lockType(t uint32) string {
	switch t {
	case syscall.F_RDLCK:
		return "R"
	case syscall.F_WRLCK:
		return "W"
	case syscall.F_UNLCK:
		return "U"
	}
	return "X"
}

// flockName is an flock request's type in the access log.
func flockName(t uint32) string {
	switch t {
	case syscall.F_RDLCK:
		return "LOCKSH"
	case syscall.F_WRLCK:
		return "LOCKEX"
	case syscall.F_UNLCK:
		return "UNLOCK"
	}
	return "X"
}

// setattrArgs lists what a setattr changes, as JuiceFS writes it:
// "mode=-rw-r--r--:00644,uid=1,gid=2,atime=NOW,mtime=5,size=0".
func setattrArgs(in *fuse.SetAttrIn) string {
	var parts []string
	if in.Valid&fuse.FATTR_MODE != 0 {
		parts = append(parts, fmt.Sprintf("mode=%s:0%04o", modeString(in.Mode), in.Mode&0o7777))
	}
	if in.Valid&fuse.FATTR_UID != 0 {
		parts = append(parts, fmt.Sprintf("uid=%d", in.Uid))
	}
	if in.Valid&fuse.FATTR_GID != 0 {
		parts = append(parts, fmt.Sprintf("gid=%d", in.Gid))
	}
	switch {
	case in.Valid&fuse.FATTR_ATIME_NOW != 0:
		parts = append(parts, "atime=NOW")
	case in.Valid&fuse.FATTR_ATIME != 0:
		parts = append(parts, fmt.Sprintf("atime=%d", in.Atime))
	}
	switch {
	case in.Valid&fuse.FATTR_MTIME_NOW != 0:
		parts = append(parts, "mtime=NOW")
	case in.Valid&fuse.FATTR_MTIME != 0:
		parts = append(parts, fmt.Sprintf("mtime=%d", in.Mtime))
	}
	if in.Valid&fuse.FATTR_SIZE != 0 {
		parts = append(parts, fmt.Sprintf("size=%d", in.Size))
	}
	return strings.Join(parts, ",")
}

func (f *front) GetLk(cancel <-chan struct{}, in *fuse.LkIn, out *fuse.LkOut) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EINVAL
	}
	start := time.Now()
	st := f.FS.GetLk(cancel, in, out)
	d := f.done("GetLk", "getlk", start, st)
	if f.alog.active() {
		lk := in.Lk
		if st.Ok() {
			lk = out.Lk
		}
		f.alog.add(start, d, &in.Caller, "getlk", st, "(%d,%d,%016X): (%d,%d,%s,%d)", in.NodeId, in.Fh, in.Owner, lk.Start, lk.End, lockType(lk.Typ), lk.Pid)
	}
	return st
}

func (f *front) SetLk(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EINVAL
	}
	start := time.Now()
	st := f.FS.SetLk(cancel, in)
	op := lockOp(in)
	d := f.done("SetLk", op, start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, op, st, "%s", lockArgs(in, false))
	}
	return st
}

func (f *front) SetLkw(cancel <-chan struct{}, in *fuse.LkIn) fuse.Status {
	if isVirtual(in.NodeId) {
		return fuse.EINVAL
	}
	start := time.Now()
	st := f.FS.SetLkw(cancel, in)
	op := lockOp(in)
	d := f.done("SetLkw", op, start, st)
	if f.alog.active() {
		f.alog.add(start, d, &in.Caller, op, st, "%s", lockArgs(in, true))
	}
	return st
}

// ---- the virtual files' contents ----

func (f *front) openVirtual(in *fuse.OpenIn, out *fuse.OpenOut) fuse.Status {
	if in.Flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return fuse.EACCES
	}
	fh := f.nextFh.Add(1)
	*out = fuse.OpenOut{Fh: fh, OpenFlags: fuse.FOPEN_DIRECT_IO}
	switch in.NodeId {
	case accessLogIno:
		f.handles.Store(fh, f.alog.open())
		out.OpenFlags |= fuse.FOPEN_NONSEEKABLE
	case statsIno:
		text, err := f.metrics.Text()
		if err != nil {
			f.FS.log.Warn("gathering metrics for .stats", "error", err)
		}
		f.handles.Store(fh, text)
	}
	return fuse.OK
}

func (f *front) readVirtual(cancel <-chan struct{}, in *fuse.ReadIn, buf []byte) (fuse.ReadResult, fuse.Status) {
	h, ok := f.handles.Load(in.Fh)
	if !ok {
		return nil, fuse.EBADF
	}
	switch h := h.(type) {
	case *logReader:
		n, st := h.read(cancel, buf)
		return fuse.ReadResultData(buf[:n]), st
	case []byte:
		if in.Offset >= uint64(len(h)) {
			return fuse.ReadResultData(nil), fuse.OK
		}
		return fuse.ReadResultData(h[in.Offset:min(uint64(len(h)), in.Offset+uint64(in.Size))]), fuse.OK
	}
	return nil, fuse.EBADF
}

func (f *front) releaseVirtual(in *fuse.ReleaseIn) {
	h, ok := f.handles.LoadAndDelete(in.Fh)
	if !ok {
		return
	}
	if r, ok := h.(*logReader); ok {
		f.alog.close(r)
		if n := r.dropped.Load(); n > 0 {
			f.FS.log.Info("an .accesslog reader fell behind; lines were dropped for it", "dropped", n)
		}
	}
}
