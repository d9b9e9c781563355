package integration

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// The fault suite: each case runs a workload with an invariant checker
// through a fault and ends with nothing lost. Each logs a line starting
// "fault report:" with the longest pause of its workload (the unavailability
// the fault caused), the failed attempts the nodes answered (each retried by
// a client; see nodeCounters for what that misses) and what was lost.

func faultReport(t *testing.T, pause time.Duration, retried float64, format string, args ...any) {
	t.Helper()
	t.Logf("fault report: longest pause of the workload %v; failed attempts answered by the running nodes (retried by clients) %.0f; %s",
		pause.Round(time.Millisecond), retried, fmt.Sprintf(format, args...))
}

// TestFaultLeaderKillRepeated: metadata workers and lockers incrementing a
// counter, on two mounts, while the leader is killed with SIGKILL three
// times in a row, the killed node restarted after each. Every acknowledged
// change is there at the end, and no two lock holders overlapped.
func TestFaultLeaderKillRepeated(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mounts := []*jfsMount{startMount(t, pc, noCache...), startMount(t, pc, noCache...)}
	var metas []*metaWorker
	for i, m := range mounts {
		metas = append(metas, newMetaWorker(t, fmt.Sprintf("meta%d", i), m.path(fmt.Sprintf("meta%d", i))))
	}
	mustWriteFile(t, mounts[0].path("counter"), nil)
	var ctr counter
	var lockers []*counterWorker
	for i := range 4 {
		lockers = append(lockers, startCounterWorker(t, fmt.Sprintf("w%02d", i), mounts[i%2].path("counter")))
	}
	var fns []func(<-chan struct{})
	for _, mw := range metas {
		fns = append(fns, mw.run)
	}
	for _, cw := range lockers {
		fns = append(fns, func(stop <-chan struct{}) { ctr.run(cw, stop) })
	}
	progress := func() int64 {
		var n int64
		for _, mw := range metas {
			n += mw.ops.Load()
		}
		for _, cw := range lockers {
			n += cw.ops.Load()
		}
		return n
	}
	stop := runAll(fns...)
	defer stop()
	failed := func() error {
		for _, mw := range metas {
			if mw.err != nil {
				return mw.err
			}
		}
		for _, cw := range lockers {
			if cw.err != nil {
				return cw.err
			}
		}
		return nil
	}

	var retried float64
	// The load is running before the first fault.
	if !waitFor(30*time.Second, func() bool { return progress() >= 40 }) {
		stop()
		t.Fatalf("the workload made %d operations in 30s before any fault (error: %v)", progress(), failed())
	}
	for round := 1; round <= 3; round++ {
		leader := pc.leader(t, c)
		before := progress()
		retried += nodeNotOK(t, leader) // its counters die with it
		killed := time.Now()
		pc.kill(leader)
		next := pc.leader(t, c)
		elected := time.Since(killed)
		// The workload carries on under the new leader.
		if !waitFor(30*time.Second, func() bool { return progress() >= before+40 }) {
			stop()
			t.Fatalf("round %d: the workload made %d operations in 30s after the kill (error: %v)", round, progress()-before, failed())
		}
		t.Logf("round %d: killed leader %s; %s leads after %v; %d operations since", round, leader.id, next.id,
			elapsedRound(elected), progress()-before)
		pc.start(leader)
		waitCaughtUp(t, c, next, leader)
	}
	stop()
	retried += nodeCounters(t, pc)
	if err := failed(); err != nil {
		t.Fatal(err)
	}

	var pause time.Duration
	lost := 0
	for i, mw := range metas {
		pause = max(pause, mw.gap.max)
		if err := mw.verify(mounts[(i+1)%2].path(mw.name)); err != nil { // through the other mount
			t.Error(err)
			lost++
		}
	}
	total := 0
	for _, cw := range lockers {
		pause = max(pause, cw.gap.max)
		total += cw.incs
		for _, d := range cw.detail {
			t.Errorf("%s: %s", cw.id, d)
		}
	}
	_, final, err := parseCounter(string(mustReadPath(t, mounts[1].path("counter"))))
	if err != nil || final != total {
		t.Errorf("counter is %d (%v), want %d acknowledged increments", final, err, total)
	}
	if n := ctr.overlaps.Load(); n != 0 {
		t.Errorf("%d overlapping lock holders", n)
	}
	var files int
	for _, mw := range metas {
		files += len(mw.expect)
	}
	eio := mountErrors(mounts[0])["EIO"] + mountErrors(mounts[1])["EIO"]
	if eio != 0 {
		t.Errorf("the mounts answered EIO %v times", eio)
	}
	faultReport(t, pause, retried, "lost %d (checked %d files and directories, %d counter increments, %d lock overlaps)",
		lost+abs(final-total), files, total, ctr.overlaps.Load())
}

