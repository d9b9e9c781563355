package fsm

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// The kernel test runs random permission scenarios twice: on a directory of
// the local file system, where helper processes running as other users
// (this test binary, re-executed with their uid, gid and groups) make the
// system calls, and on a state machine, with the same users' credentials in
// the requests. Every answer and the owners and modes afterwards must be
// the same: the state machine checks as the kernel does.

var (
	accessSeed   = flag.Uint64("access.seed", 0, "replay only this seed in TestAccessAgainstKernel")
	accessTrials = flag.Int("access.trials", 400, "scenarios per seed in TestAccessAgainstKernel")
)

// accessHelperEnv marks a process started as a permission helper.
const accessHelperEnv = "FSM_ACCESS_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(accessHelperEnv) == "1" {
		if err := serveAccess(os.Stdin, os.Stdout); err != nil {
			fmt.Fprintln(os.Stderr, "access helper:", err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// serveAccess is the helper: one system call per line of in, answered by
// its errno (0 for success) on one line of out.
//
//	open PATH FLAGS | chmod PATH MODE | chown PATH UID GID (-1 keeps)
//	utimes-now PATH | utimes PATH | truncate PATH | write PATH
//	unlink PATH | rmdir PATH | mkdir PATH | create PATH
//	rename OLD NEW | link OLD NEW | symlink PATH
//	setxattr PATH NAME | getxattr PATH NAME | stat PATH
func serveAccess(in io.Reader, out io.Writer) error {
	w := bufio.NewWriter(out)
	sc := bufio.NewScanner(in)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		num := func(i int) int {
			v, _ := strconv.Atoi(f[i])
			return v
		}
		var err error
		switch f[0] {
		case "open":
			var fd int
			if fd, err = syscall.Open(f[1], num(2), 0); err == nil {
				syscall.Close(fd)
			}
		case "chmod":
			err = syscall.Chmod(f[1], uint32(num(2)))
		case "chown":
			err = syscall.Chown(f[1], num(2), num(3))
		case "utimes-now":
			err = syscall.UtimesNano(f[1], []syscall.Timespec{{Nsec: 1<<30 - 1}, {Nsec: 1<<30 - 1}}) // UTIME_NOW
		case "utimes":
			err = syscall.UtimesNano(f[1], []syscall.Timespec{{Sec: 1000}, {Sec: 2000}})
		case "truncate":
			err = syscall.Truncate(f[1], 0)
		case "write":
			var fd int
			if fd, err = syscall.Open(f[1], syscall.O_WRONLY, 0); err == nil {
				_, err = syscall.Write(fd, []byte("x"))
				syscall.Close(fd)
			}
		case "unlink":
			err = syscall.Unlink(f[1])
		case "rmdir":
			err = syscall.Rmdir(f[1])
		case "mkdir":
			err = syscall.Mkdir(f[1], 0o755)
		case "create":
			var fd int
			if fd, err = syscall.Open(f[1], syscall.O_CREAT|syscall.O_EXCL|syscall.O_WRONLY, 0o644); err == nil {
				syscall.Close(fd)
			}
		case "rename":
			err = syscall.Rename(f[1], f[2])
		case "link":
			err = syscall.Link(f[1], f[2])
		case "symlink":
			err = syscall.Symlink("target", f[1])
		case "setxattr":
			err = syscall.Setxattr(f[1], f[2], []byte("v"), 0)
		case "getxattr":
			_, err = syscall.Getxattr(f[1], f[2], make([]byte, 64))
		case "stat":
			var st syscall.Stat_t
			err = syscall.Lstat(f[1], &st)
		default:
			return fmt.Errorf("unknown command %q", sc.Text())
		}
		var e syscall.Errno
		if err != nil && !errors.As(err, &e) {
			return fmt.Errorf("%q: %v", sc.Text(), err)
		}
		fmt.Fprintln(w, int(e))
		if err := w.Flush(); err != nil {
			return err
		}
	}
	return sc.Err()
}

// accessUser is one identity of the scenarios.
type accessUser struct {
	name string
	cred *jfspb.Cred
}

var accessUsers = []accessUser{
	{"root", &jfspb.Cred{}},
	{"owner", &jfspb.Cred{Uid: 1000, Gid: 1000}},
	{"member", &jfspb.Cred{Uid: 1001, Gid: 1001, Groups: []uint32{1000}}},
	{"other", &jfspb.Cred{Uid: 1002, Gid: 1002}},
}

// accessHelper is a running helper process of one user.
type accessHelper struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Scanner
}

