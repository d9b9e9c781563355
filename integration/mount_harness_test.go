package integration

import (
	"bufio"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// jfsMount is one "jfs mount" process serving a mount point.
type jfsMount struct {
	t           testing.TB
	dir         string
	logPath     string
	metricsAddr string
	cmd         *exec.Cmd
	exited      chan struct{}
	killed      bool // by kill: its exit status is expected
}

// noCache turns every kernel cache of a mount off.
var noCache = []string{"--cache-mode", "off"}

// mustHaveFUSE skips a mount test on a machine without FUSE, except in CI,
// where mount tests must run.
func mustHaveFUSE(t testing.TB) {
	t.Helper()
	if _, err := os.Stat("/dev/fuse"); err != nil && os.Getenv("CI") == "" {
		t.Skipf("no FUSE here (%v); set CI=1 to fail instead", err)
	}
}

// startMount mounts pc on a new directory with "jfs mount" in the
// foreground, as its own process, and waits until the mount is up. The mount
// is taken down at cleanup, before the cluster stops.
func startMount(t testing.TB, pc *procCluster, extra ...string) *jfsMount {
	t.Helper()
	mustHaveFUSE(t)
	base := t.TempDir()
	m := &jfsMount{t: t, dir: filepath.Join(base, "mnt"), logPath: filepath.Join(base, "mount.log"), metricsAddr: freeAddr(t)}
	if err := os.Mkdir(m.dir, 0o755); err != nil {
		t.Fatal(err)
	}
	logf, err := os.Create(m.logPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"mount", "--servers", strings.Join(pc.servers(), ","), "--metrics", m.metricsAddr,
		"--log-level", "debug"}, extra...)
	m.cmd = exec.Command(filepath.Join(binDir, "jfs"), append(args, m.dir)...)
	m.cmd.Stdout, m.cmd.Stderr = logf, logf
	if err := m.cmd.Start(); err != nil {
		t.Fatalf("start jfs mount: %v", err)
	}
	m.exited = make(chan struct{})
	go func() {
		m.cmd.Wait()
		logf.Close()
		close(m.exited)
	}()
	t.Cleanup(m.stop)
	deadline := time.Now().Add(60 * time.Second)
	for !isMounted(m.dir) {
		select {
		case <-m.exited:
			t.Fatalf("jfs mount exited (%v) before mounting:\n%s", m.cmd.ProcessState, m.log())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not mounted after 60s:\n%s", m.dir, m.log())
		}
		time.Sleep(20 * time.Millisecond)
	}
	return m
}

func (m *jfsMount) log() string {
	b, _ := os.ReadFile(m.logPath)
	return tail(b, 80)
}

// kill ends the mount process with SIGKILL, as a crash would, and detaches
// the dead mount point.
func (m *jfsMount) kill() {
	m.killed = true
	m.cmd.Process.Kill()
	<-m.exited
	if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
		m.t.Errorf("lazy unmount of the killed mount %s: %v", m.dir, err)
	}
}

// stop unmounts with SIGTERM, as a user would, and makes sure nothing stays
// mounted even when that fails.
func (m *jfsMount) stop() {
	t := m.t
	if m.killed {
		return
	}
	if m.cmd.Process != nil {
		m.cmd.Process.Signal(syscall.SIGTERM)
	}
	select {
	case <-m.exited:
		if st := m.cmd.ProcessState; st != nil && !st.Success() && !t.Failed() {
			t.Errorf("jfs mount exited with %v after SIGTERM:\n%s", st, m.log())
		}
	case <-time.After(20 * time.Second):
		t.Errorf("jfs mount did not exit within 20s of SIGTERM:\n%s", m.log())
		syscall.Unmount(m.dir, syscall.MNT_DETACH)
		m.cmd.Process.Kill()
		<-m.exited
	}
	if isMounted(m.dir) {
		t.Errorf("%s still mounted after the mount process exited", m.dir)
		if err := syscall.Unmount(m.dir, syscall.MNT_DETACH); err != nil {
			t.Errorf("lazy unmount %s: %v", m.dir, err)
		}
	}
	if t.Failed() {
		t.Logf("---- log of the mount at %s ----\n%s", m.dir, m.log())
	}
}

// path is name inside the mount.
func (m *jfsMount) path(name string) string { return filepath.Join(m.dir, name) }

// isMounted reports whether dir is a mount point, from /proc/self/mountinfo.
func isMounted(dir string) bool {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) > 4 && unescapeMountinfo(fields[4]) == dir {
			return true
		}
	}
	return false
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			v := (int(s[i+1]-'0')<<6 | int(s[i+2]-'0')<<3 | int(s[i+3]-'0'))
			b.WriteByte(byte(v))
			i += 3
			continue
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mustWriteFile writes data to path and fails the test on error.
func mustWriteFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

// mustReadPath reads path and fails the test on error.
func mustReadPath(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// isNotExist reports whether err says that a name is gone.
func isNotExist(err error) bool { return errors.Is(err, os.ErrNotExist) }