func elapsedRound(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func abs(x int) int { return max(x, -x) }

// TestFaultFollowerSnapshotCatchUp: a follower is killed while the cluster
// writes on, long enough that the leader compacts its log past the
// follower's index; restarted, the follower catches up through a snapshot,
// and the three state machines hold the same state at the same index.
func TestFaultFollowerSnapshotCatchUp(t *testing.T) {
	const threshold, trailing = 64, 32
	pc := startProcCluster(t, 3, "--snapshot-threshold", strconv.Itoa(threshold), "--trailing-logs", strconv.Itoa(trailing),
		"--snapshot-interval", "50ms")
	c := pc.client(t)
	m := startMount(t, pc)
	mw := newMetaWorker(t, "meta", m.path("meta"))
	leader := pc.leader(t, c)
	var follower *proc
	for _, p := range pc.procs {
		if p != leader {
			follower = p
			break
		}
	}
	stop := runAll(mw.run)
	defer stop()
	// The writer is going before the follower is killed.
	if !waitFor(30*time.Second, func() bool { return mw.ops.Load() >= 10 || mw.failed.Load() }) || mw.failed.Load() {
		stop()
		t.Fatalf("the writer made %d operations in 30s: %v", mw.ops.Load(), mw.err)
	}
	st, err := statusOf(c, follower)
	if err != nil {
		t.Fatal(err)
	}
	pc.kill(follower)
	killedAt := st.AppliedIndex
	snapRe := regexp.MustCompile(`snapshot complete up to: index=(\d+)`)
	// Write on until the leader took a snapshot far enough past the
	// follower that the entries it misses are compacted away.
	compacted := waitFor(40*time.Second, func() bool {
		for _, mm := range logMatches(leader, snapRe) {
			if idx, _ := strconv.ParseUint(mm[1], 10, 64); idx > killedAt+trailing+threshold {
				return true
			}
		}
		return mw.failed.Load()
	})
	if !compacted || mw.failed.Load() {
		stop()
		t.Fatalf("leader %s took no snapshot past index %d (killed follower at %d): %v", leader.id, killedAt+trailing+threshold, killedAt, mw.err)
	}
	pc.start(follower)
	installed := waitFor(30*time.Second, func() bool {
		return len(logMatches(follower, regexp.MustCompile(`Installed remote snapshot`))) > 0
	})
	if !installed {
		stop()
		t.Fatalf("follower %s installed no snapshot after its restart", follower.id)
	}
	// The cluster keeps writing for a moment with the follower back.
	ops := mw.ops.Load()
	waitFor(10*time.Second, func() bool { return mw.ops.Load() >= ops+20 || mw.failed.Load() })
	stop()
	if mw.err != nil {
		t.Fatal(mw.err)
	}
	idx, digest := waitSameDigest(t, c, pc.procs)
	t.Logf("follower %s killed at index %d, installed a snapshot on restart; all three at index %d with digest %x", follower.id, killedAt, idx, digest)

	// jfsctl cluster digest shows the same.
	out, errOut, err := jfsctl(t, pc.servers(), "cluster", "digest", "--json")
	if err != nil {
		t.Fatalf("jfsctl cluster digest: %v\n%s", err, errOut)
	}
	var views []struct {
		ID           string `json:"id"`
		AppliedIndex uint64 `json:"applied_index"`
		Digest       string `json:"digest"`
		Error        string `json:"error"`
	}
	if err := json.Unmarshal([]byte(out), &views); err != nil || len(views) != 3 {
		t.Fatalf("jfsctl cluster digest --json: %v\n%s", err, out)
	}
	for _, v := range views {
		if v.Error != "" || (v.AppliedIndex == idx && v.Digest != hex.EncodeToString(digest)) {
			t.Errorf("jfsctl cluster digest: %+v, want digest %x at index %d", v, digest, idx)
		}
	}
	if text, _, err := jfsctl(t, pc.servers(), "cluster", "digest"); err != nil || !regexp.MustCompile(`(?m)^n1\s+\S+\s+\d+\s+[0-9a-f]{64}$`).MatchString(text) {
		t.Errorf("jfsctl cluster digest: %v\n%s", err, text)
	}
	lost := 0
	if err := mw.verify(mw.dir); err != nil {
		t.Error(err)
		lost++
	}
	faultReport(t, mw.gap.max, nodeCounters(t, pc), "lost %d (checked %d files and directories); state machines equal at index %d",
		lost, len(mw.expect), idx)
}

// TestFaultWholeClusterRestart: every node is stopped with SIGTERM and
// started again under a mounted client, which waits and then carries on.
func TestFaultWholeClusterRestart(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	m := startMount(t, pc, noCache...)
	mw := newMetaWorker(t, "meta", m.path("meta"))
	stop := runAll(mw.run)
	defer stop()
	waitFor(time.Second, mw.failed.Load)
	before := mw.ops.Load()
	down := time.Now()
	for _, p := range pc.procs {
		pc.stop(p)
	}
	time.Sleep(time.Second) // the cluster is down; the writer waits
	duringDown := mw.ops.Load() - before
	for _, p := range pc.procs {
		pc.start(p)
	}
	leader := pc.leader(t, c)
	t.Logf("cluster down and back in %v (leader %s); the writer acknowledged %d operations meanwhile (at most the one in flight)",
		time.Since(down).Round(time.Millisecond), leader.id, duringDown)
	if duringDown > 1 {
		t.Errorf("%d operations acknowledged with the whole cluster down", duringDown)
	}
	after := mw.ops.Load()
	if !waitFor(30*time.Second, func() bool { return mw.ops.Load() >= after+30 || mw.failed.Load() }) {
		stop()
		t.Fatalf("the mount did not carry on after the restart: %d operations in 30s (%v)", mw.ops.Load()-after, mw.err)
	}
	stop()
	if mw.err != nil {
		t.Fatal(mw.err)
	}
	lost := 0
	if err := mw.verify(mw.dir); err != nil {
		t.Error(err)
		lost++
	}
	if n := mountErrors(m)["EIO"]; n != 0 {
		t.Errorf("the mount answered EIO %v times", n)
	}
	faultReport(t, mw.gap.max, nodeCounters(t, pc), "lost %d (checked %d files and directories, %d operations after the restart)",
		lost, len(mw.expect), mw.ops.Load()-after)
}

// TestFaultFrozenLeader: the leader is frozen with SIGSTOP, which the
// others cannot tell from a partition. A new leader takes over and writes
// continue. Resumed with SIGCONT, the old leader steps down, and nothing
// read through its address is older than a write acknowledged before the
// read started: neither straight from it, nor through a client that knows
// only its address.
func TestFaultFrozenLeader(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	m := startMount(t, pc, noCache...)
	target := m.path("value")
	mustWriteFile(t, target, nil)
	old := pc.leader(t, c)
	lr, err := c.Lookup(context.Background(), &jfspb.LookupRequest{Parent: 1, Name: []byte("value")})
	if err != nil || lr.Errno != 0 {
		t.Fatalf("lookup value: %v %d", err, lr.GetErrno())
	}
	ino := lr.Attr.Ino

	// The writer sets the size of the file to 1, 2, 3 ... through the
	// mount; acked is the last size the file system acknowledged.
	var acked atomic.Int64
	var wgap gapMeter
	var werr error // read it once the writer has returned
	var wfailed atomic.Bool
	writer := func(stop <-chan struct{}) {
		wgap.start()
		for v := int64(1); ; v++ {
			select {
			case <-stop:
				return
			default:
			}
			if werr = os.Truncate(target, v); werr != nil {
				wfailed.Store(true)
				return
			}
			acked.Store(v)
			wgap.ack()
		}
	}
	// Readers through the old leader's address.
	type readStats struct {
		served, refused, stale atomic.Int64
		staleDetail            atomic.Value
	}
	var direct, viaClient readStats
	check := func(rs *readStats, floor int64, resp *jfspb.GetAttrResponse, err error) {
		if err != nil || resp.Errno != 0 {
			rs.refused.Add(1)
			return
		}
		rs.served.Add(1)
		if int64(resp.Attr.Size) < floor {
			rs.stale.Add(1)
			rs.staleDetail.Store(fmt.Sprintf("read size %d after %d was acknowledged", resp.Attr.Size, floor))
		}
	}
	cc, err := grpc.NewClient(old.apiAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	meta := jfspb.NewMetaClient(cc)
	directReader := func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			floor := acked.Load()
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			resp, err := meta.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: ino})
			cancel()
			check(&direct, floor, resp, err)
			if err != nil {
				time.Sleep(10 * time.Millisecond)
			}
		}
	}
	oldOnly, err := client.New(client.Config{Servers: []string{old.apiAddr}, AttemptTimeout: time.Second, RetryFor: 30 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer oldOnly.Close()
	clientReader := func(stop <-chan struct{}) {
		for {
			select {
			case <-stop:
				return
			default:
			}
			floor := acked.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 40*time.Second)
			resp, err := oldOnly.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: ino})
			cancel()
			check(&viaClient, floor, resp, err)
		}
	}
	stop := runAll(writer, directReader, clientReader)
	defer stop()
	waitFor(time.Second, wfailed.Load)
	servedBefore := direct.served.Load()

	sigProc(t, old, syscall.SIGSTOP)
	frozen := time.Now()
	var others []*proc
	for _, p := range pc.procs {
		if p != old {
			others = append(others, p)
		}
	}
	next := leaderAmong(t, c, others...)
	elected := time.Since(frozen)
	v := acked.Load()
	if !waitFor(30*time.Second, func() bool { return acked.Load() >= v+20 || wfailed.Load() }) {
		sigProc(t, old, syscall.SIGCONT)
		stop()
		t.Fatalf("writes did not continue under the new leader %s: %v", next.id, werr)
	}
	servedWhileFrozen := direct.served.Load()
	// A burst of reads queued at the frozen node: it handles them the
	// moment it resumes, before it can know that another node leads.
	var burst readStats
	burstDone := make(chan struct{})
	for range 16 {
		go func() {
			defer func() { burstDone <- struct{}{} }()
			floor := acked.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			resp, err := meta.GetAttr(ctx, &jfspb.GetAttrRequest{Ino: ino})
			check(&burst, floor, resp, err)
		}()
	}
	time.Sleep(200 * time.Millisecond) // the burst is on its way
	sigProc(t, old, syscall.SIGCONT)
	resumed := time.Now()
	if !waitFor(10*time.Second, func() bool {
		st, err := statusOf(c, old)
		return err == nil && st.State != "Leader"
	}) {
		t.Errorf("the old leader %s still says it leads 10s after SIGCONT", old.id)
	}
	steppedDown := time.Since(resumed)
	servedAtResume := direct.served.Load()
	for range 16 {
		<-burstDone
	}
	time.Sleep(2 * time.Second) // reads through the old node go on
	stop()
	if werr != nil {
		t.Fatal(werr)
	}
	t.Logf("froze leader %s; %s led after %v; old leader stepped down %v after SIGCONT", old.id, next.id,
		elected.Round(time.Millisecond), steppedDown.Round(time.Millisecond))
	t.Logf("reads straight from %s: %d served (%d before the freeze, %d as it froze, %d once it had stepped down), %d refused or timed out; "+
		"a burst of 16 sent while it was frozen: %d served, %d refused; through a client knowing only it: %d served, %d failed",
		old.id, direct.served.Load(), servedBefore, servedWhileFrozen-servedBefore, direct.served.Load()-servedAtResume,
		direct.refused.Load(), burst.served.Load(), burst.refused.Load(), viaClient.served.Load(), viaClient.refused.Load())
	for name, rs := range map[string]*readStats{"straight from the old leader": &direct, "sent to the frozen leader": &burst,
		"through a client of the old leader": &viaClient} {
		if n := rs.stale.Load(); n != 0 {
			t.Errorf("%d stale reads %s: %v", n, name, rs.staleDetail.Load())
		}
	}
	if viaClient.served.Load() == 0 {
		t.Errorf("the client that knows only the old leader served no read")
	}
	got, err := os.Stat(target)
	if err != nil || got.Size() != acked.Load() {
		t.Errorf("final size %d (%v), want the last acknowledged %d", got.Size(), err, acked.Load())
	}
	faultReport(t, wgap.max, nodeCounters(t, pc), "lost 0 writes (final size %d = last acknowledged); stale reads %d",
		got.Size(), direct.stale.Load()+burst.stale.Load()+viaClient.stale.Load())
}

