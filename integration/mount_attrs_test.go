package integration

import (
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// mustMakeTree builds under dir a tree with mixed modes: files 0644, 0600,
// 0755 and 0640, directories 0755, 0700 and 0750, a setgid directory and a
// symlink. Modes are set with chmod, so the umask does not matter.
func mustMakeTree(t *testing.T, dir string) {
	t.Helper()
	dirs := []struct {
		name string
		mode os.FileMode
	}{
		{"pub", 0o755}, {"private", 0o700}, {"group", 0o750}, {"shared", 0o775 | os.ModeSetgid},
		{"private/inner", 0o750},
	}
	for _, d := range dirs {
		p := filepath.Join(dir, d.name)
		if err := os.Mkdir(p, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, d.mode); err != nil {
			t.Fatal(err)
		}
	}
	files := []struct {
		name string
		mode os.FileMode
	}{
		{"readme", 0o644}, {"secret", 0o600}, {"tool", 0o755},
		{"pub/a", 0o644}, {"pub/b", 0o600}, {"private/key", 0o600},
		{"private/inner/x", 0o640}, {"group/run", 0o750}, {"shared/doc", 0o664},
	}
	for _, f := range files {
		p := filepath.Join(dir, f.name)
		if err := os.WriteFile(p, []byte(f.name+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, f.mode); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink("readme", filepath.Join(dir, "link")); err != nil {
		t.Fatal(err)
	}
}

// TestMountCpPreservesModes: "cp -a" into a mount keeps every permission
// bit. cp sets the ACL that equals the source's mode instead of calling
// chmod; jfs refuses POSIX ACLs with EOPNOTSUPP, so cp falls back to chmod.
// When the ACL was stored as a plain attribute, every file became 0600 and
// every directory 0700.
func TestMountCpPreservesModes(t *testing.T) {
	if _, err := exec.LookPath("cp"); err != nil {
		t.Skip("no cp here")
	}
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	src := filepath.Join(t.TempDir(), "src")
	if err := os.Mkdir(src, 0o755); err != nil {
		t.Fatal(err)
	}
	mustMakeTree(t, src)
	dst := m.path("dst")
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v\n%s", err, out)
	}
	seen := 0
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		want, err := os.Lstat(p)
		if err != nil {
			return err
		}
		got, err := os.Lstat(filepath.Join(dst, rel))
		if err != nil {
			t.Errorf("%s: %v", rel, err)
			return nil
		}
		seen++
		if got.Mode() != want.Mode() {
			t.Errorf("%s: mode %v in the mount, %v in the source", rel, got.Mode(), want.Mode())
		}
		if want.Mode()&os.ModeSymlink != 0 {
			if target, err := os.Readlink(filepath.Join(dst, rel)); err != nil || target != "readme" {
				t.Errorf("%s: symlink to %q (%v), want readme", rel, target, err)
			}
			return nil
		}
		// No ACL is kept: the ACL attribute is not supported.
		_, err = unix.Getxattr(filepath.Join(dst, rel), "system.posix_acl_access", make([]byte, 256))
		if !errors.Is(err, unix.EOPNOTSUPP) {
			t.Errorf("%s: getxattr system.posix_acl_access: %v, want EOPNOTSUPP", rel, err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if seen != 16 {
		t.Errorf("compared %d entries, want 16", seen)
	}
}

// TestMountSetfacl: setfacl either sets the mode an ACL without named
// entries stands for, or fails; it never reports success for an ACL that
// would not be enforced.
func TestMountSetfacl(t *testing.T) {
	if _, err := exec.LookPath("setfacl"); err != nil {
		t.Skip("no setfacl here (package acl; .ci/run installs it)")
	}
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	f := m.path("f")
	mustWriteFile(t, f, []byte("x"))
	if err := os.Chmod(f, 0o600); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("setfacl", "-m", "g::r,o::r", f).CombinedOutput()
	st, serr := os.Stat(f)
	if serr != nil {
		t.Fatal(serr)
	}
	if err == nil && st.Mode().Perm() != 0o644 {
		t.Errorf("setfacl -m g::r,o::r succeeded but the mode is %v, want 0644\n%s", st.Mode(), out)
	}
	t.Logf("setfacl -m g::r,o::r: %v, mode %v %s", err, st.Mode(), out)

	// An entry for another user cannot be kept, so it must fail, and no
	// ACL may show up.
	out, err = exec.Command("setfacl", "-m", "u:nobody:r", f).CombinedOutput()
	if err == nil {
		t.Errorf("setfacl -m u:nobody:r succeeded on a file system without ACLs\n%s", out)
	}
	if got, gerr := exec.Command("getfacl", "-c", f).CombinedOutput(); gerr != nil || strings.Contains(string(got), "nobody") {
		t.Errorf("getfacl shows %q (%v) after a refused ACL", got, gerr)
	}
	st2, err := os.Stat(f)
	if err != nil {
		t.Fatal(err)
	}
	if st2.Mode() != st.Mode() {
		t.Errorf("refused setfacl changed the mode from %v to %v", st.Mode(), st2.Mode())
	}
	// The attribute cannot be set directly either.
	if err := unix.Setxattr(f, "system.posix_acl_access", []byte{2, 0, 0, 0}, 0); !errors.Is(err, syscall.EOPNOTSUPP) {
		t.Errorf("setxattr system.posix_acl_access: %v, want EOPNOTSUPP", err)
	}
}

// TestMountRootTimes: the root of a new file system shows when the cluster
// was created, not 1970, before anything was changed in it.
func TestMountRootTimes(t *testing.T) {
	before := time.Now().Add(-time.Second) // one clock, but a rounding's slack
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	var st unix.Stat_t
	if err := unix.Stat(m.dir, &st); err != nil {
		t.Fatal(err)
	}
	after := time.Now().Add(time.Second)
	for _, ts := range []struct {
		name string
		t    unix.Timespec
	}{{"atime", st.Atim}, {"mtime", st.Mtim}, {"ctime", st.Ctim}} {
		got := time.Unix(ts.t.Unix())
		if got.Before(before) || got.After(after) {
			t.Errorf("root %s %v, want between %v and %v (the cluster's creation)", ts.name, got, before, after)
		}
	}
}

// touchAtimeRequests is how many TouchAtime requests the cluster's nodes
// have answered.
func (pc *procCluster) touchAtimeRequests(t *testing.T) float64 {
	t.Helper()
	n := 0.0
	for _, p := range pc.procs {
		if p.cmd != nil {
			n += p.metrics(t)[`jfsd_requests_total{code="OK",method="TouchAtime"}`]
		}
	}
	return n
}

func mustStat(t *testing.T, path string) unix.Stat_t {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat(path, &st); err != nil {
		t.Fatal(err)
	}
	return st
}

// TestMountAtimeRelatime: reads through a mount move the atime under the
// relatime rule, and a read that finds the atime newer than the mtime and
// ctime writes nothing. The mount keeps the kernel's attribute cache on, as
// users run it.
func TestMountAtimeRelatime(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	f := m.path("f")
	mustWriteFile(t, f, []byte("hello"))
	st0 := mustStat(t, f)
	n0 := pc.touchAtimeRequests(t)

	// The first read: the atime was not later than the mtime.
	if got := mustReadPath(t, f); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	st1 := mustStat(t, f)
	if st1.Atim.Nano() <= st0.Mtim.Nano() {
		t.Errorf("after the first read: atime %d not after mtime %d", st1.Atim.Nano(), st0.Mtim.Nano())
	}
	if st1.Mtim != st0.Mtim || st1.Ctim != st0.Ctim {
		t.Errorf("a read moved mtime or ctime: %v %v, were %v %v", st1.Mtim, st1.Ctim, st0.Mtim, st0.Ctim)
	}
	if n := pc.touchAtimeRequests(t); n != n0+1 {
		t.Errorf("the first read sent %v atime updates, want 1", n-n0)
	}

	// A second read right after: nothing to write.
	mustReadPath(t, f)
	st2 := mustStat(t, f)
	if st2.Atim != st1.Atim {
		t.Errorf("the second read moved the atime from %v to %v", st1.Atim, st2.Atim)
	}
	if n := pc.touchAtimeRequests(t); n != n0+1 {
		t.Errorf("two reads sent %v atime updates, want 1", n-n0)
	}

	// Written again: the next read moves the atime once more.
	fd, err := os.OpenFile(f, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fd.Write([]byte(" again")); err != nil {
		t.Fatal(err)
	}
	if err := fd.Close(); err != nil {
		t.Fatal(err)
	}
	st3 := mustStat(t, f)
	if got := mustReadPath(t, f); string(got) != "hello again" {
		t.Fatalf("read %q", got)
	}
	st4 := mustStat(t, f)
	if st4.Atim.Nano() <= st3.Mtim.Nano() {
		t.Errorf("after a read of the rewritten file: atime %d not after mtime %d", st4.Atim.Nano(), st3.Mtim.Nano())
	}
	if n := pc.touchAtimeRequests(t); n != n0+2 {
		t.Errorf("three reads around one write sent %v atime updates, want 2", n-n0)
	}
}

// direntNames reads every entry of the open directory fd.
func direntNames(t *testing.T, fd int) []string {
	t.Helper()
	var names []string
	buf := make([]byte, 4096)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			t.Fatalf("getdents: %v", err)
		}
		if n == 0 {
			return names
		}
		_, _, names = unix.ParseDirent(buf[:n], -1, names)
	}
}

// TestMountRemovedOpenDir: a directory removed while open stays usable
// through its descriptor until the close, whether it was renamed over on
// the same mount (go-fuse's posixtest RenameOpenDir) or removed by another
// mount: fstat shows it, and readdir finds it empty instead of failing.
func TestMountRemovedOpenDir(t *testing.T) {
	pc := startProcCluster(t, 3)
	a := startMount(t, pc, noCache...)
	b := startMount(t, pc, noCache...)

	t.Run("renamed over", func(t *testing.T) {
		if err := os.Mkdir(a.path("dir1"), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(a.path("dir2"), 0o700); err != nil {
			t.Fatal(err)
		}
		st1 := mustStat(t, a.path("dir2"))
		fd, err := unix.Open(a.path("dir2"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		// syscall.Rename: os.Rename refuses to replace a directory.
		if err := syscall.Rename(a.path("dir1"), a.path("dir2")); err != nil {
			t.Fatal(err)
		}
		var st2 unix.Stat_t
		if err := unix.Fstat(fd, &st2); err != nil {
			t.Fatalf("fstat of the open directory renamed over: %v", err)
		}
		if st2.Ino != st1.Ino || st2.Mode != st1.Mode {
			t.Errorf("fstat: ino %d mode %o, want %d %o", st2.Ino, st2.Mode, st1.Ino, st1.Mode)
		}
	})

	t.Run("removed by another mount", func(t *testing.T) {
		if err := os.Mkdir(a.path("x"), 0o750); err != nil {
			t.Fatal(err)
		}
		fd, err := unix.Open(a.path("x"), unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		if err := os.Remove(b.path("x")); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil {
			t.Fatalf("fstat of the open directory removed by another mount: %v", err)
		}
		if st.Mode != unix.S_IFDIR|0o750 || st.Nlink != 0 {
			t.Errorf("fstat: mode %o nlink %d, want %o and 0", st.Mode, st.Nlink, unix.S_IFDIR|0o750)
		}
		for _, name := range direntNames(t, fd) {
			if name != "." && name != ".." {
				t.Errorf("the removed directory lists %q", name)
			}
		}
		if _, err := os.Stat(a.path("x")); !isNotExist(err) {
			t.Errorf("stat of the removed name: %v, want ENOENT", err)
		}
	})
}

// TestMountTmpfile: open(2) with O_TMPFILE makes an unnamed file that can be
// written, read and then linked into place through /proc/self/fd (the
// pattern of atomic file creation); with O_EXCL it cannot be linked.
func TestMountTmpfile(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	fd, err := unix.Open(m.dir, unix.O_TMPFILE|unix.O_RDWR, 0o640)
	if err != nil {
		t.Fatalf("open O_TMPFILE: %v", err)
	}
	defer unix.Close(fd)
	if _, err := unix.Pwrite(fd, []byte("complete"), 0); err != nil {
		t.Fatal(err)
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	if st.Nlink != 0 || st.Mode != unix.S_IFREG|0o640 || st.Size != 8 {
		t.Errorf("fstat of the tmpfile: nlink %d mode %o size %d", st.Nlink, st.Mode, st.Size)
	}
	if ents, err := os.ReadDir(m.dir); err != nil || len(ents) != 0 {
		t.Errorf("the mount lists %v (%v) while the tmpfile is unnamed", ents, err)
	}
	proc := "/proc/self/fd/" + strconv.Itoa(fd)
	if err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, m.path("final"), unix.AT_SYMLINK_FOLLOW); err != nil {
		t.Fatalf("linkat of the tmpfile: %v", err)
	}
	if got := mustReadPath(t, m.path("final")); string(got) != "complete" {
		t.Errorf("final holds %q", got)
	}
	if st := mustStat(t, m.path("final")); st.Nlink != 1 {
		t.Errorf("final: nlink %d", st.Nlink)
	}

	xfd, err := unix.Open(m.dir, unix.O_TMPFILE|unix.O_RDWR|unix.O_EXCL, 0o600)
	if err != nil {
		t.Fatalf("open O_TMPFILE|O_EXCL: %v", err)
	}
	defer unix.Close(xfd)
	xproc := "/proc/self/fd/" + strconv.Itoa(xfd)
	if err := unix.Linkat(unix.AT_FDCWD, xproc, unix.AT_FDCWD, m.path("excl"), unix.AT_SYMLINK_FOLLOW); err == nil {
		t.Error("linkat of an O_EXCL tmpfile succeeded")
	}
	if _, err := os.Stat(m.path("excl")); !isNotExist(err) {
		t.Errorf("excl: %v, want ENOENT", err)
	}
}

// TestMountNoatime: with --noatime reads never update the atime.
func TestMountNoatime(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc, "--noatime")
	f := m.path("f")
	mustWriteFile(t, f, []byte("hello"))
	st0 := mustStat(t, f)
	n0 := pc.touchAtimeRequests(t)
	if got := mustReadPath(t, f); string(got) != "hello" {
		t.Fatalf("read %q", got)
	}
	if st := mustStat(t, f); st.Atim != st0.Atim {
		t.Errorf("a read with --noatime moved the atime from %v to %v", st0.Atim, st.Atim)
	}
	if n := pc.touchAtimeRequests(t); n != n0 {
		t.Errorf("a read with --noatime sent %v atime updates", n-n0)
	}
}