// mustAccessHelper starts bin, a copy of this test binary that every user
// may run, as u.
func mustAccessHelper(t *testing.T, bin string, u accessUser) *accessHelper {
	t.Helper()
	cmd := exec.Command(bin, "-test.run=^$")
	cmd.Env = append(os.Environ(), accessHelperEnv+"=1")
	groups := make([]uint32, len(u.cred.Groups))
	copy(groups, u.cred.Groups)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: u.cred.Uid, Gid: u.cred.Gid, Groups: groups}}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start helper as %s: %v", u.name, err)
	}
	t.Cleanup(func() { in.Close(); cmd.Wait() })
	return &accessHelper{cmd: cmd, in: in, out: bufio.NewScanner(out)}
}

func (h *accessHelper) call(t *testing.T, line string) syscall.Errno {
	t.Helper()
	if _, err := fmt.Fprintln(h.in, line); err != nil {
		t.Fatalf("helper: %v", err)
	}
	if !h.out.Scan() {
		t.Fatalf("helper died at %q: %v", line, h.out.Err())
	}
	v, err := strconv.Atoi(h.out.Text())
	if err != nil {
		t.Fatalf("helper answered %q", h.out.Text())
	}
	return syscall.Errno(v)
}

// accessWorld is one scenario's tree, on both sides: base/d (a directory),
// base/d/f (a file), base/d/s (a directory) and base/e (a directory).
type accessWorld struct {
	h     *harness
	local string // base on the local file system
	ino   map[string]uint64
}

// TestAccessAgainstKernel compares the state machine's permission checks
// with the kernel's on random scenarios.
func TestAccessAgainstKernel(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run helpers as other users")
	}
	root := t.TempDir()
	for d := root; d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := syscall.Setxattr(root, "user.probe", []byte("v"), 0); err != nil {
		t.Skipf("the local file system has no user xattrs: %v", err)
	}
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(root, "helper")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	helpers := make([]*accessHelper, len(accessUsers))
	for i, u := range accessUsers {
		helpers[i] = mustAccessHelper(t, bin, u)
	}
	h := mustHarness(t, Options{})
	seeds := []uint64{1, 2, 3}
	if *accessSeed != 0 {
		seeds = []uint64{*accessSeed}
	}
	n := 0
	for _, seed := range seeds {
		rng := rand.New(rand.NewPCG(seed, 0))
		for trial := 0; trial < *accessTrials; trial++ {
			n++
			w := mustAccessWorld(t, h, filepath.Join(root, fmt.Sprint(n)), rng)
			u := rng.IntN(len(accessUsers))
			op := randomAccessOp(rng)
			got := w.fsmOp(t, accessUsers[u].cred, op)
			want := helpers[u].call(t, op.local(w.local))
			if got != want {
				t.Fatalf("seed %d trial %d: %s as %s: state machine %v, kernel %v\nworld: %s",
					seed, trial, op, accessUsers[u].name, got, want, w.describe(t))
			}
			if diff := w.compare(t); diff != "" {
				t.Fatalf("seed %d trial %d: after %s as %s (%v): %s\nworld: %s",
					seed, trial, op, accessUsers[u].name, got, diff, w.describe(t))
			}
		}
	}
}

