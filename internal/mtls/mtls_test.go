package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func mustCA(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	if err := CreateCA(dir); err != nil {
		t.Fatal(err)
	}
	return dir
}

func mustCert(t *testing.T, ca string, id Identity, hosts ...string) Files {
	t.Helper()
	if _, err := CreateCert(ca, CertRequest{Identity: id, Hosts: hosts}, ca); err != nil {
		t.Fatal(err)
	}
	return Files{CA: filepath.Join(ca, CAFile), Cert: filepath.Join(ca, id.Name+".pem"), Key: filepath.Join(ca, id.Name+"-key.pem")}
}

func mustLoad(t *testing.T, f Files) *Source {
	t.Helper()
	s, err := Load(f)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestIdentityURIRoundTrip(t *testing.T) {
	for _, id := range []Identity{
		{Role: RoleNode, Name: "n1"},
		{Role: RoleAdmin, Name: "ops"},
		{Role: RoleClient, Name: "web", RootSquash: true},
		{Role: RoleClient, Name: "web", ReadOnly: true, RootSquash: true},
	} {
		got, err := ParseCallerURI(id.URI().String())
		if err != nil || got != id {
			t.Errorf("%+v: URI %s parses to %+v, %v", id, id.URI(), got, err)
		}
	}
	for _, bad := range []string{"jfs://role/king/x", "jfs://role/node/", "jfs://role/node/a/b",
		"jfs://role/node/n1?read-only", "jfs://role/client/c?fly", "https://role/node/n1"} {
		u, _ := url.Parse(bad)
		if _, err := ParseIdentity(u); err == nil {
			t.Errorf("%s: parsed, want an error", bad)
		}
	}
}

func TestCreateCert(t *testing.T) {
	ca := mustCA(t)
	if err := CreateCA(ca); err == nil {
		t.Fatal("a second CreateCA overwrote the CA")
	}
	f := mustCert(t, ca, Identity{Role: RoleNode, Name: "n1"}, "10.0.0.1", "node1.example")
	for _, p := range []string{f.Key, filepath.Join(ca, CAKeyFile)} {
		fi, err := os.Stat(p)
		if err != nil || fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v (%v), want 0600", p, fi.Mode().Perm(), err)
		}
	}
	b, _ := os.ReadFile(f.Cert)
	blk, _ := pem.Decode(b)
	cert, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if err := cert.VerifyHostname("10.0.0.1"); err != nil {
		t.Error(err)
	}
	for _, h := range []string{"127.0.0.1", "localhost", "node1.example"} {
		if err := cert.VerifyHostname(h); err != nil {
			t.Error(err)
		}
	}
	if id, err := IdentityOf(cert); err != nil || id != (Identity{Role: RoleNode, Name: "n1"}) {
		t.Errorf("identity %+v, %v", id, err)
	}
	if _, err := CreateCert(ca, CertRequest{Identity: Identity{Role: RoleNode, Name: "n1"}}, ca); err == nil {
		t.Error("a second certificate for n1 overwrote the first")
	}
	if _, err := CreateCert(ca, CertRequest{Identity: Identity{Role: RoleAdmin, Name: "ops", ReadOnly: true}}, ca); err == nil {
		t.Error("an admin certificate took a client option")
	}
	if _, err := CreateCert(ca, CertRequest{Identity: Identity{Role: RoleClient, Name: "../x"}}, ca); err == nil {
		t.Error("a name with a path was taken")
	}
}

// handshake connects a client with cc to a server with sc over a pipe
// and returns the client's and the server's errors.
func handshake(cc, sc *tls.Config) (clientErr, serverErr error, server tls.ConnectionState) {
	a, b := net.Pipe()
	srv := tls.Server(b, sc)
	done := make(chan error, 1)
	go func() {
		done <- srv.Handshake()
		srv.Close()
	}()
	cli := tls.Client(a, cc)
	clientErr = cli.Handshake()
	if clientErr == nil {
		// TLS 1.3: the server checks the client's certificate after the
		// client's handshake is done; a read sees its verdict.
		cli.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err := cli.Read(make([]byte, 1))
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) && err.Error() != "EOF" {
			clientErr = err
		}
	}
	cli.Close()
	serverErr = <-done
	return clientErr, serverErr, srv.ConnectionState()
}

func TestHandshakes(t *testing.T) {
	ca, other := mustCA(t), mustCA(t)
	node := mustLoad(t, mustCert(t, ca, Identity{Role: RoleNode, Name: "n1"}))
	alice := mustLoad(t, mustCert(t, ca, Identity{Role: RoleClient, Name: "alice"}))
	stranger := mustLoad(t, mustCert(t, other, Identity{Role: RoleAdmin, Name: "ops"}))

	cerr, serr, st := handshake(alice.ClientConfig(), node.ServerConfig())
	if cerr != nil || serr != nil {
		t.Fatalf("alice to node: %v / %v", cerr, serr)
	}
	if id, err := PeerIdentity(st); err != nil || id.String() != "client/alice" {
		t.Fatalf("server sees %v, %v", id, err)
	}
	if _, serr, _ := handshake(stranger.ClientConfig(), node.ServerConfig()); serr == nil {
		t.Fatal("a certificate of another CA was accepted")
	}
	noCert := &tls.Config{InsecureSkipVerify: true, MinVersion: tls.VersionTLS13}
	if _, serr, _ := handshake(noCert, node.ServerConfig()); serr == nil {
		t.Fatal("a client without a certificate was accepted")
	}
	// A client dials only nodes.
	if cerr, _, _ := handshake(node.ClientConfig(), alice.ServerConfig()); cerr == nil {
		t.Fatal("a client certificate was accepted as a server")
	}
}

// TestRotation: new files on disk are taken at the next handshake after
// checkEvery, or at once by Reload; broken files keep the old ones.
func TestRotation(t *testing.T) {
	ca := mustCA(t)
	f := mustCert(t, ca, Identity{Role: RoleNode, Name: "n1"})
	src := mustLoad(t, f)
	reloads := make(chan error, 4)
	src.OnReload = func(err error) { reloads <- err }

	// Replace n1's files by a certificate of a new CA (a full rotation).
	ca2 := mustCA(t)
	f2 := mustCert(t, ca2, Identity{Role: RoleNode, Name: "n1"})
	for _, p := range [][2]string{{f2.CA, f.CA}, {f2.Cert, f.Cert}, {f2.Key, f.Key}} {
		b, err := os.ReadFile(p[0])
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p[1]+".new", b, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(p[1]+".new", p[1]); err != nil {
			t.Fatal(err)
		}
	}
	src.mu.Lock()
	src.checked = time.Time{} // as if checkEvery had passed
	src.mu.Unlock()
	peer := mustLoad(t, mustCert(t, ca2, Identity{Role: RoleClient, Name: "c"}))
	if cerr, serr, _ := handshake(peer.ClientConfig(), src.ServerConfig()); cerr != nil || serr != nil {
		t.Fatalf("after rotation: %v / %v", cerr, serr)
	}
	if err := <-reloads; err != nil {
		t.Fatalf("reload: %v", err)
	}

	// A broken key: Reload fails and the rotated certificate stays.
	if err := os.WriteFile(f.Key, []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := src.Reload(); err == nil {
		t.Fatal("Reload took a broken key")
	}
	if cerr, serr, _ := handshake(peer.ClientConfig(), src.ServerConfig()); cerr != nil || serr != nil {
		t.Fatalf("after a failed reload: %v / %v", cerr, serr)
	}
}
