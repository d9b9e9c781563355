package integration

import (
	"context"
	"errors"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/cluster"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// mustDenied fails unless err is a PermissionDenied status.
func mustDenied(t *testing.T, what string, err error) {
	t.Helper()
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("%s: got %v, want PermissionDenied", what, err)
	}
}

// mustTerms fails if any running node's term is beyond a sane bound,
// and returns the terms.
func mustSaneTerms(t *testing.T, pc *procCluster, c *client.Client) {
	t.Helper()
	for _, p := range pc.procs {
		var st *jfspb.ClusterStatusResponse
		err := c.AdminAt(context.Background(), p.apiAddr, func(ctx context.Context, a jfspb.AdminClient) (err error) {
			st, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
			return err
		})
		if err != nil {
			t.Fatalf("%s: cluster status: %v", p.id, err)
		}
		if st.Term > 1<<20 {
			t.Fatalf("%s is at term %d after a forged raft request", p.id, st.Term)
		}
	}
}

// forgeVote sends one RequestVote with term to the raft port at target
// through trans, posing as candidate (id, addr) in a leadership transfer,
// which every node takes seriously. It returns the transport's error.
func forgeVote(trans *raft.NetworkTransport, target string, id, addr string, term uint64) error {
	req := &raft.RequestVoteRequest{
		RPCHeader:          raft.RPCHeader{ProtocolVersion: raft.ProtocolVersionMax, ID: []byte(id), Addr: []byte(addr)},
		Term:               term,
		LastLogIndex:       math.MaxUint64 / 2,
		LastLogTerm:        term,
		LeadershipTransfer: true,
	}
	var resp raft.RequestVoteResponse
	return trans.RequestVote(raft.ServerID(id), raft.ServerAddress(target), req, &resp)
}

// TestForgedVoteTermRefused sends every node of a plaintext cluster a
// RequestVote with term 2^64-1 (the attack of issue 11, which made every
// node step down at that term for good): each must refuse it, keep its
// term, and the cluster must go on taking writes.
func TestForgedVoteTermRefused(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegisterSession(t, c)
	trans, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 5*time.Second, hclog.NewNullLogger())
	if err != nil {
		t.Fatal(err)
	}
	defer trans.Close()
	for _, p := range pc.procs {
		if err := forgeVote(trans, p.raftAddr, "n1", pc.procs[0].raftAddr, math.MaxUint64); err == nil ||
			!strings.Contains(err.Error(), "absurdly far ahead") {
			t.Fatalf("%s answered a vote at term 2^64-1 with %v, want it refused", p.id, err)
		}
	}
	mustSaneTerms(t, pc, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Mkdir(ctx, &jfspb.MkdirRequest{Parent: 1, Name: []byte("after"), Mode: 0o755})
	if err != nil || r.Errno != 0 {
		t.Fatalf("mkdir after the forged vote: %v, errno %d", err, r.GetErrno())
	}
}

// mustRegister registers a session for c and returns its id.
func mustRegisterSession(t *testing.T, c *client.Client) uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.Register(ctx, "test", "/t", uint32(os.Getpid()), "test")
	if err != nil || r.Errno != 0 {
		t.Fatalf("register: %v, errno %d", err, r.GetErrno())
	}
	return r.Session
}