var (
	accessDirModes  = []uint32{0o755, 0o777, 0o1777, 0o700, 0o711, 0o770, 0o750, 0o2775, 0o1770, 0o555, 0o733, 0o300}
	accessFileModes = []uint32{0o644, 0o600, 0o666, 0o640, 0o660, 0o604, 0o4755, 0o2755, 0o6777, 0o2644, 0o000, 0o222, 0o444, 0o111}
	accessOwners    = [][2]uint32{{0, 0}, {1000, 1000}, {1001, 1001}, {1002, 1000}, {1000, 1001}}
)

func mustAccessWorld(t *testing.T, h *harness, local string, rng *rand.Rand) *accessWorld {
	t.Helper()
	w := &accessWorld{h: h, local: local, ino: map[string]uint64{}}
	base := h.do(cMkdir, &jfspb.MkdirRequest{Parent: RootIno, Name: []byte(filepath.Base(local)), Mode: 0o755, Header: rootHeader()}).(*jfspb.MkdirResponse)
	mustOK(t, base)
	w.ino["."] = base.Attr.Ino
	if err := os.Mkdir(local, 0o755); err != nil {
		t.Fatal(err)
	}
	pick := func(s []uint32) uint32 { return s[rng.IntN(len(s))] }
	owner := func() [2]uint32 { return accessOwners[rng.IntN(len(accessOwners))] }
	make1 := func(parent, name string, dir bool, mode uint32, own [2]uint32) {
		p := filepath.Join(local, name)
		var ino uint64
		if dir {
			r := h.do(cMkdir, &jfspb.MkdirRequest{Parent: w.ino[parent], Name: []byte(filepath.Base(name)), Mode: 0o700, Header: rootHeader()}).(*jfspb.MkdirResponse)
			mustOK(t, r)
			ino = r.Attr.Ino
			if err := os.Mkdir(p, 0o700); err != nil {
				t.Fatal(err)
			}
		} else {
			r := h.do(cMknod, &jfspb.MknodRequest{Parent: w.ino[parent], Name: []byte(filepath.Base(name)), Mode: syscall.S_IFREG | 0o600, Header: rootHeader()}).(*jfspb.MknodResponse)
			mustOK(t, r)
			ino = r.Attr.Ino
			if err := os.WriteFile(p, nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}
		w.ino[name] = ino
		mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Header: rootHeader(), Ino: ino,
			Valid: uint32(jfspb.SetAttrMask_SET_ATTR_UID | jfspb.SetAttrMask_SET_ATTR_GID), Uid: own[0], Gid: own[1]}))
		mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Header: rootHeader(), Ino: ino,
			Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: mode}))
		if err := os.Lchown(p, int(own[0]), int(own[1])); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
	}
	make1(".", "d", true, pick(accessDirModes), owner())
	make1(".", "e", true, pick(accessDirModes), owner())
	make1("d", "d/f", false, pick(accessFileModes), owner())
	make1("d", "d/s", true, pick(accessDirModes), owner())
	// An attribute to read, remove or replace.
	mustOK(t, h.do(cSetXattr, &jfspb.SetXattrRequest{Header: rootHeader(), Ino: w.ino["d/f"], Name: []byte("user.a"), Value: []byte("v")}))
	if err := syscall.Setxattr(filepath.Join(local, "d/f"), "user.a", []byte("v"), 0); err != nil {
		t.Fatal(err)
	}
	return w
}

func rootHeader() *jfspb.Header { return &jfspb.Header{Cred: &jfspb.Cred{}} }

// accessOp is one system call of a scenario, on paths relative to base.
type accessOp struct {
	name string
	args []string // paths, then numbers
}

func (o accessOp) String() string { return o.name + " " + strings.Join(o.args, " ") }

