package integration

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// A locker is a child process (this test binary, re-executed) that opens
// files and takes locks as told, one command per line on its stdin,
// answering each on its stdout. Locks belong to processes, so tests that
// need several lock owners start several lockers.
const lockerEnv = "JFS_LOCKER"

// lockerMain serves commands:
//
//	open N PATH               open PATH read-write (creating it) as descriptor N
//	close N
//	lk N CMD TYPE START LEN   fcntl CMD (setlk, setlkw, getlk), TYPE r, w or u
//	flock N OP                flock OP: sh, ex, un, shnb, exnb
//	write N OFF TEXT          pwrite TEXT at OFF
//	fsync N
//	read N OFF LEN            pread, answered "data TEXT"
//	handoff N ROUNDS          ROUNDS times: F_SETLKW a write lock on the
//	                          whole file, then unlock; answered "times G:U ..."
//	                          with the CLOCK_MONOTONIC nanoseconds at which
//	                          each grant returned and each unlock returned
//
// Each answer is "ok", "err ERRNO", or for getlk "lk TYPE START LEN PID".
func lockerMain() int {
	fds := map[string]int{}
	in := bufio.NewScanner(os.Stdin)
	out := bufio.NewWriter(os.Stdout)
	reply := func(format string, args ...any) {
		fmt.Fprintf(out, format+"\n", args...)
		out.Flush()
	}
	fail := func(err error) {
		if e, ok := err.(syscall.Errno); ok {
			reply("err %d", int(e))
			return
		}
		reply("err %q", err.Error())
	}
	for in.Scan() {
		f := strings.Fields(in.Text())
		if len(f) < 2 {
			reply("err %q", "bad command")
			continue
		}
		num := func(i int) int64 { v, _ := strconv.ParseInt(f[i], 10, 64); return v }
		switch f[0] {
		case "open":
			fd, err := syscall.Open(f[2], syscall.O_RDWR|syscall.O_CREAT, 0o644)
			if err != nil {
				fail(err)
				continue
			}
			fds[f[1]] = fd
			reply("ok")
		case "close":
			if err := syscall.Close(fds[f[1]]); err != nil {
				fail(err)
				continue
			}
			delete(fds, f[1])
			reply("ok")
		case "lk":
			cmd := map[string]int{"setlk": syscall.F_SETLK, "setlkw": syscall.F_SETLKW, "getlk": syscall.F_GETLK}[f[2]]
			typ := map[string]int16{"r": syscall.F_RDLCK, "w": syscall.F_WRLCK, "u": syscall.F_UNLCK}[f[3]]
			lk := syscall.Flock_t{Type: typ, Whence: 0, Start: num(4), Len: num(5)}
			if err := syscall.FcntlFlock(uintptr(fds[f[1]]), cmd, &lk); err != nil {
				fail(err)
				continue
			}
			if f[2] == "getlk" {
				reply("lk %d %d %d %d", lk.Type, lk.Start, lk.Len, lk.Pid)
				continue
			}
			reply("ok")
		case "flock":
			op := map[string]int{"sh": syscall.LOCK_SH, "ex": syscall.LOCK_EX, "un": syscall.LOCK_UN,
				"shnb": syscall.LOCK_SH | syscall.LOCK_NB, "exnb": syscall.LOCK_EX | syscall.LOCK_NB}[f[2]]
			if err := syscall.Flock(fds[f[1]], op); err != nil {
				fail(err)
				continue
			}
			reply("ok")
		case "write":
			if _, err := syscall.Pwrite(fds[f[1]], []byte(f[3]), num(2)); err != nil {
				fail(err)
				continue
			}
			reply("ok")
		case "fsync":
			if err := syscall.Fsync(fds[f[1]]); err != nil {
				fail(err)
				continue
			}
			reply("ok")
		case "read":
			buf := make([]byte, num(3))
			n, err := syscall.Pread(fds[f[1]], buf, num(2))
			if err != nil {
				fail(err)
				continue
			}
			reply("data %s", buf[:n])
		case "handoff":
			fd := fds[f[1]]
			var times []string
			var err error
			for i := int64(0); i < num(2) && err == nil; i++ {
				lk := syscall.Flock_t{Type: syscall.F_WRLCK}
				if err = syscall.FcntlFlock(uintptr(fd), syscall.F_SETLKW, &lk); err != nil {
					break
				}
				granted := monotonic()
				lk.Type = syscall.F_UNLCK
				err = syscall.FcntlFlock(uintptr(fd), syscall.F_SETLK, &lk)
				times = append(times, fmt.Sprintf("%d:%d", granted, monotonic()))
			}
			if err != nil {
				fail(err)
				continue
			}
			reply("times %s", strings.Join(times, " "))
		default:
			reply("err %q", "unknown command "+f[0])
		}
	}
	return 0
}

