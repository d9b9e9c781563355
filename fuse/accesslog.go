package fuse

import (
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// The access log: MOUNTPOINT/.accesslog streams one line per operation, in
// the format of JuiceFS (pkg/vfs logit), to whoever has it open:
//
//	2024.01.15 10:23:45.123456 [uid:1000,gid:1000,pid:12345] getattr (12345): (12345,[-rw-r--r--:0100644,1,1000,1000,1705310625,1705310625,1705310625,6]) - OK <0.001234>
//	2024.01.15 10:23:45.123456 [uid:0,gid:0,pid:1] lookup (1,x): - no such file or directory <0.000321>
//
// that is: the local time, the caller from the FUSE request header, the
// operation, its arguments in parentheses and, per operation, what it
// answered; then " - ", the result (OK or the errno's text, as
// syscall.Errno.Error writes it) and the seconds it took. The details of
// each operation follow JuiceFS's own logit calls (see FS methods in
// special.go). Lines are made only while someone reads; each reader has a
// bounded buffer, and a reader that falls behind loses lines instead of
// slowing the file system.

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
// format and args make what follows the operation's name and precedes
// " - result": the arguments in parentheses and the operation's details.
// A string argument that strconv.CanBackquote refuses (control
// characters, a backquote) is escaped, as JuiceFS does.
func (l *accessLog) add(start time.Time, d time.Duration, c *fuse.Caller, op string, st fuse.Status, format string, args ...any) {
	for i, a := range args {
		if s, ok := a.(string); ok && !strconv.CanBackquote(s) {
			args[i] = strings.Trim(strconv.Quote(s), `"`)
		}
	}
	line := []byte(formatLine(start, d, c, op, fmt.Sprintf(format, args...), st))
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

// formatLine is one access-log line, with its newline. body is what
// follows the operation's name: "(args)" and the details.
func formatLine(start time.Time, d time.Duration, c *fuse.Caller, op, body string, st fuse.Status) string {
	return fmt.Sprintf("%s [uid:%d,gid:%d,pid:%d] %s %s - %s <%.6f>\n",
		start.Format(accessLogTimeFormat), c.Uid, c.Gid, c.Pid, op, body, resultText(st), d.Seconds())
}

// resultText is OK or the errno's text ("no such file or directory"), as
// JuiceFS writes results.
func resultText(st fuse.Status) string {
	if st == fuse.OK {
		return "OK"
	}
	return syscall.Errno(st).Error()
}

// entryDetails are the details of an answer that carries an entry's
// attributes: " (ino,[-rw-r--r--:0100644,nlink,uid,gid,atime,mtime,ctime,size])",
// the mode in seven octal digits; empty on an error.
func entryDetails(st fuse.Status, a *fuse.Attr) string {
	if st != fuse.OK {
		return ""
	}
	return fmt.Sprintf(" (%d,[%s:0%06o,%d,%d,%d,%d,%d,%d,%d])", a.Ino, modeString(a.Mode), a.Mode,
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
		b[0] = 'f' // as JuiceFS writes a FIFO
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

// argMode is how JuiceFS prints a mode argument of mknod, mkdir and
// create: ls's rendering and at least four octal digits, "-rw-r--r--:0100644"
// or, for mkdir, whose mode has no file type, "?rwxr-xr-x:00755".
func argMode(mode uint32) string {
	return fmt.Sprintf("%s:0%04o", modeString(mode), mode)
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
