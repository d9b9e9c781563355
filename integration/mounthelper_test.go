package integration

import (
	"bufio"
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// mountHelper returns the path of a mount.jfs link to the built jfs, in a
// directory of its own.
func mountHelper(t *testing.T) string {
	t.Helper()
	helper := filepath.Join(t.TempDir(), "mount.jfs")
	if err := os.Symlink(filepath.Join(binDir, "jfs"), helper); err != nil {
		t.Fatal(err)
	}
	return helper
}

// mountType returns the file system type /proc/mounts shows for dir, or "".
func mountType(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile("/proc/mounts")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) > 2 && unescapeMountinfo(f[1]) == dir {
			return f[2]
		}
	}
	return ""
}

// newMountPoint makes an empty directory to mount on.
func newMountPoint(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}

// unmountHelperMount unmounts dir, mounted by mount.jfs with the mount
// process's pid in pidFile, and waits for that process to exit.
func unmountHelperMount(t *testing.T, dir, pidFile string) {
	t.Helper()
	b, err := os.ReadFile(pidFile)
	if err != nil {
		t.Errorf("pid file: %v", err)
	}
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if _, errOut, err := runJfs(t, "umount", dir); err != nil && isMounted(dir) {
		t.Errorf("jfs umount %s: %v: %s", dir, err, errOut)
		syscall.Unmount(dir, syscall.MNT_DETACH)
	}
	if pid <= 0 {
		return
	}
	if !waitFor(20*time.Second, func() bool { return syscall.Kill(pid, 0) != nil }) {
		t.Errorf("mount process %d still runs 20s after the unmount", pid)
		syscall.Kill(pid, syscall.SIGKILL)
	}
	if _, err := os.Stat(pidFile); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file %s still there after the unmount: %v", pidFile, err)
	}
}

// TestMountHelper: jfs called as mount.jfs, the way mount(8) calls it, maps
// -o options to jfs mount flags, ignores mount(8)'s generic options, and
// returns once the file system is mounted, leaving it served in the
// background; what it mounts is the same file system a second mount sees.
func TestMountHelper(t *testing.T) {
	pc := startProcCluster(t, 3)
	mustHaveFUSE(t)
	helper := mountHelper(t)
	dir := newMountPoint(t)
	base := t.TempDir()
	pidFile := filepath.Join(base, "mount.pid")
	opts := "rw,_netdev,defaults,x-systemd.automount,attr-cache=1s,entry-cache=0,noatime,metrics=," +
		"log-file=" + filepath.Join(base, "mount.log") + ",pid-file=" + pidFile
	cmd := exec.Command(helper, strings.Join(pc.servers(), ","), dir, "-n", "-o", opts, "-t", "jfs")
	out, err := cmd.CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(base, "mount.log"))
		t.Fatalf("mount.jfs: %v: %s\n%s", err, out, tail(log, 40))
	}
	t.Cleanup(func() {
		if isMounted(dir) {
			unmountHelperMount(t, dir, pidFile)
		}
	})
	if typ := mountType(t, dir); typ != "fuse.jfs" {
		t.Fatalf("/proc/mounts shows %s as %q once mount.jfs returned, want fuse.jfs", dir, typ)
	}
	if len(out) != 0 {
		t.Errorf("mount.jfs printed %q, want nothing", out)
	}
	mustWriteFile(t, filepath.Join(dir, "hello"), []byte("through mount.jfs"))
	m2 := startMount(t, pc)
	if got := string(mustReadPath(t, m2.path("hello"))); got != "through mount.jfs" {
		t.Errorf("second mount reads %q", got)
	}
	unmountHelperMount(t, dir, pidFile)
	if isMounted(dir) {
		t.Errorf("%s still mounted", dir)
	}
}