// TestTLSCluster checks who may do what on a cluster with TLS (issue 11):
// each subtest is an attack that worked on a node without it.
func TestTLSCluster(t *testing.T) {
	tc := startTLSProcCluster(t, 3, "--integrity-check", "100ms")
	ctx := context.Background()
	admin := tc.certClient(t, "--admin", "ops")
	mustRegisterSession(t, admin) // waits for a leader

	t.Run("no certificate refused", func(t *testing.T) {
		c := tc.clientWith(t, nil, 2*time.Second)
		if _, err := c.Register(ctx, "h", "/m", 1, "v"); err == nil {
			t.Fatal("a client without a certificate registered a session")
		}
		if _, _, err := jfsctl(t, tc.servers(), "--timeout", "2s", "cluster", "status"); err == nil {
			t.Fatal("jfsctl without a certificate read the cluster status")
		}
	})

	t.Run("wrong CA refused", func(t *testing.T) {
		other := mustMakeCA(t)
		c := tc.clientWith(t, mustSource(t, mustMakeCert(t, other, "--admin", "ops")), 2*time.Second)
		if _, err := c.Register(ctx, "h", "/m", 1, "v"); err == nil {
			t.Fatal("a certificate of another CA registered a session")
		}
	})

	t.Run("client cannot call Admin", func(t *testing.T) {
		c := tc.certClient(t, "--client", "alice")
		sid := mustRegisterSession(t, c)
		for _, p := range tc.procs {
			err := c.AdminAt(ctx, p.apiAddr, func(ctx context.Context, a jfspb.AdminClient) error {
				_, err := a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
				return err
			})
			mustDenied(t, p.id+": ClusterStatus", err)
		}
		err := c.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) error {
			_, err := a.EvictSession(ctx, &jfspb.EvictSessionRequest{Session: sid})
			return err
		})
		mustDenied(t, "EvictSession", err)
		err = c.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) error {
			s, err := a.SnapshotSave(ctx, &jfspb.SnapshotSaveRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		})
		mustDenied(t, "SnapshotSave", err)
		// The admin may.
		err = admin.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) error {
			_, err := a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
			return err
		})
		if err != nil {
			t.Fatalf("admin: ListSessions: %v", err)
		}
	})

	t.Run("only nodes reach raft", func(t *testing.T) {
		alice := mustSource(t, mustMakeCert(t, tc.dir, "--client", "mallory"))
		withCert, err := cluster.NewRaftTransport("127.0.0.1:0", alice, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		defer withCert.Close()
		plain, err := raft.NewTCPTransportWithLogger("127.0.0.1:0", nil, 1, 5*time.Second, hclog.NewNullLogger())
		if err != nil {
			t.Fatal(err)
		}
		defer plain.Close()
		for _, p := range tc.procs {
			for name, tr := range map[string]*raft.NetworkTransport{"client certificate": withCert, "no certificate": plain} {
				if err := forgeVote(tr, p.raftAddr, "n1", tc.procs[0].raftAddr, 1<<40); err == nil {
					t.Fatalf("%s: a vote with %s was answered", p.id, name)
				}
			}
		}
		mustSaneTerms(t, tc.procCluster, admin)
	})

	t.Run("sessions belong to who registered them", func(t *testing.T) {
		alice, bob := tc.certClient(t, "--client", "alice2"), tc.certClient(t, "--client", "bob")
		victim := mustRegisterSession(t, alice)
		mustRegisterSession(t, bob)
		_, err := bob.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: victim})
		mustDenied(t, "heartbeat of another's session", err)
		// A request under the victim's session carries its header: seq and
		// acks (the poisoning of issue 11).
		_, err = bob.ReleaseAs(ctx, victim, &jfspb.ReleaseRequest{Ino: 1})
		mustDenied(t, "request under another's session", err)
		mustDenied(t, "cancel of another's lock wait", bob.CancelLockWait(ctx, victim, 1))
		// The owner still may.
		if r, err := alice.Heartbeat(ctx, &jfspb.HeartbeatRequest{Session: victim}); err != nil || r.Errno != 0 {
			t.Fatalf("owner's heartbeat: %v, errno %d", err, r.GetErrno())
		}
		var sessions *jfspb.ListSessionsResponse
		if err := admin.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) (err error) {
			sessions, err = a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		found := false
		for _, s := range sessions.Sessions {
			if s.Id == victim {
				found = true
				if s.Identity != "client/alice2" {
					t.Fatalf("session %d records identity %q, want client/alice2", victim, s.Identity)
				}
			}
		}
		if !found {
			t.Fatalf("session %d not listed", victim)
		}
	})

	t.Run("node announces only itself", func(t *testing.T) {
		n2 := tc.clientWith(t, mustSource(t, nodeFiles(tc.dir, "n2")), 30*time.Second)
		err := n2.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) error {
			_, err := a.Announce(ctx, &jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "n3", Address: "10.9.9.9:1", ApiAddr: "10.9.9.9:2"}})
			return err
		})
		mustDenied(t, "n2 announcing n3", err)
	})

	// A squashed root is nobody to the permission checks, as on NFS: it may
	// create only where others may write. Make the root directory such a
	// place (sticky, as /tmp), as an unsquashed client's root.
	t.Run("root directory open to all", func(t *testing.T) {
		c := tc.certClient(t, "--client", "owner")
		mustRegisterSession(t, c)
		r, err := c.SetAttr(ctx, &jfspb.SetAttrRequest{Ino: 1, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: 0o1777})
		if err != nil || r.Errno != 0 {
			t.Fatalf("chmod 1777 /: %v, errno %d", err, r.GetErrno())
		}
	})

	t.Run("root squash", func(t *testing.T) {
		c := tc.certClient(t, "--client", "squashed", "--root-squash")
		mustRegisterSession(t, c)
		r, err := c.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("by-root"), Mode: 0o644, Uid: 0, Gid: 0})
		if err != nil || r.Errno != 0 {
			t.Fatalf("create: %v, errno %d", err, r.GetErrno())
		}
		if r.Attr.Uid != mtls.NobodyID || r.Attr.Gid != mtls.NobodyID {
			t.Fatalf("a root-squashed client's file is owned by %d:%d, want %d:%d", r.Attr.Uid, r.Attr.Gid, mtls.NobodyID, mtls.NobodyID)
		}
		sr, err := c.SetAttr(ctx, &jfspb.SetAttrRequest{Ino: r.Attr.Ino,
			Valid: uint32(jfspb.SetAttrMask_SET_ATTR_UID | jfspb.SetAttrMask_SET_ATTR_GID), Uid: 0, Gid: 0})
		if err != nil {
			t.Fatal(err)
		}
		if sr.Errno != int32(syscall.EPERM) {
			t.Fatalf("a root-squashed client's chown to root: errno %d, want EPERM", sr.Errno)
		}
	})

	t.Run("forwarded under the caller's identity", func(t *testing.T) {
		// A root-squashed client cut off from the leader: a follower passes
		// its requests on, and the leader must check them as the client's
		// (its session, its squash), not as the follower's.
		d := newCutDialer(false)
		c, err := client.New(client.Config{Servers: tc.servers(), RetryFor: 10 * time.Second, AttemptTimeout: 2 * time.Second,
			Dial: d.dial, TLS: mustSource(t, mustMakeCert(t, tc.dir, "--client", "far", "--root-squash"))})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		mustRegisterSession(t, c)
		d.cutOff(tc.leader(t, admin).apiAddr)
		r, err := c.Create(ctx, &jfspb.CreateRequest{Parent: 1, Name: []byte("far-root"), Mode: 0o644})
		if err != nil || r.Errno != 0 {
			t.Fatalf("create through a follower: %v, errno %d", err, r.GetErrno())
		}
		if r.Attr.Uid != mtls.NobodyID {
			t.Fatalf("a root-squashed client's file, created through a follower, is owned by %d", r.Attr.Uid)
		}
	})

	t.Run("nodes call each other", func(t *testing.T) {
		// The leader asks the followers for their digests (Admin.Digest)
		// with its node certificate: a check that every member answered.
		deadline := time.Now().Add(30 * time.Second)
		for {
			leader := tc.leader(t, admin)
			if leader.metrics(t)[`jfsd_integrity_checks_total{result="ok"}`] > 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("no integrity check with every member's digest in 30s: %v", leader.metrics(t))
			}
			time.Sleep(100 * time.Millisecond)
		}
	})

	t.Run("read only", func(t *testing.T) {
		c := tc.certClient(t, "--client", "reader", "--read-only")
		mustRegisterSession(t, c)
		m, err := c.Mkdir(ctx, &jfspb.MkdirRequest{Parent: 1, Name: []byte("ro-dir"), Mode: 0o755})
		if err != nil || syscall.Errno(m.Errno) != syscall.EROFS {
			t.Fatalf("mkdir by a read-only client: %v, errno %v, want EROFS", err, syscall.Errno(m.GetErrno()))
		}
		o, err := c.Open(ctx, &jfspb.OpenRequest{Ino: 1, Flags: syscall.O_RDWR})
		if err != nil || syscall.Errno(o.Errno) != syscall.EROFS {
			t.Fatalf("open O_RDWR by a read-only client: %v, errno %v, want EROFS", err, syscall.Errno(o.GetErrno()))
		}
		g, err := c.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: 1})
		if err != nil || g.Errno != 0 {
			t.Fatalf("getattr by a read-only client: %v, errno %d", err, g.GetErrno())
		}
	})

	t.Run("jfsctl with an admin certificate", func(t *testing.T) {
		f := nodeFiles(tc.dir, "ops")
		cmd := exec.Command(filepath.Join(binDir, "jfsctl"), "--servers", strings.Join(tc.servers(), ","), "cluster", "status")
		cmd.Env = append(os.Environ(), "JFS_TLS_CA="+f.CA, "JFS_TLS_CERT="+f.Cert, "JFS_TLS_KEY="+f.Key)
		out, err := cmd.CombinedOutput()
		if err != nil || !strings.Contains(string(out), "leader") {
			t.Fatalf("jfsctl cluster status with the admin certificate: %v\n%s", err, out)
		}
	})
}

