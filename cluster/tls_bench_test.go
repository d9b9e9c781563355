package cluster_test

import (
	"context"
	"net"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/cluster/clustertest"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// cpuNow is the CPU time (user and system) this process has used.
func cpuNow(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkAPITLS measures what mutual TLS costs a call of the API: a
// one-node cluster served over loopback TCP, called by a client in the
// same process, with and without TLS. cpu-us/op is the CPU time of the
// whole process (client and node) per call. Run with
//
//	go test -run '^$' -bench APITLS -benchtime 5s ./cluster/
func BenchmarkAPITLS(b *testing.B) {
	for _, op := range []string{"getattr", "flock-pair"} {
		for _, withTLS := range []bool{false, true} {
			name := op + "/plain"
			if withTLS {
				name = op + "/tls"
			}
			b.Run(name, func(b *testing.B) { benchAPI(b, op, withTLS) })
		}
	}
}

func benchAPI(b *testing.B, op string, withTLS bool) {
	var nodeTLS, clientTLS *mtls.Source
	if withTLS {
		dir := b.TempDir()
		if err := mtls.CreateCA(dir); err != nil {
			b.Fatal(err)
		}
		load := func(id mtls.Identity) *mtls.Source {
			if _, err := mtls.CreateCert(dir, mtls.CertRequest{Identity: id}, dir); err != nil {
				b.Fatal(err)
			}
			s, err := mtls.Load(mtls.Files{CA: filepath.Join(dir, mtls.CAFile),
				Cert: filepath.Join(dir, id.Name+".pem"), Key: filepath.Join(dir, id.Name+"-key.pem")})
			if err != nil {
				b.Fatal(err)
			}
			return s
		}
		nodeTLS, clientTLS = load(mtls.Identity{Role: mtls.RoleNode, Name: "n1"}), load(mtls.Identity{Role: mtls.RoleClient, Name: "bench"})
	}
	c := clustertest.NewCluster(b, 1, func(cfg *cluster.Config) { cfg.TLS = nodeTLS })
	n := c.Leader()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	g := cluster.Serve(n, lis)
	defer g.Stop()
	cl, err := client.New(client.Config{Servers: []string{lis.Addr().String()}, TLS: clientTLS})
	if err != nil {
		b.Fatal(err)
	}
	defer cl.Close()
	ctx := context.Background()
	if r, err := cl.Register(ctx, "h", "/m", 1, "bench"); err != nil || r.Errno != 0 {
		b.Fatalf("register: %v %v", err, r)
	}
	f, err := cl.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("f"), Mode: 0o644, Fh: 1})
	if err != nil || f.Errno != 0 {
		b.Fatalf("create: %v %v", err, f)
	}
	var call func(fh uint64) error
	switch op {
	case "getattr":
		call = func(uint64) error {
			r, err := cl.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: f.Attr.Ino})
			if err == nil && r.Errno != 0 {
				err = syscall.Errno(r.Errno)
			}
			return err
		}
	case "flock-pair":
		call = func(fh uint64) error {
			for _, t := range []jfspb.LockType{jfspb.LockType_LOCK_TYPE_WRITE, jfspb.LockType_LOCK_TYPE_UNLOCK} {
				r, err := cl.Flock(ctx, &jfspb.FlockRequest{Ino: f.Attr.Ino, Fh: fh, Type: t, Pid: 1})
				if err != nil {
					return err
				}
				if r.Errno != 0 && r.Errno != int32(syscall.EAGAIN) {
					return syscall.Errno(r.Errno)
				}
			}
			return nil
		}
	}
	if err := call(1); err != nil {
		b.Fatal(err)
	}
	// Every goroutine locks as the same owner (session, fh 2): no waits.
	b.SetParallelism(4)
	before := cpuNow(b)
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := call(2); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.StopTimer()
	b.ReportMetric(float64((cpuNow(b)-before).Microseconds())/float64(b.N), "cpu-us/op")
}