// TestMountHelperRefuses: an unknown option, or a cluster that does not
// answer, makes mount.jfs exit non-zero with the reason, and nothing is
// mounted.
func TestMountHelperRefuses(t *testing.T) {
	mustHaveFUSE(t)
	helper := mountHelper(t)
	dir := newMountPoint(t)
	down := freeAddr(t) // nothing listens there
	logFile := filepath.Join(t.TempDir(), "mount.log")
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"unknown option", []string{down, dir, "-o", "_netdev,frobnicate=3"}, 1, `unknown option "frobnicate=3"`},
		{"flag without value", []string{down, dir, "-o", "attr-cache"}, 1, "attr-cache needs a value"},
		{"bad duration", []string{down, dir, "-o", "attr-cache=soon,log-file=" + logFile}, 32, "soon"},
		{"no mount point", []string{down, filepath.Join(dir, "nope"), "-o", "log-file=" + logFile}, 32, "does not exist"},
		{"cluster unreachable", []string{down, dir, "-o", "retry-for=2s,metrics=,log-file=" + logFile}, 32, "cannot reach the jfs cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(helper, tc.args...)
			var stderr bytes.Buffer
			cmd.Stderr = &stderr
			err := cmd.Run()
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != tc.code || !strings.Contains(stderr.String(), tc.want) {
				t.Errorf("mount.jfs %q: %v, stderr %q; want exit code %d and %q", tc.args, err, stderr.String(), tc.code, tc.want)
			}
			if isMounted(dir) {
				syscall.Unmount(dir, syscall.MNT_DETACH)
				t.Fatalf("%s mounted", dir)
			}
		})
	}
}

// TestMountTypeJfs: mount(8) itself finds /sbin/mount.jfs for -t jfs. The
// test installs that link only as root (or in CI) and when no other
// mount.jfs is there, and removes it after.
func TestMountTypeJfs(t *testing.T) {
	mustHaveFUSE(t)
	if os.Geteuid() != 0 && os.Getenv("CI") == "" {
		t.Skip("installing /sbin/mount.jfs needs root")
	}
	mountBin, err := exec.LookPath("mount")
	if err != nil {
		t.Skipf("no mount(8): %v", err)
	}
	const link = "/sbin/mount.jfs"
	if _, err := os.Lstat(link); err == nil {
		t.Skipf("%s exists already; not replacing it", link)
	}
	pc := startProcCluster(t, 3)
	if err := os.Symlink(filepath.Join(binDir, "jfs"), link); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(link) })
	dir := newMountPoint(t)
	base := t.TempDir()
	pidFile := filepath.Join(base, "mount.pid")
	out, err := exec.Command(mountBin, "-t", "jfs", "-o",
		"_netdev,attr-cache=1s,metrics=,log-file="+filepath.Join(base, "mount.log")+",pid-file="+pidFile,
		strings.Join(pc.servers(), ","), dir).CombinedOutput()
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(base, "mount.log"))
		t.Fatalf("mount -t jfs: %v: %s\n%s", err, out, tail(log, 40))
	}
	t.Cleanup(func() {
		if isMounted(dir) {
			unmountHelperMount(t, dir, pidFile)
		}
	})
	if typ := mountType(t, dir); typ != "fuse.jfs" {
		t.Fatalf("/proc/mounts shows %s as %q after mount -t jfs, want fuse.jfs", dir, typ)
	}
	mustWriteFile(t, filepath.Join(dir, "f"), []byte("x"))

	out, err = exec.Command(mountBin, "-t", "jfs", "-o", "frobnicate", strings.Join(pc.servers(), ","), newMountPoint(t)).CombinedOutput()
	if err == nil || !strings.Contains(string(out), `unknown option "frobnicate"`) {
		t.Errorf("mount -t jfs -o frobnicate: %v: %s; want a failure naming the option", err, out)
	}

	// umount(8) works as for any file system, and the mount process exits.
	b, _ := os.ReadFile(pidFile)
	pid, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	if out, err := exec.Command("umount", dir).CombinedOutput(); err != nil {
		t.Fatalf("umount: %v: %s", err, out)
	}
	if pid <= 0 || !waitFor(20*time.Second, func() bool { return syscall.Kill(pid, 0) != nil }) {
		t.Errorf("mount process %d (pid file %q) still runs 20s after umount", pid, b)
	}
}

// notifySocket listens on a unixgram socket in the abstract namespace, as
// systemd's, and points NOTIFY_SOCKET at it for the processes the test
// starts.
func notifySocket(t *testing.T) *net.UnixConn {
	t.Helper()
	name := "jfs-test-notify-" + strconv.Itoa(os.Getpid()) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36)
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: "\x00" + name, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", "@"+name)
	return conn
}

