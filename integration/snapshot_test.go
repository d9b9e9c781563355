package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/fsm"
)

// treeOf walks the mount and describes every entry below its root (but the
// mount's own .accesslog and .stats): its mode, and its content (regular
// files, byte for byte) or target (symlinks).
func treeOf(t *testing.T, m *jfsMount) map[string]string {
	t.Helper()
	out, err := walkTree(m)
	if err != nil {
		t.Fatalf("walk %s: %v", m.dir, err)
	}
	return out
}

// walkTree is treeOf that returns the first error.
func walkTree(m *jfsMount) (map[string]string, error) {
	out := map[string]string{}
	err := filepath.WalkDir(m.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(m.dir, p)
		if rel == "." || rel == ".accesslog" || rel == ".stats" {
			return nil
		}
		fi, err := os.Lstat(p)
		if err != nil {
			return err
		}
		desc := fi.Mode().String()
		switch {
		case fi.Mode().IsRegular():
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			desc += fmt.Sprintf(" %d %x", len(b), sha256.Sum256(b))
		case fi.Mode()&fs.ModeSymlink != 0:
			target, err := os.Readlink(p)
			if err != nil {
				return err
			}
			desc += " -> " + target
		}
		out[rel] = desc
		return nil
	})
	return out, err
}

// mustTreeBecome polls the mount until its tree equals want: for a moment
// after a restore the kernel may serve cached entries, and opens fail until
// the mount has registered its new session.
func mustTreeBecome(t *testing.T, m *jfsMount, want map[string]string) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := walkTree(m)
		if err == nil && maps.Equal(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("the mount's tree is not the saved one after 30s (%v):\ngot  %v\nwant %v", err, sortedTree(got), sortedTree(want))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func sortedTree(m map[string]string) string {
	var b strings.Builder
	for _, k := range slices.Sorted(maps.Keys(m)) {
		fmt.Fprintf(&b, "\n  %s: %s", k, m[k])
	}
	return b.String()
}

// mustMakeBackupTree fills the mount with directories, files of several sizes
// (one spanning more than one backup chunk), modes and a symlink.
func mustMakeBackupTree(t *testing.T, m *jfsMount, tag string) {
	t.Helper()
	for _, d := range []string{"a", "a/b", "c"} {
		if err := os.Mkdir(m.path(d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	big := bytes.Repeat([]byte(tag+" big file content\n"), 3<<20/len(tag+" big file content\n"))
	mustWriteFile(t, m.path("a/b/big"), big)
	mustWriteFile(t, m.path("a/small"), []byte(tag+" small"))
	mustWriteFile(t, m.path("c/keep"), []byte(tag+" keep"))
	mustWriteFile(t, m.path("c/gone"), []byte(tag+" to be deleted"))
	mustWriteFile(t, m.path("empty"), nil)
	if err := os.Chmod(m.path("a/small"), 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("c"), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("a/small", m.path("link")); err != nil {
		t.Fatal(err)
	}
}

// mustJfsctl runs jfsctl and fails on error.
func mustJfsctl(t *testing.T, servers []string, args ...string) string {
	t.Helper()
	out, errOut, err := jfsctl(t, servers, args...)
	if err != nil {
		t.Fatalf("jfsctl %v: %v\n%s%s", args, err, out, errOut)
	}
	return out
}

// nodeDigest is one node's answer to Digest: its applied index and digest.
type nodeDigest struct {
	index  uint64
	digest string
}

// mustReplicasAgree polls until every node answers the same applied index
// and digest, and returns that digest.
func mustReplicasAgree(t *testing.T, pc *procCluster, c *client.Client) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var got []nodeDigest
		for _, p := range pc.procs {
			var d *jfspb.DigestResponse
			err := c.AdminAt(context.Background(), p.apiAddr, func(ctx context.Context, a jfspb.AdminClient) (err error) {
				d, err = a.Digest(ctx, &jfspb.DigestRequest{})
				return err
			})
			if err == nil {
				got = append(got, nodeDigest{d.AppliedIndex, fmt.Sprintf("%x", d.Digest)})
			}
		}
		if len(got) == len(pc.procs) && !slices.ContainsFunc(got, func(d nodeDigest) bool { return d != got[0] }) {
			return got[0].digest
		}
		if time.Now().After(deadline) {
			t.Fatalf("replicas do not agree after 30s: %v", got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestSnapshotSaveRestore saves a backup, changes the tree (create, modify,
// delete, chmod), restores the backup, and finds through the mount the
// saved tree byte for byte, on a cluster whose every node has the same state.
// A handle opened before the restore fails; new opens see the restored tree.
func TestSnapshotSaveRestore(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	c := pc.client(t)
	servers := pc.servers()
	mustMakeBackupTree(t, m, "saved")
	saved := treeOf(t, m)

	file := filepath.Join(t.TempDir(), "backup.jfs")
	out := mustJfsctl(t, servers, "snapshot", "save", file)
	if !strings.Contains(out, "saved "+file) {
		t.Fatalf("snapshot save printed %q", out)
	}
	out = mustJfsctl(t, servers, "snapshot", "inspect", file)
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	h, err := fsm.ParseBackupHeader(b)
	if err != nil {
		t.Fatal(err)
	}
	// The root, three directories, five files and a symlink.
	if h.Inodes != 10 || h.Index == 0 || h.Term == 0 || int(h.Size)+fsm.BackupHeaderLen+fsm.BackupTrailerLen != len(b) {
		t.Fatalf("header %+v for a file of %d bytes", h, len(b))
	}
	for _, want := range []string{
		fmt.Sprintf("index     %d\n", h.Index), fmt.Sprintf("term      %d\n", h.Term),
		fmt.Sprintf("size      %d\n", h.Size), "inodes    10\n",
		fmt.Sprintf("checksum  sha256:%x\n", b[len(b)-fsm.BackupTrailerLen:]),
	} {
		if !strings.Contains(out, want) {
			t.Errorf("inspect output lacks %q:\n%s", want, out)
		}
	}

	held, err := os.OpenFile(m.path("c/keep"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	// Change the tree after the backup.
	mustWriteFile(t, m.path("new"), []byte("created after the backup"))
	mustWriteFile(t, m.path("a/small"), []byte("modified after the backup"))
	if err := os.Remove(m.path("c/gone")); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m.path("a/small"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m.path("d"), 0o700); err != nil {
		t.Fatal(err)
	}
	if maps.Equal(treeOf(t, m), saved) {
		t.Fatal("the changes did not change the tree")
	}

	out = mustJfsctl(t, servers, "snapshot", "restore", file)
	if !strings.Contains(out, fmt.Sprintf("restored %s: index %d", file, h.Index)) || !strings.Contains(out, "1 sessions of the backup ended") {
		t.Fatalf("snapshot restore printed %q", out)
	}
	mustTreeBecome(t, m, saved)
	mustReplicasAgree(t, pc, c)

	// The handle opened before the restore belonged to a session that
	// ended: it fails, as after an expiry.
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, werr := held.WriteAt([]byte("x"), 0)
		if werr == nil {
			werr = held.Sync()
		}
		if werr != nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("a handle opened before the restore still writes 30s after it")
		}
		time.Sleep(100 * time.Millisecond)
	}
	// New opens and writes work on the restored tree.
	mustWriteFile(t, m.path("after"), []byte("written after the restore"))
	if got := mustReadPath(t, m.path("c/keep")); string(got) != "saved keep" {
		t.Fatalf("c/keep after the restore: %q", got)
	}
}

// TestSnapshotRestoreFromOtherCluster restores a backup of one cluster into
// another: the second cluster's mount sees the first's tree, and the second
// cluster still knows its own members (the backup's member table is not
// taken), so following the leader works.
func TestSnapshotRestoreFromOtherCluster(t *testing.T) {
	src := startProcCluster(t, 3)
	ms := startMount(t, src)
	mustMakeBackupTree(t, ms, "source")
	want := treeOf(t, ms)
	file := filepath.Join(t.TempDir(), "source.jfs")
	mustJfsctl(t, src.servers(), "snapshot", "save", file)

	dst := startProcCluster(t, 3)
	md := startMount(t, dst)
	mustWriteFile(t, md.path("other"), []byte("the other cluster's own file"))
	// Enough commands that the destination's log is past or near the
	// source's index either way.
	mustJfsctl(t, dst.servers(), "snapshot", "restore", file)
	mustTreeBecome(t, md, want)
	c := dst.client(t)
	mustReplicasAgree(t, dst, c)

	var st *jfspb.ClusterStatusResponse
	err := c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) (err error) {
		st, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(dst.servers(), st.LeaderAddr) {
		t.Fatalf("after the restore the leader's address is %q, not one of this cluster's %v", st.LeaderAddr, dst.servers())
	}
	for _, mem := range st.Members {
		if !slices.Contains(dst.servers(), mem.ApiAddr) || mem.Corrupt != "" {
			t.Fatalf("member %s has API address %q (not one of this cluster's?), corrupt %q", mem.Id, mem.ApiAddr, mem.Corrupt)
		}
	}
	// The restored cluster keeps working, and its followers restart into
	// the same state: one after a crash (it rebuilds from the restored
	// snapshot and the log after it), one after a clean stop (it keeps its
	// state file, whose applied index is the backup's).
	mustWriteFile(t, md.path("after"), []byte("after"))
	leader := dst.leader(t, c)
	var followers []*proc
	for _, p := range dst.procs {
		if p != leader {
			followers = append(followers, p)
		}
	}
	dst.kill(followers[0])
	dst.stop(followers[1])
	dst.start(followers[0])
	dst.start(followers[1])
	dst.mustAllUp()
	mustWriteFile(t, md.path("after2"), []byte("after the restarts"))
	want["after"] = treeOf(t, md)["after"]
	want["after2"] = treeOf(t, md)["after2"]
	mustTreeBecome(t, md, want)
	mustReplicasAgree(t, dst, c)
	for _, p := range dst.procs {
		if b, _ := os.ReadFile(p.logPath); bytes.Contains(b, []byte("STATE CORRUPTION")) {
			t.Errorf("%s flagged the replicas after the restore:\n%s", p.id, tail(b, 30))
		}
	}
}

// TestSnapshotRestoreRefusesBadFiles: a truncated file, a tampered one, and
// one whose checksum is right but whose state is not a jfs state file are
// refused with a clear error, by jfsctl and by the leader itself, and the
// cluster's state does not change.
func TestSnapshotRestoreRefusesBadFiles(t *testing.T) {
	pc := startProcCluster(t, 3)
	servers := pc.servers()
	c := pc.client(t)
	ctx := context.Background()
	mustRegister(t, c)
	for _, name := range []string{"a", "b"} {
		if err := writeFile(ctx, c, name, []byte("content of "+name)); err != nil {
			t.Fatal(err)
		}
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "good.jfs")
	mustJfsctl(t, servers, "snapshot", "save", file)
	good, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if err := writeFile(ctx, c, "after-the-backup", []byte("kept")); err != nil {
		t.Fatal(err)
	}
	// No session stays open to expire: the state must stay still.
	if r, err := c.CloseSession(ctx, &jfspb.CloseSessionRequest{}); err != nil || r.Errno != 0 {
		t.Fatalf("close session: %v errno %d", err, r.GetErrno())
	}
	before := mustReplicasAgree(t, pc, c)

	tampered := bytes.Clone(good)
	tampered[len(tampered)/2] ^= 0x40
	// Right checksum, wrong state: the state's bytes are garbage.
	garbage := bytes.Clone(good[:fsm.BackupHeaderLen])
	garbage = append(garbage, bytes.Repeat([]byte{0x5a}, len(good)-fsm.BackupHeaderLen-fsm.BackupTrailerLen)...)
	sum := sha256.Sum256(garbage)
	garbage = append(garbage, sum[:]...)
	cases := []struct {
		name, want string
		data       []byte
	}{
		{"truncated", "truncated", good[:len(good)-100]},
		{"header only", "truncated", good[:20]},
		{"tampered", "checksum mismatch", tampered},
		{"garbage state", "not a jfs state file", garbage},
	}
	for _, tc := range cases {
		path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".jfs")
		if err := os.WriteFile(path, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, errOut, err := jfsctl(t, servers, "snapshot", "restore", path)
		if err == nil || !strings.Contains(errOut, tc.want) || !strings.Contains(errOut, "nothing changed") {
			t.Errorf("%s: jfsctl snapshot restore: %v, stderr %q; want a refusal saying %q", tc.name, err, errOut, tc.want)
		}
		if _, errOut, err := jfsctl(t, servers, "snapshot", "inspect", path); err == nil || !strings.Contains(errOut, tc.want) {
			t.Errorf("%s: jfsctl snapshot inspect: %v, stderr %q; want %q", tc.name, err, errOut, tc.want)
		}
		// The leader checks for itself what a client sends.
		var rerr error
		err = c.AdminStream(ctx, func(ctx context.Context, a jfspb.AdminClient) error {
			stream, err := a.SnapshotRestore(ctx)
			if err != nil {
				return err
			}
			for off := 0; off < len(tc.data); off += 1 << 20 {
				if err := stream.Send(&jfspb.SnapshotChunk{Data: tc.data[off:min(off+1<<20, len(tc.data))]}); err != nil {
					break
				}
			}
			_, rerr = stream.CloseAndRecv()
			if st, _ := status.FromError(rerr); st.Code() == codes.Unavailable {
				return rerr // not the leader: try the next node
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if st, _ := status.FromError(rerr); st.Code() != codes.InvalidArgument || !strings.Contains(st.Message(), tc.want) {
			t.Errorf("%s: the leader answered %v; want InvalidArgument saying %q", tc.name, rerr, tc.want)
		}
	}
	if after := mustReplicasAgree(t, pc, c); after != before {
		t.Fatalf("the state changed: digest %s before, %s after", before, after)
	}
	if got := mustReadFile(t, c, "after-the-backup"); string(got) != "kept" {
		t.Fatalf("a file written before the refused restores reads %q", got)
	}
}

// TestSnapshotRestoreEndsLocksAndWaits: a lock held and a lock request
// blocked on the leader when a backup (taken before either) is restored:
// the holder's lock is gone with its session, the blocked request returns
// with an error instead of waiting for ever or being granted to a session
// that no longer exists, and the leader lists no lock and no waiter.
func TestSnapshotRestoreEndsLocksAndWaits(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	mustWriteFile(t, a.path("f"), []byte("locked file"))
	file := filepath.Join(t.TempDir(), "backup.jfs")
	mustJfsctl(t, pc.servers(), "snapshot", "save", file)

	h, w := startLocker(t, "holder"), startLocker(t, "waiter")
	h.must("open 1 %s", a.path("f"))
	h.must("lk 1 setlkw w 0 0")
	w.must("open 1 %s", b.path("f"))
	w.send("lk 1 setlkw w 0 0")
	w.blocked(pc, "waiter")

	mustJfsctl(t, pc.servers(), "snapshot", "restore", file)
	r, ok := w.answer(30 * time.Second)
	if !ok {
		t.Fatal("the blocked lock request did not return within 30s of the restore")
	}
	t.Logf("the blocked request answered %q", r)
	if r == "ok" {
		t.Fatal("the lock request of a handle opened before the restore was granted")
	}
	c := pc.client(t)
	deadline := time.Now().Add(30 * time.Second)
	for {
		var locks []*jfspb.LockInfo
		err := c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) error {
			r, err := a.ListLocks(ctx, &jfspb.ListLocksRequest{})
			locks = r.GetLocks()
			return err
		})
		if err == nil && len(locks) == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("locks after the restore: %v (%v)", locks, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// A new open locks the file at once: nothing of the old state holds it.
	n := startLocker(t, "new")
	n.must("open 1 %s", b.path("f"))
	n.must("lk 1 setlk w 0 0")
}
