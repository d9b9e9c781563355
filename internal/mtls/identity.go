// Package mtls is jfs's mutual TLS: the certificates jfs makes for its
// cluster (a CA, and node, client and admin certificates with the role in
// a URI SAN), the identity a peer's certificate proves, and TLS
// configurations whose certificates are read again from disk when they
// change, so they can be rotated without a restart. DESIGN.md says why.
package mtls

import (
	"crypto/x509"
	"errors"
	"fmt"
	"net/url"
	"strings"
)

// Role is what a certificate allows its holder to do.
type Role string

// The roles. A node takes part in raft and calls the other nodes; a client
// uses the Meta service with its own sessions; an admin uses the Admin
// service (and Meta, as a client would).
const (
	RoleNode   Role = "node"
	RoleClient Role = "client"
	RoleAdmin  Role = "admin"
)

// uriScheme and uriHost start the URI SAN that names a certificate's role
// and name: jfs://role/ROLE/NAME, with options in the query
// (jfs://role/client/alice?read-only&root-squash).
const (
	uriScheme = "jfs"
	uriHost   = "role"
)

// Options of a client certificate.
const (
	optRootSquash = "root-squash"
	optReadOnly   = "read-only"
)

// Identity is who a verified certificate names.
type Identity struct {
	Role Role
	Name string
	// RootSquash (client certificates): uid and gid 0 in requests become
	// NobodyID, as NFS's root_squash does.
	RootSquash bool
	// ReadOnly (client certificates): every call that would change the
	// file system is answered EROFS.
	ReadOnly bool
}

// NobodyID is the uid and gid that root becomes under RootSquash.
const NobodyID = 65534

// ErrNoRole: the certificate carries no jfs role.
var ErrNoRole = errors.New("mtls: certificate names no jfs role (want a URI SAN jfs://role/ROLE/NAME)")

// String is "role/name", the form recorded in sessions.
func (id Identity) String() string { return string(id.Role) + "/" + id.Name }

// URI is the certificate SAN that names id.
func (id Identity) URI() *url.URL {
	u := &url.URL{Scheme: uriScheme, Host: uriHost, Path: "/" + string(id.Role) + "/" + id.Name}
	var opts []string
	if id.RootSquash {
		opts = append(opts, optRootSquash)
	}
	if id.ReadOnly {
		opts = append(opts, optReadOnly)
	}
	u.RawQuery = strings.Join(opts, "&")
	return u
}

// ParseIdentity reads the identity from a jfs URI SAN.
func ParseIdentity(u *url.URL) (Identity, error) {
	if u.Scheme != uriScheme || u.Host != uriHost {
		return Identity{}, ErrNoRole
	}
	role, name, ok := strings.Cut(strings.TrimPrefix(u.Path, "/"), "/")
	if !ok || name == "" || strings.Contains(name, "/") {
		return Identity{}, fmt.Errorf("mtls: certificate URI %s: want jfs://role/ROLE/NAME", u)
	}
	id := Identity{Role: Role(role), Name: name}
	switch id.Role {
	case RoleNode, RoleClient, RoleAdmin:
	default:
		return Identity{}, fmt.Errorf("mtls: certificate URI %s: unknown role %q", u, role)
	}
	if u.RawQuery != "" {
		for _, o := range strings.Split(u.RawQuery, "&") {
			switch o {
			case optRootSquash:
				id.RootSquash = true
			case optReadOnly:
				id.ReadOnly = true
			default:
				return Identity{}, fmt.Errorf("mtls: certificate URI %s: unknown option %q", u, o)
			}
		}
	}
	if id.Role != RoleClient && (id.RootSquash || id.ReadOnly) {
		return Identity{}, fmt.Errorf("mtls: certificate URI %s: options are for client certificates only", u)
	}
	return id, nil
}

// IdentityOf is the identity that a certificate (verified against the
// cluster's CA by the caller) names: its one jfs URI SAN.
func IdentityOf(cert *x509.Certificate) (Identity, error) {
	var found []Identity
	for _, u := range cert.URIs {
		if u.Scheme != uriScheme {
			continue
		}
		id, err := ParseIdentity(u)
		if err != nil {
			return Identity{}, err
		}
		found = append(found, id)
	}
	switch len(found) {
	case 0:
		return Identity{}, ErrNoRole
	case 1:
		return found[0], nil
	}
	return Identity{}, errors.New("mtls: certificate names more than one jfs role")
}

// ParseCallerURI parses the URI form of an identity (Identity.URI), as a
// forwarding node passes it on.
func ParseCallerURI(s string) (Identity, error) {
	u, err := url.Parse(s)
	if err != nil {
		return Identity{}, fmt.Errorf("mtls: caller %q: %w", s, err)
	}
	return ParseIdentity(u)
}
