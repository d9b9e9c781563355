package sdnotify

import (
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
)

// listen opens a unixgram socket at name (a path, or @abstract) and points
// NOTIFY_SOCKET at it.
func listen(t *testing.T, name string) *net.UnixConn {
	t.Helper()
	addr := name
	if name[0] == '@' {
		addr = "\x00" + name[1:]
	}
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	t.Setenv(socketEnv, name)
	return conn
}

func receive(t *testing.T, conn *net.UnixConn) string {
	t.Helper()
	buf := make([]byte, 4096)
	n, err := conn.Read(buf)
	if err != nil {
		t.Fatal(err)
	}
	return string(buf[:n])
}

func TestNotifyPath(t *testing.T) {
	conn := listen(t, filepath.Join(t.TempDir(), "notify"))
	sent, err := Notify(Ready)
	if !sent || err != nil {
		t.Fatalf("Notify: %v %v", sent, err)
	}
	if got := receive(t, conn); got != "READY=1" {
		t.Errorf("received %q, want READY=1", got)
	}
}

func TestNotifyAbstract(t *testing.T) {
	conn := listen(t, "@jfs-sdnotify-test-"+strconv.Itoa(os.Getpid()))
	sent, err := Notify(Stopping)
	if !sent || err != nil {
		t.Fatalf("Notify: %v %v", sent, err)
	}
	if got := receive(t, conn); got != "STOPPING=1" {
		t.Errorf("received %q, want STOPPING=1", got)
	}
}

func TestNotifyUnset(t *testing.T) {
	t.Setenv(socketEnv, "")
	if sent, err := Notify(Ready); sent || err != nil {
		t.Errorf("Notify without %s: %v %v, want false, nil", socketEnv, sent, err)
	}
}

func TestNotifyBadSocket(t *testing.T) {
	for _, name := range []string{"relative/path", filepath.Join(t.TempDir(), "nobody-listens")} {
		t.Setenv(socketEnv, name)
		if sent, err := Notify(Ready); sent || err == nil {
			t.Errorf("%s=%q: %v %v, want an error", socketEnv, name, sent, err)
		}
	}
}
