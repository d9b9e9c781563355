// Package integration starts real jfsd processes (and, later, real mounts)
// built from this tree, on 127.0.0.1, and checks what users would see.
package integration

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// binDir holds jfsd, jfsctl and jfs built once for the whole package.
var binDir string

func TestMain(m *testing.M) {
	if os.Getenv(lockerEnv) == "1" {
		os.Exit(lockerMain())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "jfs-integration-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+"/", "../cmd/...")
	build.Stdout, build.Stderr = os.Stdout, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building the commands:", err)
		return 1
	}
	binDir = dir
	return m.Run()
}

// handedOut holds every address freeAddr returned: the kernel may offer a
// port again once its listener is closed, and two processes of one test
// must not be told to bind the same one.
var handedOut = struct {
	sync.Mutex
	addrs map[string]bool
}{addrs: map[string]bool{}}

// freeAddr returns a loopback address with a port that was free a moment
// ago and that no earlier call returned. The port lies below the kernel's
// range of ephemeral ports: a port from that range, left free while its
// process is restarted, may meanwhile become the source port of some
// outgoing connection, and the restarted process then fails to bind it.
func freeAddr(t testing.TB) string {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	low := ephemeralLow()
	for range 10000 {
		port := 10000 + rand.Intn(low-10000)
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		if handedOut.addrs[addr] {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue
		}
		l.Close()
		handedOut.addrs[addr] = true
		return addr
	}
	t.Fatal("no free port below the ephemeral range")
	return ""
}

// ephemeralLow is the lowest port the kernel hands out as a source port
// (32768 when it cannot be read).
func ephemeralLow() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	var low int
	if err != nil || len(strings.Fields(string(b))) != 2 {
		return 32768
	}
	if low, err = strconv.Atoi(strings.Fields(string(b))[0]); err != nil || low <= 11000 {
		return 32768
	}
	return low
}

// proc is one jfsd process.
type proc struct {
	id, dataDir, raftAddr, apiAddr string
	metricsAddr                    string
	args                           []string
	logPath                        string
	cmd                            *exec.Cmd
	exited                         chan struct{}
}

// procCluster is three jfsd processes forming one cluster.
type procCluster struct {
	t     testing.TB
	procs []*proc
}

func startProcCluster(t testing.TB, n int, extra ...string) *procCluster {
	t.Helper()
	return startProcClusterEach(t, n, func(int) []string { return extra })
}

// startProcClusterEach is startProcCluster with flags of each node's own:
// extra(i) for node i (from 0).
func startProcClusterEach(t testing.TB, n int, extra func(i int) []string) *procCluster {
	t.Helper()
	base := t.TempDir()
	pc := &procCluster{t: t}
	var initial []string
	for i := 1; i <= n; i++ {
		p := &proc{id: fmt.Sprintf("n%d", i), raftAddr: freeAddr(t), apiAddr: freeAddr(t), metricsAddr: freeAddr(t)}
		p.dataDir = filepath.Join(base, p.id)
		p.logPath = filepath.Join(base, p.id+".log")
		initial = append(initial, p.id+"="+p.raftAddr)
		pc.procs = append(pc.procs, p)
	}
	for i, p := range pc.procs {
		p.args = append([]string{"--id", p.id, "--data-dir", p.dataDir, "--raft-addr", p.raftAddr,
			"--addr", p.apiAddr, "--initial-cluster", strings.Join(initial, ","), "--log-level", "info",
			"--metrics-addr", p.metricsAddr}, extra(i)...)
		pc.start(p)
	}
	pc.mustAllUp()
	t.Cleanup(func() {
		for _, p := range pc.procs {
			pc.kill(p)
		}
		if t.Failed() {
			for _, p := range pc.procs {
				b, _ := os.ReadFile(p.logPath)
				t.Logf("---- log of %s ----\n%s", p.id, tail(b, 60))
			}
		}
	})
	return pc
}

