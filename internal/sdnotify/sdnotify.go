// Package sdnotify tells the service manager (systemd) about a service's
// state, as sd_notify(3) does: one datagram of KEY=VALUE lines sent to the
// unix socket named by $NOTIFY_SOCKET. It depends on nothing but the standard
// library, so jfsd and jfs need no libsystemd.
package sdnotify

import (
	"fmt"
	"net"
	"os"
	"strings"
)

// The states a jfs program reports.
const (
	// Ready says that start-up is done: the service serves.
	Ready = "READY=1"
	// Stopping says that the service is shutting down.
	Stopping = "STOPPING=1"
)

// socketEnv names the variable through which systemd hands a Type=notify
// service its socket.
const socketEnv = "NOTIFY_SOCKET"

// Notify sends state (KEY=VALUE lines, e.g. Ready) to the socket in
// $NOTIFY_SOCKET. Without that variable it does nothing and returns false,
// nil: the program was not started by a service manager that listens. A
// socket name starting with '@' is in the abstract namespace. It returns true
// once the datagram was sent, and an error when the socket is named but the
// state could not be sent.
func Notify(state string) (bool, error) {
	name := os.Getenv(socketEnv)
	if name == "" {
		return false, nil
	}
	if !strings.HasPrefix(name, "/") && !strings.HasPrefix(name, "@") {
		return false, fmt.Errorf("sd_notify: %s=%q: want an absolute path or an @abstract name", socketEnv, name)
	}
	addr := &net.UnixAddr{Name: name, Net: "unixgram"}
	if name[0] == '@' {
		// The abstract namespace: a leading NUL byte instead of the '@'.
		addr.Name = "\x00" + name[1:]
	}
	conn, err := net.DialUnix("unixgram", nil, addr)
	if err != nil {
		return false, fmt.Errorf("sd_notify: %w", err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(state)); err != nil {
		return false, fmt.Errorf("sd_notify %s: %w", state, err)
	}
	return true, nil
}
