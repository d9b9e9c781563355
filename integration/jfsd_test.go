package integration

import (
	"bufio"
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestJfsdDev runs the README's "run it" command: jfsd dev prints the
// servers, jfsctl reaches them, SIGINT stops everything with exit 0, and a
// restart from the same --dir serves the same cluster again.
func TestJfsdDev(t *testing.T) {
	mustHaveFUSE(t)
	dir, mnt := t.TempDir(), t.TempDir()
	for round := 0; round < 2; round++ {
		cmd := exec.Command(filepath.Join(binDir, "jfsd"), "dev", "--dir", dir, "--mount", mnt, "--log-level", "warn")
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// The servers, and the TLS files of the dev cluster's CA that
		// jfsctl needs: the cluster serves mutual TLS only.
		exports := make(chan map[string]string, 1)
		go func() {
			re := regexp.MustCompile(`export (JFS_\w+)=(\S+)`)
			env := map[string]string{}
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				if m := re.FindStringSubmatch(sc.Text()); m != nil {
					env[m[1]] = m[2]
					if m[1] == "JFS_TLS_KEY" {
						exports <- env
					}
				}
			}
		}()
		var list string
		select {
		case env := <-exports:
			list = env["JFS_SERVERS"]
			for _, k := range []string{"JFS_TLS_CA", "JFS_TLS_CERT", "JFS_TLS_KEY"} {
				if env[k] == "" {
					t.Fatalf("jfsd dev printed no export %s", k)
				}
				t.Setenv(k, env[k])
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("jfsd dev printed no servers within 30s; stderr:\n%s", stderr.String())
		}
		// Right after the start there may be no leader yet.
		deadline := time.Now().Add(20 * time.Second)
		for {
			out, errOut, err := jfsctl(t, strings.Split(list, ","), "cluster", "status")
			if err == nil && strings.Contains(out, "Leader") {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("round %d: cluster status: %v\n%s%s", round, err, out, errOut)
			}
			time.Sleep(100 * time.Millisecond)
		}
		// --mount: the cluster is mounted; what round 0 wrote, round 1 reads.
		if !isMounted(mnt) {
			t.Fatalf("round %d: %s not mounted", round, mnt)
		}
		if round == 0 {
			mustWriteFile(t, filepath.Join(mnt, "hello"), []byte("kept"))
		} else if got := string(mustReadPath(t, filepath.Join(mnt, "hello"))); got != "kept" {
			t.Fatalf("round 1 reads %q through the mount, want what round 0 wrote", got)
		}
		cmd.Process.Signal(syscall.SIGINT)
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("round %d: jfsd dev exited with %v after SIGINT; stderr:\n%s", round, err, stderr.String())
			}
		case <-time.After(30 * time.Second):
			cmd.Process.Kill()
			t.Fatalf("round %d: jfsd dev still running 30s after SIGINT", round)
		}
	}
	if isMounted(mnt) {
		syscall.Unmount(mnt, syscall.MNT_DETACH)
		t.Fatalf("%s still mounted after jfsd dev exited", mnt)
	}
	for _, id := range []string{"n1", "n2", "n3"} {
		if _, err := os.Stat(filepath.Join(dir, id, "fsm.db")); err != nil {
			t.Errorf("state of %s not kept in --dir: %v", id, err)
		}
	}
}

// TestJfsdBadInput: bad flags get a clear error and a non-zero exit, before
// anything is written.
func TestJfsdBadInput(t *testing.T) {
	dataDir := filepath.Join(t.TempDir(), "data")
	base := []string{"--id", "n1", "--data-dir", dataDir}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--data-dir", dataDir}, "--id is required"},
		{[]string{"--id", "n1"}, "--data-dir is required"},
		{append(base, "--raft-addr", "nope"), `--raft-addr "nope"`},
		{append(base, "--addr", "127.0.0.1"), `--addr "127.0.0.1"`},
		{append(base, "--initial-cluster", "n1"), "want ID=HOST:PORT"},
		{append(base, "--initial-cluster", "n2=127.0.0.1:7002,n3=127.0.0.1:7003"), `does not name this node "n1"`},
		{append(base, "--initial-cluster", "n1=127.0.0.1:7001,n1=127.0.0.1:7002"), `names "n1" twice`},
		{append(base, "--log-level", "loud"), `--log-level "loud"`},
		{append(base, "--no-such-flag"), "flag provided but not defined"},
		{append(base, "extra"), `unexpected argument "extra"`},
		// Settings recorded when the cluster is created.
		{append(base, "--block-size", "3K"), `--block-size "3K"`},
		{append(base, "--block-size", "2K"), `--block-size "2K"`},
		{append(base, "--block-size", "8M"), `--block-size "8M"`},
		{append(base, "--block-size", "lots"), `--block-size "lots"`},
		{append(base, "--capacity", "12X"), `--capacity`},
		{append(base, "--capacity", "99999999P"), `too large`},
		// Raft timings that cannot work together.
		{append(base, "--heartbeat-timeout", "500ms"), "--leader-lease-timeout 1s must not exceed --heartbeat-timeout 500ms"},
		{append(base, "--heartbeat-timeout", "2s", "--election-timeout", "1s", "--leader-lease-timeout", "1s"), "--election-timeout 1s must be at least --heartbeat-timeout 2s"},
		{append(base, "--leader-lease-timeout", "1ms"), "--leader-lease-timeout 1ms: must be at least 10ms"},
		{append(base, "--commit-timeout", "0s"), "--commit-timeout 0s: must be at least 1ms"},
		// TLS: all three files, and a node's own certificate.
		{append(base, "--tls-ca", "/nonexistent/ca.pem"), "TLS needs all three of --tls-ca, --tls-cert and --tls-key"},
		{append(base, "--tls-ca", "/nonexistent/ca.pem", "--tls-cert", "/nonexistent/n1.pem", "--tls-key", "/nonexistent/n1-key.pem"), "/nonexistent/ca.pem"},
	} {
		cmd := exec.Command(filepath.Join(binDir, "jfsd"), tc.args...)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Errorf("jfsd %v: exit 0, want an error", tc.args)
			continue
		}
		if !strings.Contains(string(out), tc.want) {
			t.Errorf("jfsd %v: output %q, want it to mention %q", tc.args, out, tc.want)
		}
	}
	if _, err := os.Stat(dataDir); !os.IsNotExist(err) {
		t.Errorf("a rejected command created the data dir (%v)", err)
	}
	out, err := exec.Command(filepath.Join(binDir, "jfsd"), "--help").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--initial-cluster") || !strings.Contains(string(out), "dev") {
		t.Errorf("jfsd --help: %v\n%s", err, out)
	}
}
