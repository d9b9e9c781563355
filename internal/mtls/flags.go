package mtls

import (
	"github.com/urfave/cli/v2"
)

// Flags are --tls-ca, --tls-cert and --tls-key; with env, also read from
// JFS_TLS_CA, JFS_TLS_CERT and JFS_TLS_KEY.
func Flags(env bool) []cli.Flag {
	e := func(name string) []string {
		if env {
			return []string{name}
		}
		return nil
	}
	return []cli.Flag{
		&cli.StringFlag{Name: "tls-ca", EnvVars: e("JFS_TLS_CA"), Usage: "the cluster's CA certificate (PEM); with --tls-cert and --tls-key every connection is mutual TLS"},
		&cli.StringFlag{Name: "tls-cert", EnvVars: e("JFS_TLS_CERT"), Usage: "this program's certificate (PEM), signed by the CA (jfsctl tls cert create)"},
		&cli.StringFlag{Name: "tls-key", EnvVars: e("JFS_TLS_KEY"), Usage: "the key of --tls-cert (PEM)"},
	}
}

// FromFlags loads the files named by Flags; nil, nil when none is set.
func FromFlags(c *cli.Context) (*Source, error) {
	f := Files{CA: c.String("tls-ca"), Cert: c.String("tls-cert"), Key: c.String("tls-key")}
	if !f.Enabled() {
		return nil, nil
	}
	return Load(f)
}