// mustAllUp waits until every process listens on its metrics address,
// which jfsd binds last, and fails at once, with the process's log, if one
// exited.
func (pc *procCluster) mustAllUp() {
	pc.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for _, p := range pc.procs {
		for {
			select {
			case <-p.exited:
				b, _ := os.ReadFile(p.logPath)
				pc.t.Fatalf("%s exited at start:\n%s", p.id, tail(b, 20))
			default:
			}
			if c, err := net.DialTimeout("tcp", p.metricsAddr, time.Second); err == nil {
				c.Close()
				break
			}
			if time.Now().After(deadline) {
				pc.t.Fatalf("%s does not listen on %s after 30s", p.id, p.metricsAddr)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

func tail(b []byte, lines int) string {
	ls := bytes.Split(b, []byte("\n"))
	if len(ls) > lines {
		ls = ls[len(ls)-lines:]
	}
	return string(bytes.Join(ls, []byte("\n")))
}

func (pc *procCluster) start(p *proc) {
	pc.t.Helper()
	logf, err := os.OpenFile(p.logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		pc.t.Fatal(err)
	}
	p.cmd = exec.Command(filepath.Join(binDir, "jfsd"), p.args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		pc.t.Fatalf("start %s: %v", p.id, err)
	}
	p.exited = make(chan struct{})
	go func(cmd *exec.Cmd, ch chan struct{}) {
		cmd.Wait()
		logf.Close()
		close(ch)
	}(p.cmd, p.exited)
}

// kill sends SIGKILL and waits for the process to go.
func (pc *procCluster) kill(p *proc) {
	if p.cmd == nil || p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.exited
	p.cmd = nil
}

// stop sends SIGTERM and waits for a clean exit.
func (pc *procCluster) stop(p *proc) {
	pc.t.Helper()
	if p.cmd == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		pc.t.Errorf("%s did not exit within 20s of SIGTERM", p.id)
		pc.kill(p)
	}
	if p.cmd != nil && p.cmd.ProcessState != nil && !p.cmd.ProcessState.Success() {
		pc.t.Errorf("%s exited with %v after SIGTERM", p.id, p.cmd.ProcessState)
	}
	p.cmd = nil
}

func (pc *procCluster) servers() []string {
	var s []string
	for _, p := range pc.procs {
		s = append(s, p.apiAddr)
	}
	return s
}

func (pc *procCluster) client(t testing.TB) *client.Client {
	t.Helper()
	c, err := client.New(client.Config{Servers: pc.servers(), RetryFor: 30 * time.Second, AttemptTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// leader asks every running process for its raft state and returns the one
// that leads.
func (pc *procCluster) leader(t testing.TB, c *client.Client) *proc {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		for _, p := range pc.procs {
			if p.cmd == nil {
				continue
			}
			var st *jfspb.ClusterStatusResponse
			err := c.AdminAt(context.Background(), p.apiAddr, func(ctx context.Context, a jfspb.AdminClient) (err error) {
				st, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
				return err
			})
			if err == nil && st.State == "Leader" {
				return p
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatal("no leader within 30s")
	return nil
}

// metrics scrapes p's Prometheus endpoint and returns every sample as
// "name{labels}" -> value.
func (p *proc) metrics(t testing.TB) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", p.id, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			out[line[:i]] = v
		}
	}
	return out
}

// jfsctl runs the built jfsctl and returns its stdout, stderr and error.
func jfsctl(t testing.TB, servers []string, args ...string) (string, string, error) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "jfsctl"), append([]string{"--servers", strings.Join(servers, ",")}, args...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String(), errb.String(), err
}

// mustJfsctlJSON runs jfsctl with args (ending in --json) until until(v)
// holds for its decoded output, or fails after d. It returns the last
// output.
func mustJfsctlJSON(t testing.TB, servers []string, d time.Duration, v any, until func() bool, args ...string) string {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		out, errOut, err := jfsctl(t, servers, args...)
		if err != nil {
			t.Fatalf("jfsctl %v: %v: %s", args, err, errOut)
		}
		if err := json.Unmarshal([]byte(out), v); err != nil {
			t.Fatalf("jfsctl %v: %v\n%s", args, err, out)
		}
		if until() {
			return out
		}
		if time.Now().After(deadline) {
			t.Fatalf("jfsctl %v: not as expected after %v:\n%s", args, d, out)
		}
		time.Sleep(100 * time.Millisecond)
	}
}
