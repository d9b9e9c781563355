package integration

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// integrityMarker is file content that is easy to find in a node's files.
var integrityMarker = bytes.Repeat([]byte("jfs-integrity-marker:0123456789abcdef;"), 400)

// flipMarker flips one byte in every copy of the marker in path (bolt may
// keep stale copies in free pages; the live one is among them) and returns
// how many it changed.
func flipMarker(t *testing.T, path string) int {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	needle := integrityMarker[:64]
	n := 0
	for i := 0; ; {
		j := bytes.Index(b[i:], needle)
		if j < 0 {
			break
		}
		b[i+j+30] ^= 0x01 // inside the marker: 'm' becomes 'l'
		i += j + len(needle)
		n++
	}
	if n == 0 {
		t.Fatalf("the marker is not in %s", path)
	}
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return n
}

// followerOf returns a running process that is not leader.
func followerOf(pc *procCluster, leader *proc) *proc {
	for _, p := range pc.procs {
		if p != leader && p.cmd != nil {
			return p
		}
	}
	return nil
}

// mustWriteMarkerFile writes the marker to file "victim" and waits until
// every node has applied it.
func mustWriteMarkerFile(t *testing.T, pc *procCluster, c *client.Client) *proc {
	t.Helper()
	mustRegister(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := writeFile(ctx, c, "victim", integrityMarker); err != nil {
		t.Fatal(err)
	}
	leader := pc.leader(t, c)
	for _, p := range pc.procs {
		waitCaughtUp(t, c, leader, p)
	}
	return leader
}

// A byte flipped in a stopped follower's fsm.db, inside a file's data, is
// found by the leader's cross-replica check once the follower is back: the
// follower is marked corrupt (metric, loud log), refuses clients, loses its
// vote, and the file's content read through the cluster, even after an
// attempt to hand leadership to it, is the written one. The check runs
// every --integrity-check, and at once when a member comes back.
func TestIntegrityFlippedStateDetected(t *testing.T) {
	for _, tc := range []struct{ name, every string }{
		{"periodic", "200ms"},
		{"when back", "1h"},
	} {
		t.Run(tc.name, func(t *testing.T) { testFlippedState(t, tc.every) })
	}
}

func testFlippedState(t *testing.T, every string) {
	mustHaveFUSE(t)
	pc := startProcCluster(t, 3, "--integrity-check", every)
	c := pc.client(t)
	leader := mustWriteMarkerFile(t, pc, c)
	m := startMount(t, pc, noCache...)
	victim := followerOf(pc, leader)
	pc.stop(victim)
	t.Logf("flipped %d copies of the marker in %s's fsm.db", flipMarker(t, filepath.Join(victim.dataDir, "fsm.db")), victim.id)
	pc.start(victim)

	if !waitFor(60*time.Second, func() bool {
		return corruptGauge(victim) == 1
	}) {
		t.Fatalf("%s: jfsd_corrupt did not become 1", victim.id)
	}
	detected := regexp.MustCompile(`STATE CORRUPTION DETECTED.*node=` + victim.id)
	if !waitFor(10*time.Second, func() bool {
		for _, p := range pc.procs {
			if len(logMatches(p, detected)) > 0 {
				return true
			}
		}
		return false
	}) {
		t.Fatal("no node logged the corruption naming the victim")
	}
	if len(logMatches(victim, regexp.MustCompile(`THIS NODE'S STATE IS CORRUPT`))) == 0 {
		t.Fatalf("%s did not log that it is corrupt", victim.id)
	}
	// It is demoted: no vote, and it cannot lead.
	if !waitFor(30*time.Second, func() bool {
		st, err := statusOf(c, pc.leader(t, c))
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if m.Id == victim.id {
				return !m.Voter && m.Corrupt != ""
			}
		}
		return false
	}) {
		t.Fatalf("%s was not demoted to a nonvoter with a corrupt mark", victim.id)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := c.AdminAt(ctx, pc.leader(t, c).apiAddr, func(ctx context.Context, a jfspb.AdminClient) error {
		r, err := a.TransferLeader(ctx, &jfspb.TransferLeaderRequest{Id: victim.id})
		if err == nil && r.Errno != int32(syscall.EINVAL) {
			t.Errorf("transfer leadership to the corrupt %s: errno %d, want EINVAL", victim.id, r.Errno)
		}
		return err
	})
	if err != nil {
		t.Fatalf("transfer leadership: %v", err)
	}
	if l := pc.leader(t, c); l == victim {
		t.Fatalf("the corrupt node %s leads", victim.id)
	}
	if got := mustReadFile(t, c, "victim"); !bytes.Equal(got, integrityMarker) {
		t.Fatal("the cluster served the flipped content")
	}
	if got := mustReadPath(t, m.path("victim")); !bytes.Equal(got, integrityMarker) {
		t.Fatal("the mount read the flipped content")
	}
	// Asked directly, the victim serves nothing.
	out, _, err := jfsctl(t, pc.servers(), "cluster", "status")
	if err != nil || !strings.Contains(out, victim.id+" is CORRUPT") {
		t.Fatalf("cluster status does not show %s corrupt: %v\n%s", victim.id, err, out)
	}
	cc, err := grpc.NewClient(victim.apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	_, err = jfspb.NewMetaClient(cc).Lookup(ctx, &jfspb.LookupRequest{Parent: 1, Name: []byte("victim"), Cred: &jfspb.Cred{}})
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "corrupt") {
		t.Fatalf("lookup on the corrupt node: %v, want UNAVAILABLE saying it is corrupt", err)
	}
	// The others agree with each other and the check goes on passing.
	for _, p := range pc.procs {
		if p != victim && p.metrics(t)["jfsd_corrupt"] != 0 {
			t.Fatalf("%s reports itself corrupt", p.id)
		}
	}

	// The operator's rebuild: remove the member, clear its data directory,
	// start it without --initial-cluster and add it again. It comes back
	// as a healthy voter with the cluster's state.
	if out, errOut, err := jfsctl(t, pc.servers(), "members", "remove", victim.id); err != nil {
		t.Fatalf("members remove: %v: %s%s", err, out, errOut)
	}
	pc.stop(victim)
	if err := os.RemoveAll(victim.dataDir); err != nil {
		t.Fatal(err)
	}
	for i, a := range victim.args {
		if a == "--initial-cluster" {
			victim.args = append(victim.args[:i:i], victim.args[i+2:]...)
			break
		}
	}
	pc.start(victim)
	if out, errOut, err := jfsctl(t, pc.servers(), "members", "add", victim.id, victim.raftAddr, victim.apiAddr); err != nil {
		t.Fatalf("members add: %v: %s%s", err, out, errOut)
	}
	if !waitFor(60*time.Second, func() bool {
		st, err := statusOf(c, pc.leader(t, c))
		if err != nil {
			return false
		}
		for _, m := range st.Members {
			if m.Id == victim.id {
				return m.Voter && m.Corrupt == ""
			}
		}
		return false
	}) {
		t.Fatalf("rebuilt %s is not a voter without a mark", victim.id)
	}
	waitSameDigest(t, c, pc.procs)
	if g := corruptGauge(victim); g != 0 {
		t.Fatalf("rebuilt %s: jfsd_corrupt %v", victim.id, g)
	}
}

// A byte flipped in a log entry of a stopped follower's raft.db is found
// by the entry's checksum when the follower starts, before it replays its
// log (here into a new state file): the follower stops with one clear line
// naming raft.db and the entry, and exits non-zero, with no panic or
// goroutine dump.
func TestIntegrityFlippedLogEntry(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	leader := mustWriteMarkerFile(t, pc, c)
	victim := followerOf(pc, leader)
	pc.stop(victim)
	flipMarker(t, filepath.Join(victim.dataDir, "raft.db"))
	// Without its state file the node rebuilds it by replaying its log.
	if err := os.Remove(filepath.Join(victim.dataDir, "fsm.db")); err != nil {
		t.Fatal(err)
	}
	pc.start(victim)
	select {
	case <-victim.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s went on running with a corrupt log entry", victim.id)
	}
	if victim.cmd.ProcessState.Success() {
		t.Fatalf("%s exited with success", victim.id)
	}
	b, _ := os.ReadFile(victim.logPath)
	log := string(b)
	var lines []string
	for _, l := range strings.Split(strings.TrimSpace(log), "\n") {
		if strings.Contains(l, "raft.db is damaged") {
			lines = append(lines, l)
		}
	}
	if len(lines) != 1 || !regexp.MustCompile(`log entry \d+ fails its checksum`).MatchString(lines[0]) {
		t.Fatalf("want one line saying raft.db is damaged, naming the entry that fails its checksum:\n%s", tail(b, 20))
	}
	t.Log(lines[0])
	for _, bad := range []string{"goroutine ", "panic", "SIGBUS"} {
		if strings.Contains(log, bad) {
			t.Fatalf("the log has %q:\n%s", bad, tail(b, 40))
		}
	}
	victim.cmd = nil
	// The others still serve the file.
	if got := mustReadFile(t, c, "victim"); !bytes.Equal(got, integrityMarker) {
		t.Fatal("the file changed")
	}
}

// A truncated fsm.db or raft.db is refused at start with one line naming
// the file and what to do, and a non-zero exit: no SIGBUS, no dump.
func TestIntegrityTruncatedFiles(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	leader := mustWriteMarkerFile(t, pc, c)
	victim := followerOf(pc, leader)
	pc.stop(victim)
	page := int64(os.Getpagesize())
	for _, tc := range []struct{ file, hint string }{
		{"fsm.db", "remove it to rebuild from the log and snapshots"},
		{"raft.db", "jfsctl members remove " + victim.id},
	} {
		t.Run(tc.file, func(t *testing.T) {
			path := filepath.Join(victim.dataDir, tc.file)
			orig, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			defer os.WriteFile(path, orig, 0o600)
			if err := os.Truncate(path, 3*page); err != nil {
				t.Fatal(err)
			}
			var stderr bytes.Buffer
			cmd := exec.Command(filepath.Join(binDir, "jfsd"), victim.args...)
			cmd.Stdout, cmd.Stderr = &stderr, &stderr
			err = cmd.Run()
			out := stderr.String()
			if err == nil || cmd.ProcessState.ExitCode() != 1 {
				t.Fatalf("jfsd exited with %v, want exit status 1:\n%s", err, out)
			}
			var lines []string
			for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
				if strings.Contains(l, tc.file+" is damaged") {
					lines = append(lines, l)
				}
			}
			if len(lines) != 1 || !strings.Contains(lines[0], "truncated") || !strings.Contains(lines[0], tc.hint) {
				t.Fatalf("want one line saying %s is damaged (truncated) and %q, got:\n%s", tc.file, tc.hint, out)
			}
			t.Log(lines[0])
			for _, bad := range []string{"goroutine ", "panic", "SIGBUS", "fault"} {
				if strings.Contains(out, bad) {
					t.Fatalf("output has %q:\n%s", bad, out)
				}
			}
		})
	}
}

// A node that raft shuts down by itself (a leader that removed itself from
// the cluster) exits non-zero saying so, instead of running on without raft.
func TestRemovedLeaderExits(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mustRegister(t, c)
	leader := pc.leader(t, c)
	out, errOut, err := jfsctl(t, []string{leader.apiAddr}, "members", "remove", leader.id)
	t.Logf("members remove %s: %v %s%s", leader.id, err, out, errOut)
	select {
	case <-leader.exited:
	case <-time.After(60 * time.Second):
		t.Fatalf("%s still runs after raft shut down", leader.id)
	}
	if leader.cmd.ProcessState.Success() {
		t.Fatalf("%s exited with success", leader.id)
	}
	if len(logMatches(leader, regexp.MustCompile(`raft has shut down`))) == 0 {
		b, _ := os.ReadFile(leader.logPath)
		t.Fatalf("%s did not say why it exits:\n%s", leader.id, tail(b, 20))
	}
	leader.cmd = nil
}

// corruptGauge reads jfsd_corrupt from p, or -1 when p does not answer
// (yet), for polling.
func corruptGauge(p *proc) float64 {
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "jfsd_corrupt "); ok {
			return map[string]float64{"0": 0, "1": 1}[v]
		}
	}
	return -1
}