// nextNotify waits up to d for the next datagram on conn.
func nextNotify(t *testing.T, conn *net.UnixConn, d time.Duration) string {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(d))
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatalf("no notification within %v: %v", d, err)
	}
	return string(buf[:n])
}

// TestMountNotify: jfs mount under a Type=notify service reports READY=1
// only once the file system is mounted and serves, and STOPPING=1 when it
// unmounts on SIGTERM.
func TestMountNotify(t *testing.T) {
	pc := startProcCluster(t, 3)
	mustHaveFUSE(t)
	conn := notifySocket(t)
	dir := newMountPoint(t)
	base := t.TempDir()
	logf, err := os.Create(filepath.Join(base, "mount.log"))
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(filepath.Join(binDir, "jfs"), "mount", "--servers", strings.Join(pc.servers(), ","),
		"--metrics", "", "--pid-file", filepath.Join(base, "pid"), dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	var waitErr error
	go func() { waitErr = cmd.Wait(); close(exited) }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
			<-exited
		}
		if isMounted(dir) {
			syscall.Unmount(dir, syscall.MNT_DETACH)
		}
	})

	if got := nextNotify(t, conn, 60*time.Second); got != "READY=1" {
		t.Fatalf("first notification %q, want READY=1", got)
	}
	// READY=1 came after the mount was serving: no waiting here.
	if typ := mountType(t, dir); typ != "fuse.jfs" {
		t.Fatalf("READY=1 while %s is %q, want fuse.jfs", dir, typ)
	}
	mustWriteFile(t, filepath.Join(dir, "ready"), []byte("yes"))
	if b, err := os.ReadFile(filepath.Join(base, "pid")); err != nil || strings.TrimSpace(string(b)) != strconv.Itoa(cmd.Process.Pid) {
		t.Errorf("pid file at READY=1: %q %v, want %d", b, err, cmd.Process.Pid)
	}

	cmd.Process.Signal(syscall.SIGTERM)
	if got := nextNotify(t, conn, 20*time.Second); got != "STOPPING=1" {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", got)
	}
	select {
	case <-exited:
		if waitErr != nil {
			t.Errorf("jfs mount exited with %v after SIGTERM", waitErr)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("jfs mount did not exit within 20s of SIGTERM")
	}
	if isMounted(dir) {
		t.Errorf("%s still mounted", dir)
	}
	if _, err := os.Stat(filepath.Join(base, "pid")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pid file after exit: %v, want it removed", err)
	}
}

// TestJfsdNotify: every jfsd reports READY=1 once it serves its API, and
// STOPPING=1 on SIGTERM.
func TestJfsdNotify(t *testing.T) {
	conn := notifySocket(t)
	pc := startProcCluster(t, 3)
	for range pc.procs {
		if got := nextNotify(t, conn, 60*time.Second); got != "READY=1" {
			t.Fatalf("notification %q, want READY=1", got)
		}
	}
	for _, p := range pc.procs {
		c, err := net.Dial("tcp", p.apiAddr)
		if err != nil {
			t.Errorf("%s API after READY=1: %v", p.id, err)
			continue
		}
		c.Close()
	}
	pc.stop(pc.procs[0])
	if got := nextNotify(t, conn, 20*time.Second); got != "STOPPING=1" {
		t.Errorf("notification after SIGTERM %q, want STOPPING=1", got)
	}
}

// TestMakeInstall: make install puts the three programs in PREFIX/bin and
// links SBINDIR/mount.jfs to jfs.
func TestMakeInstall(t *testing.T) {
	makeBin, err := exec.LookPath("make")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("no make in CI")
		}
		t.Skip("no make")
	}
	prefix := t.TempDir()
	sbin := filepath.Join(prefix, "sbin")
	out, err := exec.Command(makeBin, "-C", "..", "install", "PREFIX="+prefix, "SBINDIR="+sbin).CombinedOutput()
	if err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for _, p := range []string{"jfsd", "jfs", "jfsctl"} {
		fi, err := os.Stat(filepath.Join(prefix, "bin", p))
		if err != nil || fi.Mode()&0o111 == 0 {
			t.Errorf("%s/bin/%s: %v %v, want an executable", prefix, p, fi, err)
		}
	}
	link := filepath.Join(sbin, "mount.jfs")
	if target, err := os.Readlink(link); err != nil || target != filepath.Join(prefix, "bin", "jfs") {
		t.Errorf("%s -> %q (%v), want a link to %s/bin/jfs", link, target, err, prefix)
	}
	// The installed helper is jfs acting as mount.jfs.
	out, err = exec.Command(link, "h:1").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "mount.jfs: want two arguments") {
		t.Errorf("installed mount.jfs with one argument: %v: %s", err, out)
	}
}