// TestFaultMutualExclusion: eight processes, four on each of two mounts,
// increment a counter under an exclusive F_SETLKW lock while the leader is
// killed. The count is exact and no two holders ever overlapped.
func TestFaultMutualExclusion(t *testing.T) {
	pc := startProcCluster(t, 3)
	c := pc.client(t)
	mounts := []*jfsMount{startMount(t, pc, noCache...), startMount(t, pc, noCache...)}
	mustWriteFile(t, mounts[0].path("counter"), nil)
	var ctr counter
	var lockers []*counterWorker
	var fns []func(<-chan struct{})
	for i := range 8 {
		cw := startCounterWorker(t, fmt.Sprintf("w%02d", i), mounts[i%2].path("counter"))
		lockers = append(lockers, cw)
		fns = append(fns, func(stop <-chan struct{}) { ctr.run(cw, stop) })
	}
	progress := func() (n int64) {
		for _, cw := range lockers {
			n += cw.ops.Load()
		}
		return n
	}
	stop := runAll(fns...)
	defer stop()
	// The lockers are taking turns before the leader is killed.
	if !waitFor(30*time.Second, func() bool { return progress() >= 40 }) {
		stop()
		t.Fatalf("the lockers made %d increments in 30s before the kill", progress())
	}
	leader := pc.leader(t, c)
	retried := nodeNotOK(t, leader) // its counters die with it
	before := progress()
	killed := time.Now()
	pc.kill(leader)
	next := pc.leader(t, c)
	elected := time.Since(killed)
	if !waitFor(30*time.Second, func() bool { return progress() >= before+40 }) {
		stop()
		t.Fatalf("the lockers made %d increments in 30s after the kill", progress()-before)
	}
	stop()
	retried += nodeCounters(t, pc)
	total := 0
	var pause time.Duration
	for _, cw := range lockers {
		if cw.err != nil {
			t.Fatal(cw.err)
		}
		total += cw.incs
		pause = max(pause, cw.gap.max)
		for _, d := range cw.detail {
			t.Errorf("%s: %s", cw.id, d)
		}
	}
	_, final, err := parseCounter(string(mustReadPath(t, mounts[1].path("counter"))))
	if err != nil || final != total {
		t.Errorf("counter is %d (%v), want %d acknowledged increments", final, err, total)
	}
	if n := ctr.overlaps.Load(); n != 0 {
		t.Errorf("%d overlapping lock holders", n)
	}
	t.Logf("killed leader %s; %s led after %v; %d increments by 8 lockers, %d after the kill", leader.id, next.id,
		elected.Round(time.Millisecond), total, progress()-before)
	faultReport(t, pause, retried, "lost %d increments (counter %d, acknowledged %d); lock overlaps %d",
		abs(final-total), final, total, ctr.overlaps.Load())
}