// local is the helper's command line with the paths under base.
func (o accessOp) local(base string) string {
	parts := []string{o.name}
	for _, a := range o.args {
		if strings.HasPrefix(a, "d") || strings.HasPrefix(a, "e") {
			a = filepath.Join(base, a)
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " ")
}

func randomAccessOp(rng *rand.Rand) accessOp {
	obj := []string{"d/f", "d/s", "d"}[rng.IntN(3)]
	file := []string{"d/f", "d/f", "d/s"}[rng.IntN(3)]
	num := func(v int) string { return strconv.Itoa(v) }
	ids := []int{-1, 0, 1000, 1001, 1002}
	switch rng.IntN(17) {
	case 0:
		flags := []int{syscall.O_RDONLY, syscall.O_WRONLY, syscall.O_RDWR, syscall.O_RDONLY | syscall.O_TRUNC, syscall.O_WRONLY | syscall.O_TRUNC}
		return accessOp{"open", []string{file, num(flags[rng.IntN(len(flags))])}}
	case 1:
		modes := []int{0o644, 0o4755, 0o2755, 0o1777, 0o600, 0o6711}
		return accessOp{"chmod", []string{obj, num(modes[rng.IntN(len(modes))])}}
	case 2:
		// chown(-1, -1) changes no id, only the set-id bits, which the
		// kernel sends as a chmod: it is left out.
		uid, gid := ids[rng.IntN(len(ids))], ids[1+rng.IntN(len(ids)-1)]
		if rng.IntN(2) == 0 {
			uid, gid = ids[1+rng.IntN(len(ids)-1)], ids[rng.IntN(len(ids))]
		}
		return accessOp{"chown", []string{obj, num(uid), num(gid)}}
	case 3:
		return accessOp{"utimes-now", []string{obj}}
	case 4:
		return accessOp{"utimes", []string{obj}}
	case 5:
		return accessOp{"truncate", []string{file}}
	case 6:
		return accessOp{"write", []string{"d/f"}}
	case 7:
		return accessOp{"unlink", []string{"d/f"}}
	case 8:
		return accessOp{"rmdir", []string{"d/s"}}
	case 9:
		return accessOp{[]string{"mkdir", "create", "symlink"}[rng.IntN(3)], []string{[]string{"d/n", "e/n"}[rng.IntN(2)]}}
	case 10:
		return accessOp{"rename", []string{[]string{"d/f", "d/s"}[rng.IntN(2)], []string{"e/n", "d/n", "e"}[rng.IntN(3)]}}
	case 11:
		return accessOp{"link", []string{"d/f", []string{"e/n", "d/n"}[rng.IntN(2)]}}
	case 12, 13:
		return accessOp{"setxattr", []string{obj, []string{"user.a", "user.b", "trusted.a"}[rng.IntN(3)]}}
	case 14:
		return accessOp{"getxattr", []string{obj, []string{"user.a", "trusted.a"}[rng.IntN(2)]}}
	case 15:
		return accessOp{"stat", []string{[]string{"d/f", "d/s", "d/s/x", "d/nope"}[rng.IntN(4)]}}
	default:
		return accessOp{"rename", []string{"d/f", "d/s"}}
	}
}

// walk resolves path (relative to base) as the kernel's path walk does,
// with lookups made as c: it returns the parent's inode, the last name and,
// when it exists, its inode.
func (w *accessWorld) walk(c *jfspb.Cred, path string) (parent uint64, name string, ino uint64, e syscall.Errno) {
	parent = w.ino["."]
	parts := strings.Split(path, "/")
	for i, p := range parts {
		r := w.h.f.Lookup(&jfspb.LookupRequest{Parent: parent, Name: []byte(p), Cred: c})
		if i == len(parts)-1 {
			if r.Errno == int32(syscall.ENOENT) {
				return parent, p, 0, 0
			}
			if r.Errno != 0 {
				return 0, "", 0, syscall.Errno(r.Errno)
			}
			return parent, p, r.Attr.Ino, 0
		}
		if r.Errno != 0 {
			return 0, "", 0, syscall.Errno(r.Errno)
		}
		parent = r.Attr.Ino
	}
	return
}

// fsmOp makes op on the state machine as c, as a mount would.
func (w *accessWorld) fsmOp(t *testing.T, c *jfspb.Cred, op accessOp) syscall.Errno {
	t.Helper()
	h := w.h
	hd := &jfspb.Header{Cred: c}
	parent, name, ino, e := w.walk(c, op.args[0])
	if e != 0 {
		return e
	}
	num := func(i int) int {
		v, _ := strconv.Atoi(op.args[i])
		return v
	}
	errno := func(m interface{ GetErrno() int32 }) syscall.Errno { return syscall.Errno(m.GetErrno()) }
	needs := func() syscall.Errno {
		if ino == 0 {
			return syscall.ENOENT
		}
		return 0
	}
	switch op.name {
	case "stat":
		return needs()
	case "open", "write":
		if e := needs(); e != 0 {
			return e
		}
		flags := uint32(syscall.O_WRONLY)
		if op.name == "open" {
			flags = uint32(num(1))
		}
		r := h.do(cOpen, &jfspb.OpenRequest{Header: hd, Ino: ino, Flags: flags, Fh: 9}).(*jfspb.OpenResponse)
		if r.Errno != 0 {
			return errno(r)
		}
		var we syscall.Errno
		if op.name == "write" {
			we = errno(h.do(cWrite, &jfspb.WriteRequest{Header: hd, Ino: ino, Data: []byte("x"), Fh: 9}).(*jfspb.WriteResponse))
		}
		mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Header: hd, Ino: ino, Fh: 9}))
		return we
	case "chmod", "chown", "utimes-now", "utimes", "truncate":
		if e := needs(); e != 0 {
			return e
		}
		req := &jfspb.SetAttrRequest{Header: hd, Ino: ino}
		switch op.name {
		case "chmod":
			req.Valid, req.Mode = uint32(jfspb.SetAttrMask_SET_ATTR_MODE), uint32(num(1))
		case "chown":
			if u := num(1); u >= 0 {
				req.Valid |= uint32(jfspb.SetAttrMask_SET_ATTR_UID)
				req.Uid = uint32(u)
			}
			if g := num(2); g >= 0 {
				req.Valid |= uint32(jfspb.SetAttrMask_SET_ATTR_GID)
				req.Gid = uint32(g)
			}
		case "utimes-now":
			req.Valid = uint32(jfspb.SetAttrMask_SET_ATTR_ATIME_NOW | jfspb.SetAttrMask_SET_ATTR_MTIME_NOW)
		case "utimes":
			req.Valid = uint32(jfspb.SetAttrMask_SET_ATTR_ATIME | jfspb.SetAttrMask_SET_ATTR_MTIME)
			req.AtimeNs, req.MtimeNs = 1000e9, 2000e9
		case "truncate":
			// truncate(2) by path needs write permission, owner or not,
			// once the file is known not to be a directory.
			if a := h.mustAttr(ino); a.Mode&syscall.S_IFMT != syscall.S_IFDIR {
				if e := w.access(ino, c, MayWrite); e != 0 {
					return e
				}
			}
			req.Valid = uint32(jfspb.SetAttrMask_SET_ATTR_SIZE)
		}
		return errno(h.do(cSetAttr, req).(*jfspb.SetAttrResponse))
	case "unlink":
		return errno(h.do(cUnlink, &jfspb.UnlinkRequest{Header: hd, Parent: parent, Name: []byte(name)}).(*jfspb.UnlinkResponse))
	case "rmdir":
		return errno(h.do(cRmdir, &jfspb.RmdirRequest{Header: hd, Parent: parent, Name: []byte(name)}).(*jfspb.RmdirResponse))
	case "mkdir":
		return errno(h.do(cMkdir, &jfspb.MkdirRequest{Header: hd, Parent: parent, Name: []byte(name), Mode: 0o755, Uid: c.Uid, Gid: c.Gid}).(*jfspb.MkdirResponse))
	case "create":
		r := h.do(cCreate, &jfspb.CreateRequest{Header: hd, Parent: parent, Name: []byte(name), Mode: 0o644, Uid: c.Uid, Gid: c.Gid,
			Flags: syscall.O_CREAT | syscall.O_EXCL | syscall.O_WRONLY, Fh: 9}).(*jfspb.CreateResponse)
		if r.Errno == 0 {
			mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Header: hd, Ino: r.Attr.Ino, Fh: 9}))
		}
		return errno(r)
	case "symlink":
		return errno(h.do(cSymlink, &jfspb.SymlinkRequest{Header: hd, Parent: parent, Name: []byte(name), Target: []byte("target"), Uid: c.Uid, Gid: c.Gid}).(*jfspb.SymlinkResponse))
	case "rename", "link":
		if e := needs(); e != 0 {
			return e
		}
		np, nn, _, e := w.walk(c, op.args[1])
		if e != 0 {
			return e
		}
		if op.name == "link" {
			return errno(h.do(cLink, &jfspb.LinkRequest{Header: hd, Ino: ino, NewParent: np, NewName: []byte(nn)}).(*jfspb.LinkResponse))
		}
		return errno(h.do(cRename, &jfspb.RenameRequest{Header: hd, Parent: parent, Name: []byte(name), NewParent: np, NewName: []byte(nn)}).(*jfspb.RenameResponse))
	case "setxattr":
		if e := needs(); e != 0 {
			return e
		}
		return errno(h.do(cSetXattr, &jfspb.SetXattrRequest{Header: hd, Ino: ino, Name: []byte(op.args[1]), Value: []byte("v")}).(*jfspb.SetXattrResponse))
	case "getxattr":
		if e := needs(); e != 0 {
			return e
		}
		return errno(h.f.GetXattr(&jfspb.GetXattrRequest{Ino: ino, Name: []byte(op.args[1]), Cred: c}))
	}
	t.Fatalf("unknown op %s", op)
	return 0
}

