package integration

import (
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// TLS clusters: opt-in. startTLSProcCluster makes a CA and a node
// certificate per node with the built jfsctl (jfsctl tls ...) and starts
// the nodes with --tls-ca, --tls-cert and --tls-key. Every other test
// keeps the plaintext loopback cluster of startProcCluster.

// tlsCluster is a procCluster whose nodes serve mutual TLS only.
type tlsCluster struct {
	*procCluster
	dir string // the CA and every certificate made for the test
}

// mustMakeCA runs jfsctl tls ca create in a new directory.
func mustMakeCA(t testing.TB) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "tls")
	if out, errOut, err := jfsctl(t, nil, "tls", "ca", "create", "--out", dir); err != nil {
		t.Fatalf("jfsctl tls ca create: %v\n%s%s", err, out, errOut)
	}
	return dir
}

// mustMakeCert runs jfsctl tls cert create with args (--node ID, --client
// NAME, options) for the CA in dir and returns the files.
func mustMakeCert(t testing.TB, dir string, args ...string) mtls.Files {
	t.Helper()
	out, errOut, err := jfsctl(t, nil, append([]string{"tls", "cert", "create", "--ca", dir, "--out", dir}, args...)...)
	if err != nil {
		t.Fatalf("jfsctl tls cert create %v: %v\n%s%s", args, err, out, errOut)
	}
	name := args[1]
	return mtls.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
}

func startTLSProcCluster(t testing.TB, n int, extra ...string) *tlsCluster {
	t.Helper()
	dir := mustMakeCA(t)
	for i := 1; i <= n; i++ {
		mustMakeCert(t, dir, "--node", fmt.Sprintf("n%d", i))
	}
	pc := startProcClusterEach(t, n, func(i int) []string {
		f := nodeFiles(dir, fmt.Sprintf("n%d", i+1))
		return append([]string{"--tls-ca", f.CA, "--tls-cert", f.Cert, "--tls-key", f.Key}, extra...)
	})
	return &tlsCluster{procCluster: pc, dir: dir}
}

// nodeFiles are the files of certificate name in dir.
func nodeFiles(dir, name string) mtls.Files {
	return mtls.Files{CA: filepath.Join(dir, "ca.pem"), Cert: filepath.Join(dir, name+".pem"), Key: filepath.Join(dir, name+"-key.pem")}
}

// mustSource loads files.
func mustSource(t testing.TB, f mtls.Files) *mtls.Source {
	t.Helper()
	src, err := mtls.Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return src
}

// clientWith is a client of the cluster that connects with src (nil:
// plaintext) and gives up after retryFor.
func (tc *tlsCluster) clientWith(t testing.TB, src *mtls.Source, retryFor time.Duration) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Servers: tc.servers(), RetryFor: retryFor, AttemptTimeout: 2 * time.Second, TLS: src})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// certClient makes a certificate (jfsctl tls cert create args) and
// returns a client that uses it.
func (tc *tlsCluster) certClient(t testing.TB, args ...string) *client.Client {
	t.Helper()
	return tc.clientWith(t, mustSource(t, mustMakeCert(t, tc.dir, args...)), 30*time.Second)
}