// monotonic is CLOCK_MONOTONIC in nanoseconds: comparable between the
// processes of one machine.
func monotonic() int64 {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts)
	return ts.Nano()
}

// locker is the test's handle on a locker process.
type locker struct {
	t       testing.TB
	name    string
	cmd     *exec.Cmd
	stdin   io.WriteCloser
	replies chan string
}

func startLocker(t testing.TB, name string) *locker {
	t.Helper()
	l := &locker{t: t, name: name, replies: make(chan string, 16)}
	l.cmd = exec.Command(os.Args[0], "-test.run=^$")
	l.cmd.Env = append(os.Environ(), lockerEnv+"=1")
	l.cmd.Stderr = os.Stderr
	var err error
	if l.stdin, err = l.cmd.StdinPipe(); err != nil {
		t.Fatal(err)
	}
	stdout, err := l.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := l.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			l.replies <- sc.Text()
		}
		close(l.replies)
	}()
	t.Cleanup(func() {
		l.stdin.Close()
		l.cmd.Process.Kill()
		l.cmd.Wait()
	})
	return l
}

// send sends a command without waiting for its answer.
func (l *locker) send(format string, args ...any) {
	l.t.Helper()
	if _, err := fmt.Fprintf(l.stdin, format+"\n", args...); err != nil {
		l.t.Fatalf("%s: send: %v", l.name, err)
	}
}

// answer waits up to d for the answer to the oldest unanswered command.
func (l *locker) answer(d time.Duration) (string, bool) {
	select {
	case r, ok := <-l.replies:
		return r, ok
	case <-time.After(d):
		return "", false
	}
}

// do sends a command and returns its answer (within 30s).
func (l *locker) do(format string, args ...any) string {
	l.t.Helper()
	l.send(format, args...)
	r, ok := l.answer(30 * time.Second)
	if !ok {
		l.t.Fatalf("%s: no answer to %q", l.name, fmt.Sprintf(format, args...))
	}
	return r
}

// must sends a command that must answer ok.
func (l *locker) must(format string, args ...any) {
	l.t.Helper()
	if r := l.do(format, args...); r != "ok" {
		l.t.Fatalf("%s: %q answered %q", l.name, fmt.Sprintf(format, args...), r)
	}
}

// blocked checks that the last command waits in the cluster: it waits
// until the leader lists a waiting lock request of l's process (its pid),
// and checks that l has not answered. So what the test does next happens
// after the request is queued, however slow the machine.
func (l *locker) blocked(pc *procCluster, what string) {
	l.t.Helper()
	c := pc.client(l.t)
	pid := uint32(l.cmd.Process.Pid)
	deadline := time.Now().Add(30 * time.Second)
	for {
		l.mustNotHaveAnswered(what)
		var locks []*jfspb.LockInfo
		err := c.Admin(context.Background(), func(ctx context.Context, a jfspb.AdminClient) error {
			r, err := a.ListLocks(ctx, &jfspb.ListLocksRequest{})
			locks = r.GetLocks()
			return err
		})
		if err == nil && slices.ContainsFunc(locks, func(li *jfspb.LockInfo) bool { return li.Waiting && li.Pid == pid }) {
			break
		}
		if time.Now().After(deadline) {
			l.t.Fatalf("%s: %s is not among the leader's waiters after 30s (last error %v)", l.name, what, err)
		}
		time.Sleep(10 * time.Millisecond) // polling the leader's waiters
	}
	l.mustNotHaveAnswered(what)
}

// mustNotHaveAnswered fails if the oldest unanswered command has answered.
func (l *locker) mustNotHaveAnswered(what string) {
	l.t.Helper()
	select {
	case r := <-l.replies:
		l.t.Fatalf("%s: %s answered %q, want it to wait", l.name, what, r)
	default:
	}
}

// errAnswer is the answer for errno e.
func errAnswer(e syscall.Errno) string { return fmt.Sprintf("err %d", int(e)) }
