package main

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/jfs-dev/jfs/internal/mtls"
)

var tlsCommand = &cli.Command{
	Name:  "tls",
	Usage: "make the cluster's CA and certificates",
	Description: `Every node, client and operator of a cluster with TLS holds a certificate of the
cluster's CA that names its role: node (raft and the calls between nodes),
client (the file system, with the sessions it registered itself) or admin
(jfsctl). Keep DIR/ca-key.pem offline once the certificates are made.

  jfsctl tls ca create --out /etc/jfs/tls
  jfsctl tls cert create --ca /etc/jfs/tls --node n1 --host 10.0.0.1 --out /etc/jfs/tls
  jfsctl tls cert create --ca /etc/jfs/tls --client web --root-squash --out /etc/jfs/tls
  jfsctl tls cert create --ca /etc/jfs/tls --admin ops --out /etc/jfs/tls`,
	Subcommands: []*cli.Command{
		{
			Name:  "ca",
			Usage: "the cluster's certificate authority",
			Subcommands: []*cli.Command{{
				Name:   "create",
				Usage:  "write a new CA to DIR/ca.pem and DIR/ca-key.pem (ECDSA P-256, ten years)",
				Flags:  []cli.Flag{&cli.StringFlag{Name: "out", Usage: "directory to write to (required)"}},
				Action: tlsCACreate,
			}},
		},
		{
			Name:  "cert",
			Usage: "certificates of the CA",
			Subcommands: []*cli.Command{{
				Name:  "create",
				Usage: "write DIR/NAME.pem and DIR/NAME-key.pem for a node, client or admin (ECDSA P-256, one year)",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "ca", Usage: "directory of the CA (ca.pem, ca-key.pem) (required)"},
					&cli.StringFlag{Name: "node", Usage: "a node certificate for node ID"},
					&cli.StringFlag{Name: "client", Usage: "a client certificate (jfs mount) named NAME"},
					&cli.StringFlag{Name: "admin", Usage: "an admin certificate (jfsctl) named NAME"},
					&cli.StringSliceFlag{Name: "host", Usage: "an IP address or DNS name the node is reached at (node certificates; repeat or separate with commas; 127.0.0.1 and localhost are always added)"},
					&cli.BoolFlag{Name: "root-squash", Usage: "client certificates: a caller with uid, gid or group 0 is nobody (65534) to the cluster, as NFS root_squash"},
					&cli.BoolFlag{Name: "read-only", Usage: "client certificates: every change is refused with EROFS"},
					&cli.StringFlag{Name: "out", Usage: "directory to write to (default: the CA's)"},
				},
				Action: tlsCertCreate,
			}},
		},
	},
}

func tlsCACreate(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("tls ca create: unexpected argument %q", c.Args().First())
	}
	out := c.String("out")
	if out == "" {
		return errors.New("tls ca create: --out DIR is required")
	}
	if err := mtls.CreateCA(out); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "%s\n%s\n", filepath.Join(out, mtls.CAFile), filepath.Join(out, mtls.CAKeyFile))
	return nil
}

func tlsCertCreate(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("tls cert create: unexpected argument %q", c.Args().First())
	}
	ca := c.String("ca")
	if ca == "" {
		return errors.New("tls cert create: --ca DIR is required")
	}
	var id mtls.Identity
	n := 0
	for _, r := range []mtls.Role{mtls.RoleNode, mtls.RoleClient, mtls.RoleAdmin} {
		if v := c.String(string(r)); v != "" {
			id = mtls.Identity{Role: r, Name: v}
			n++
		}
	}
	if n != 1 {
		return errors.New("tls cert create: want exactly one of --node ID, --client NAME, --admin NAME")
	}
	id.RootSquash, id.ReadOnly = c.Bool("root-squash"), c.Bool("read-only")
	if id.Role != mtls.RoleClient && (id.RootSquash || id.ReadOnly) {
		return errors.New("tls cert create: --root-squash and --read-only are for --client certificates")
	}
	if id.Role != mtls.RoleNode && len(c.StringSlice("host")) > 0 {
		return errors.New("tls cert create: --host is for --node certificates")
	}
	out := c.String("out")
	if out == "" {
		out = ca
	}
	path, err := mtls.CreateCert(ca, mtls.CertRequest{Identity: id, Hosts: c.StringSlice("host")}, out)
	if err != nil {
		return fmt.Errorf("tls cert create: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "%s\n%s\n", path, filepath.Join(out, id.Name+"-key.pem"))
	return nil
}