func (w *accessWorld) access(ino uint64, c *jfspb.Cred, mask uint32) syscall.Errno {
	a := w.h.mustAttr(ino)
	return CheckAccess(a.Mode, a.Uid, a.Gid, c, mask)
}

// compare checks that every name of the world exists on both sides with
// the same type, mode, owner and group; "" when it does.
func (w *accessWorld) compare(t *testing.T) string {
	t.Helper()
	for _, p := range []string{"d", "e", "d/f", "d/s", "d/n", "e/n", "e/f", "e/s"} {
		var st syscall.Stat_t
		lerr := syscall.Lstat(filepath.Join(w.local, p), &st)
		_, _, ino, e := w.walk(&jfspb.Cred{}, p)
		if e != 0 {
			return fmt.Sprintf("%s: state machine lookup %v", p, e)
		}
		switch {
		case lerr != nil && ino == 0:
			continue
		case lerr != nil:
			return fmt.Sprintf("%s: exists in the state machine only", p)
		case ino == 0:
			return fmt.Sprintf("%s: exists on the local file system only", p)
		}
		a := w.h.mustAttr(ino)
		if a.Mode != st.Mode || a.Uid != st.Uid || a.Gid != st.Gid {
			return fmt.Sprintf("%s: state machine mode %o uid %d gid %d, kernel mode %o uid %d gid %d",
				p, a.Mode, a.Uid, a.Gid, st.Mode, st.Uid, st.Gid)
		}
	}
	return ""
}

func (w *accessWorld) describe(t *testing.T) string {
	t.Helper()
	var b strings.Builder
	for _, p := range []string{"d", "e", "d/f", "d/s"} {
		if _, _, ino, _ := w.walk(&jfspb.Cred{}, p); ino != 0 {
			a := w.h.mustAttr(ino)
			fmt.Fprintf(&b, "%s=%o:%d:%d ", p, a.Mode, a.Uid, a.Gid)
		}
	}
	return b.String()
}