// TestSystemdUnits checks contrib/systemd: every ExecStart runs a program
// with flags its --help lists (and so do the flags in the example
// environment files), and systemd-analyze verify, where installed, accepts
// the units with the programs at the built binaries.
func TestSystemdUnits(t *testing.T) {
	const dir = "../contrib/systemd"
	units, err := filepath.Glob(filepath.Join(dir, "*.service"))
	if err != nil || len(units) < 2 {
		t.Fatalf("units in %s: %v %v", dir, units, err)
	}
	mounts, _ := filepath.Glob(filepath.Join(dir, "*.mount"))
	units = append(units, mounts...)
	flagRE := regexp.MustCompile(`(?:^|\s)(--[a-z][a-z-]*)`)
	helpOf := map[string]string{}
	help := func(args ...string) string {
		key := strings.Join(args, " ")
		if h, ok := helpOf[key]; ok {
			return h
		}
		out, err := exec.Command(filepath.Join(binDir, args[0]), append(args[1:], "--help")...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s --help: %v\n%s", key, err, out)
		}
		helpOf[key] = string(out)
		return helpOf[key]
	}
	execStarts := 0
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		var prog []string // the program (and command) of ExecStart
		var flagLines []string
		for _, line := range strings.Split(string(b), "\n") {
			line = strings.TrimSpace(line)
			if rest, ok := strings.CutPrefix(line, "ExecStart="); ok {
				execStarts++
				f := strings.Fields(rest)
				const bin = "/usr/local/bin/"
				if !strings.HasPrefix(f[0], bin) {
					t.Errorf("%s: ExecStart %s is not in %s, where make install puts it", u, f[0], bin)
					continue
				}
				prog = []string{strings.TrimPrefix(f[0], bin)}
				if prog[0] == "jfs" {
					prog = append(prog, f[1])
				}
				flagLines = append(flagLines, rest)
			}
			// The example environment file lines: "#   JFSD_FLAGS=--addr ...".
			if strings.HasPrefix(line, "#") && strings.Contains(line, "_FLAGS=") {
				flagLines = append(flagLines, line)
			}
		}
		if prog == nil {
			continue
		}
		h := help(prog...)
		for _, l := range flagLines {
			for _, m := range flagRE.FindAllStringSubmatch(l, -1) {
				if !strings.Contains(h, m[1]+" ") && !strings.Contains(h, m[1]+"=") {
					t.Errorf("%s: %s has no flag %s", u, strings.Join(prog, " "), m[1])
				}
			}
		}
	}
	if execStarts < 2 {
		t.Errorf("found %d ExecStart lines, want one per service", execStarts)
	}

	analyze, err := exec.LookPath("systemd-analyze")
	if err != nil {
		t.Logf("no systemd-analyze; checked the ExecStart lines only")
		return
	}
	// Verify copies that run the built binaries: verify checks that
	// ExecStart's program exists.
	tmp := t.TempDir()
	var names []string
	for _, u := range units {
		b, _ := os.ReadFile(u)
		b = bytes.ReplaceAll(b, []byte("/usr/local/bin/"), []byte(binDir+"/"))
		name := filepath.Base(u)
		if err := os.WriteFile(filepath.Join(tmp, name), b, 0o644); err != nil {
			t.Fatal(err)
		}
		if strings.HasSuffix(name, "@.service") { // a template: verify an instance
			name = strings.TrimSuffix(name, "@.service") + "@n1.service"
		}
		names = append(names, "./"+name)
	}
	cmd := exec.Command(analyze, append([]string{"verify"}, names...)...)
	cmd.Dir = tmp
	out, err := cmd.CombinedOutput()
	if err != nil || len(bytes.TrimSpace(out)) != 0 {
		t.Errorf("systemd-analyze verify %v: %v\n%s", names, err, out)
	}
}