// TestJfsdRefusesPlaintextOffLoopback: without TLS, jfsd binds only
// loopback addresses; --insecure allows more, with a warning.
func TestJfsdRefusesPlaintextOffLoopback(t *testing.T) {
	raftAddr, apiAddr := freeAddr(t), freeAddr(t)
	_, apiPort, _ := strings.Cut(apiAddr, ":")
	args := []string{"--id", "n1", "--data-dir", t.TempDir(), "--raft-addr", raftAddr, "--addr", "0.0.0.0:" + apiPort,
		"--initial-cluster", "n1=" + raftAddr}
	out, err := exec.Command(filepath.Join(binDir, "jfsd"), args...).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || !strings.Contains(string(out), "not a loopback address") {
		t.Fatalf("jfsd on 0.0.0.0 without TLS: %v\n%s", err, out)
	}
	cmd := exec.Command(filepath.Join(binDir, "jfsd"), append(args, "--insecure")...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		cmd.Process.Kill()
		cmd.Wait()
	}()
	warned := make(chan bool, 1)
	go func() {
		b := make([]byte, 0, 4096)
		buf := make([]byte, 512)
		for {
			n, err := stderr.Read(buf)
			b = append(b, buf[:n]...)
			if strings.Contains(string(b), "WITHOUT TLS") {
				warned <- true
				io.Copy(io.Discard, stderr)
				return
			}
			if err != nil {
				warned <- false
				return
			}
		}
	}()
	select {
	case ok := <-warned:
		if !ok {
			t.Fatal("jfsd --insecure exited without the warning")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("jfsd --insecure logged no warning within 30s")
	}
}
