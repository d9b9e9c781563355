package mtls

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"
)

// Files are the three files of a TLS setup, as given by --tls-ca,
// --tls-cert and --tls-key.
type Files struct {
	CA, Cert, Key string
}

// Enabled reports whether any file is set.
func (f Files) Enabled() bool { return f.CA != "" || f.Cert != "" || f.Key != "" }

// check reports a partial setup.
func (f Files) check() error {
	if f.CA == "" || f.Cert == "" || f.Key == "" {
		return errors.New("TLS needs all three of --tls-ca, --tls-cert and --tls-key")
	}
	return nil
}

// checkEvery is how often, at most, a handshake looks whether the files
// changed on disk.
const checkEvery = time.Second

// Source holds the current certificate, key and CA of a process and reads
// them again when the files change on disk (looked at, at most once a
// second, when a connection is made) or when Reload is called (SIGHUP).
// A reload that fails keeps the previous ones and is reported through the
// error hook. Safe for concurrent use.
type Source struct {
	files Files
	// OnReload, when set before use, is told of every reload from disk:
	// err nil when it took effect.
	OnReload func(err error)

	mu      sync.Mutex
	cert    *tls.Certificate
	pool    *x509.CertPool
	id      Identity
	stamp   string // the files' sizes and mtimes when last read
	checked time.Time
}

// Load reads files and returns a Source for them. The certificate must
// name a jfs role (see IdentityOf) and be signed by the CA.
func Load(files Files) (*Source, error) {
	if err := files.check(); err != nil {
		return nil, err
	}
	s := &Source{files: files}
	if err := s.Reload(); err != nil {
		return nil, err
	}
	return s, nil
}

// Identity is the identity of this process's own certificate.
func (s *Source) Identity() Identity {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.id
}

func (s *Source) stampNow() string {
	var st string
	for _, f := range []string{s.files.CA, s.files.Cert, s.files.Key} {
		fi, err := os.Stat(f)
		if err != nil {
			st += "?;"
			continue
		}
		st += fmt.Sprintf("%d@%d;", fi.Size(), fi.ModTime().UnixNano())
	}
	return st
}

// Reload reads the files again. On error the previous certificate, key
// and CA stay in use.
func (s *Source) Reload() error {
	stamp := s.stampNow()
	caPEM, err := os.ReadFile(s.files.CA)
	if err != nil {
		return fmt.Errorf("tls ca: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return fmt.Errorf("tls ca %s: no PEM certificate in it", s.files.CA)
	}
	cert, err := tls.LoadX509KeyPair(s.files.Cert, s.files.Key)
	if err != nil {
		return fmt.Errorf("tls cert %s, key %s: %w", s.files.Cert, s.files.Key, err)
	}
	leaf := cert.Leaf
	if leaf == nil {
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return fmt.Errorf("tls cert %s: %w", s.files.Cert, err)
		}
		cert.Leaf = leaf
	}
	id, err := IdentityOf(leaf)
	if err != nil {
		return fmt.Errorf("tls cert %s: %w", s.files.Cert, err)
	}
	if _, err := leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		return fmt.Errorf("tls cert %s is not valid under the CA %s: %w", s.files.Cert, s.files.CA, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cert, s.pool, s.id, s.stamp, s.checked = &cert, pool, id, stamp, time.Now()
	return nil
}

// current returns the certificate and CA pool, first reading the files
// again if they changed since they were read (looked at once a second).
func (s *Source) current() (*tls.Certificate, *x509.CertPool) {
	s.mu.Lock()
	look := time.Since(s.checked) >= checkEvery
	if look {
		s.checked = time.Now()
	}
	stamp := s.stamp
	s.mu.Unlock()
	if look && s.stampNow() != stamp {
		err := s.Reload()
		if err != nil {
			// Do not try again until the files change once more.
			s.mu.Lock()
			s.stamp = s.stampNow()
			s.mu.Unlock()
		}
		if s.OnReload != nil {
			s.OnReload(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cert, s.pool
}

// ServerConfig is the TLS configuration of a listener: it presents this
// process's certificate and demands a certificate signed by the CA that
// names a jfs role from every peer. Who may do what is decided by the
// caller from PeerIdentity.
func (s *Source) ServerConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
			cert, pool := s.current()
			return &tls.Config{
				MinVersion:   tls.VersionTLS13,
				Certificates: []tls.Certificate{*cert},
				ClientCAs:    pool,
				ClientAuth:   tls.RequireAndVerifyClientCert,
				VerifyConnection: func(cs tls.ConnectionState) error {
					_, err := PeerIdentity(cs)
					return err
				},
			}, nil
		},
	}
}

// ClientConfig is the TLS configuration of a connection to a node: it
// presents this process's certificate and accepts only a server whose
// certificate is signed by the CA and has the node role. The server's
// host name is not checked: the role in a certificate of the cluster's CA
// is what makes it a node, wherever it is reached (see DESIGN.md).
func (s *Source) ClientConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS13,
		// Verified by VerifyConnection against the current CA, which a
		// static RootCAs could not follow through a rotation.
		InsecureSkipVerify: true,
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, _ := s.current()
			return cert, nil
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, pool := s.current()
			if len(cs.PeerCertificates) == 0 {
				return errors.New("mtls: server presented no certificate")
			}
			inter := x509.NewCertPool()
			for _, c := range cs.PeerCertificates[1:] {
				inter.AddCert(c)
			}
			if _, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter,
				KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
				return fmt.Errorf("mtls: server certificate: %w", err)
			}
			id, err := PeerIdentity(cs)
			if err != nil {
				return err
			}
			if id.Role != RoleNode {
				return fmt.Errorf("mtls: server certificate is %s, not a node's", id)
			}
			return nil
		},
	}
}

// PeerIdentity is the identity named by the peer's certificate in a
// verified connection.
func PeerIdentity(cs tls.ConnectionState) (Identity, error) {
	if len(cs.PeerCertificates) == 0 {
		return Identity{}, errors.New("mtls: peer presented no certificate")
	}
	return IdentityOf(cs.PeerCertificates[0])
}

// ReloadOnSIGHUP reads the files again at every SIGHUP until stop is
// called, telling report (if set) how each reload went.
func (s *Source) ReloadOnSIGHUP(report func(err error)) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				err := s.Reload()
				if report != nil {
					report(err)
				}
			case <-done:
				return
			}
		}
	}()
	return func() {
		signal.Stop(ch)
		close(done)
	}
}
