package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func runJfs(t *testing.T, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "jfs"), args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

// TestMountBadInput: clear errors and a non-zero exit, without hanging.
func TestMountBadInput(t *testing.T) {
	mustHaveFUSE(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	mustWriteFile(t, file, nil)
	down := freeAddr(t) // nothing listens there
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"no mount point", []string{"mount", "--servers", down}, "mount point"},
		{"missing mount point", []string{"mount", "--servers", down, filepath.Join(dir, "nope")}, "does not exist"},
		{"mount point is a file", []string{"mount", "--servers", down, file}, "not a directory"},
		{"no servers", []string{"mount", dir}, "--servers"},
		{"bad servers", []string{"mount", "--servers", "nohostport", dir}, "nohostport"},
		{"bad log level", []string{"mount", "--servers", down, "--log-level", "loud", dir}, "loud"},
		{"bad cache mode", []string{"mount", "--servers", down, "--cache-mode", "sometimes", dir}, `--cache-mode "sometimes": want coherent, timed or off`},
		{"cache max zero", []string{"mount", "--servers", down, "--cache-max", "0s", dir}, "--cache-max 0s: must be positive"},
		{"timed duration with coherent", []string{"mount", "--servers", down, "--cache-mode", "coherent", "--attr-cache", "1s", dir},
			"--attr-cache applies to --cache-mode timed only, not coherent"},
		{"release batch too large", []string{"mount", "--servers", down, "--release-batch", "5000", dir}, "--release-batch 5000"},
		{"cluster unreachable", []string{"mount", "--servers", down, "--retry-for", "2s", "--metrics", "", dir}, "cannot reach the jfs cluster"},
		{"cluster unreachable in the background", []string{"mount", "-d", "--log-file", filepath.Join(dir, "log"),
			"--servers", down, "--retry-for", "2s", "--metrics", "", dir}, "cannot reach the jfs cluster"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, errOut, err := runJfs(t, tc.args...)
			if err == nil || !strings.Contains(errOut, tc.want) {
				t.Errorf("jfs %v: err %v, stderr %q, want it to mention %q", tc.args, err, errOut, tc.want)
			}
			if d := time.Since(start); d > 20*time.Second {
				t.Errorf("took %v", d)
			}
			if isMounted(dir) {
				t.Fatalf("%s mounted", dir)
			}
		})
	}
}

// TestMountBackground: "jfs mount -d" returns once mounted and prints the
// mount process's pid; the session is registered with the mount's details,
// metrics are served, and "jfs umount" ends the process and its session.
func TestMountBackground(t *testing.T) {
	pc := startProcCluster(t, 3)
	mustHaveFUSE(t)
	base := t.TempDir()
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	metricsAddr := freeAddr(t)
	out, errOut, err := runJfs(t, "mount", "-d", "--servers", strings.Join(pc.servers(), ","),
		"--log-file", filepath.Join(base, "log"), "--metrics", metricsAddr, mnt)
	if err != nil {
		t.Fatalf("jfs mount -d: %v: %s", err, errOut)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(out))
	if err != nil {
		t.Fatalf("jfs mount -d printed %q, want a pid", out)
	}
	proc, _ := os.FindProcess(pid)
	t.Cleanup(func() {
		if isMounted(mnt) {
			syscall.Unmount(mnt, syscall.MNT_DETACH)
		}
		proc.Signal(syscall.SIGKILL)
	})
	if !isMounted(mnt) {
		t.Fatalf("%s not mounted when jfs mount -d returned", mnt)
	}
	mustWriteFile(t, filepath.Join(mnt, "hello"), []byte("world"))

	c := pc.client(t)
	var sessions *jfspb.ListSessionsResponse
	err = c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) (err error) {
		sessions, err = a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
		return err
	})
	if err != nil || len(sessions.GetSessions()) != 1 {
		t.Fatalf("sessions: %v %v", sessions, err)
	}
	if s := sessions.Sessions[0]; s.MountPoint != mnt || s.Pid != uint32(pid) || s.Host == "" || s.Version == "" {
		t.Errorf("session %v, want mount point %s and pid %d", s, mnt, pid)
	}

	resp, err := http.Get("http://" + metricsAddr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(body), `jfs_fuse_ops_total{method="Create"}`) {
		t.Errorf("metrics lack the Create count:\n%s", body)
	}

	if _, errOut, err := runJfs(t, "umount", mnt); err != nil {
		t.Fatalf("jfs umount: %v: %s", err, errOut)
	}
	if isMounted(mnt) {
		t.Fatalf("%s still mounted after jfs umount", mnt)
	}
	deadline := time.Now().Add(15 * time.Second)
	for proc.Signal(syscall.Signal(0)) == nil {
		if time.Now().After(deadline) {
			t.Fatalf("mount process %d still runs 15s after the unmount", pid)
		}
		time.Sleep(20 * time.Millisecond)
	}
	err = c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) (err error) {
		sessions, err = a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
		return err
	})
	if err != nil || len(sessions.GetSessions()) != 0 {
		t.Fatalf("sessions after the unmount: %v %v", sessions, err)
	}
}
