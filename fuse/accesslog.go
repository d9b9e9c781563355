package fuse

import (
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The access log: MOUNTPOINT/.accesslog streams one line per operation, in
// JuiceFS's format, to whoever has it open:
//
//	2024.01.15 10:23:45.123456 [uid:1000,gid:1000,pid:12345] getattr (12345): OK (12345,[-rw-r--r--:0100644,1,1000,1000,1705310625,1705310625,1705310625,6]) <0.001234>
//
// that is: the local time the operation started, the caller from the FUSE
// request header, the operation and its arguments, the result (OK or an
// errno name), sometimes details, and the seconds it took. Lines are made
// only while someone reads; each reader has a bounded buffer, and a reader
// that falls behind loses lines instead of slowing the file system.

// accessLogTimeFormat is the time format of a line.
const accessLogTimeFormat = "2006.01.02 15:04:05.000000"

// readerBuffer is how many lines wait for a slow reader before it loses
// lines.
const readerBuffer = 10240

// accessLog fans lines out to its readers.
type accessLog struct {
	n       atomic.Int32 // readers; 0: no line is made at all
	mu      sync.RWMutex
	readers map[*logReader]struct{}
}

func newAccessLog() *accessLog {
	return &accessLog{readers: map[*logReader]struct{}{}}
}

// active reports whether anyone reads; callers make a line only then.
func (l *accessLog) active() bool { return l.n.Load() > 0 }

// open adds a reader.
func (l *accessLog) open() *logReader {
	r := &logReader{lines: make(chan []byte, readerBuffer)}
	l.mu.Lock()
	l.readers[r] = struct{}{}
	l.n.Store(int32(len(l.readers)))
	l.mu.Unlock()
	return r
}

// close removes a reader.
func (l *accessLog) close(r *logReader) {
	l.mu.Lock()
	delete(l.readers, r)
	l.n.Store(int32(len(l.readers)))
	l.mu.Unlock()
}

// add formats a line and hands it to every reader that has room for it.
func (l *accessLog) add(start time.Time, d time.Duration, c *fuse.Caller, op string, st fuse.Status, details string, format string, args ...any) {
	line := []byte(formatLine(start, d, c, op, fmt.Sprintf(format, args...), st, details))
	l.mu.RLock()
	defer l.mu.RUnlock()
	for r := range l.readers {
		select {
		case r.lines <- line:
		default:
			r.dropped.Add(1)
		}
	}
}

// formatLine is one access-log line, with its newline. args are the
// operation's arguments without parentheses; details, when not empty, start
// with a space.
func formatLine(start time.Time, d time.Duration, c *fuse.Caller, op, args string, st fuse.Status, details string) string {
	return fmt.Sprintf("%s [uid:%d,gid:%d,pid:%d] %s (%s): %s%s <%.6f>\n",
		start.Format(accessLogTimeFormat), c.Uid, c.Gid, c.Pid, op, args, errnoName(st), details, d.Seconds())
}

// errnoName is OK or the errno's name, as JuiceFS writes results.
func errnoName(st fuse.Status) string {
	if st == fuse.OK {
		return "OK"
	}
	if name := unix.ErrnoName(syscall.Errno(st)); name != "" {
		return name
	}
	return "errno " + strconv.Itoa(int(st))
}

// attrDetails are the details of an answer that carries attributes:
// " (ino,[-rw-r--r--:0100644,nlink,uid,gid,atime,mtime,ctime,size])".
func attrDetails(st fuse.Status, a *fuse.Attr) string {
	if st != fuse.OK {
		return ""
	}
	return fmt.Sprintf(" (%d,[%s:0%o,%d,%d,%d,%d,%d,%d,%d])", a.Ino, modeString(a.Mode), a.Mode,
		a.Nlink, a.Uid, a.Gid, a.Atime, a.Mtime, a.Ctime, a.Size)
}

// modeString is ls's rendering of a mode: "-rw-r--r--", "drwxr-xr-x".
func modeString(mode uint32) string {
	b := []byte("?rwxrwxrwx")
	switch mode & syscall.S_IFMT {
	case syscall.S_IFREG:
		b[0] = '-'
	case syscall.S_IFDIR:
		b[0] = 'd'
	case syscall.S_IFLNK:
		b[0] = 'l'
	case syscall.S_IFIFO:
		b[0] = 'p'
	case syscall.S_IFSOCK:
		b[0] = 's'
	case syscall.S_IFCHR:
		b[0] = 'c'
	case syscall.S_IFBLK:
		b[0] = 'b'
	}
	for i := range 9 {
		if mode&(1<<(8-i)) == 0 {
			b[i+1] = '-'
		}
	}
	set := func(bit uint32, at int, on, off byte) {
		if mode&bit != 0 {
			if b[at] == '-' {
				b[at] = off
			} else {
				b[at] = on
			}
		}
	}
	set(syscall.S_ISUID, 3, 's', 'S')
	set(syscall.S_ISGID, 6, 's', 'S')
	set(syscall.S_ISVTX, 9, 't', 'T')
	return string(b)
}

// typeMode is how JuiceFS prints a mode argument: "d:0755", "-:0644".
func typeMode(mode uint32) string {
	return fmt.Sprintf("%c:%04o", modeString(mode)[0], mode&0o7777)
}

// logReader is one open .accesslog.
type logReader struct {
	lines   chan []byte
	dropped atomic.Uint64

	mu   sync.Mutex // one read at a time
	last []byte     // the rest of a line that did not fit
}

// read fills buf with whole lines (a line longer than buf goes out in
// pieces): it waits for the first, then takes what else is there. It
// returns when the request is interrupted (EINTR).
func (r *logReader) read(cancel <-chan struct{}, buf []byte) (int, fuse.Status) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := copy(buf, r.last)
	r.last = r.last[n:]
	if n == 0 {
		select {
		case line := <-r.lines:
			n = copy(buf, line)
			r.last = line[n:]
		case <-cancel:
			return 0, fuse.EINTR
		}
	}
	for n < len(buf) && len(r.last) == 0 {
		select {
		case line := <-r.lines:
			c := copy(buf[n:], line)
			n += c
			r.last = line[c:]
		default:
			return n, fuse.OK
		}
	}
	return n, fuse.OK
}
