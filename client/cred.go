package client

import (
	"context"
	"os"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Credentials. Every request that the cluster checks permissions for
// carries the identity it acts for (jfspb.Cred): mutations in their Header,
// and Lookup, ReadDir, Read, GetXattr and ListXattr in a field of their
// own. The identity is, in order: one given to the call's context
// (WithCred), the client's Config.Cred, or the process's own effective
// uid, gid and supplementary groups. A FUSE mount gives each request the
// identity of the process that made it (fuse/creds.go).

type credKey struct{}

// WithCred returns a context whose requests act for cred.
func WithCred(ctx context.Context, cred *jfspb.Cred) context.Context {
	return context.WithValue(ctx, credKey{}, cred)
}

// CredFrom returns the identity given to ctx by WithCred, or nil.
func CredFrom(ctx context.Context) *jfspb.Cred {
	c, _ := ctx.Value(credKey{}).(*jfspb.Cred)
	return c
}

// ProcessCred is the identity of this process: its effective uid and gid
// and its supplementary groups.
func ProcessCred() *jfspb.Cred {
	c := &jfspb.Cred{Uid: uint32(os.Geteuid()), Gid: uint32(os.Getegid())}
	if groups, err := os.Getgroups(); err == nil {
		for _, g := range groups {
			if uint32(g) != c.Gid {
				c.Groups = append(c.Groups, uint32(g))
			}
		}
	}
	return c
}

// cred is the identity a request made with ctx acts for.
func (c *Client) cred(ctx context.Context) *jfspb.Cred {
	if cr := CredFrom(ctx); cr != nil {
		return cr
	}
	return c.cfg.Cred
}
