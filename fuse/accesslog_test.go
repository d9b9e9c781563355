package fuse

import (
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestAccessLogLine(t *testing.T) {
	start := time.Date(2024, 1, 15, 10, 23, 45, 123456789, time.Local)
	c := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 100}, Pid: 12345}
	a := &fuse.Attr{Ino: 12345, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Owner: fuse.Owner{Uid: 1000, Gid: 100},
		Atime: 1705310625, Mtime: 1705310626, Ctime: 1705310627, Size: 6}
	for _, tc := range []struct {
		op, args string
		st       fuse.Status
		details  string
		d        time.Duration
		want     string
	}{
		{"getattr", "12345", fuse.OK, "", 123 * time.Microsecond,
			"2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] getattr (12345): OK <0.000123>\n"},
		{"lookup", "1,name", fuse.ENOENT, "", 1234567 * time.Nanosecond,
			"2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] lookup (1,name): ENOENT <0.001235>\n"},
		{"read", "12345,4096,0", fuse.OK, " (6)", 2 * time.Second,
			"2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] read (12345,4096,0): OK (6) <2.000000>\n"},
		{"getattr", "12345", fuse.OK, attrDetails(fuse.OK, a), 10 * time.Microsecond,
			"2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] getattr (12345): OK (12345,[-rw-r--r--:0100644,1,1000,100,1705310625,1705310626,1705310627,6]) <0.000010>\n"},
		{"unlink", "1,f", fuse.Status(syscall.ESTALE), "", 0,
			"2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] unlink (1,f): ESTALE <0.000000>\n"},
		{"setlk", "2,7,W,0,-1,99,true", fuse.Status(syscall.EDEADLK), "", time.Millisecond,
			"2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] setlk (2,7,W,0,-1,99,true): EDEADLK <0.001000>\n"},
	} {
		if got := formatLine(start, tc.d, c, tc.op, tc.args, tc.st, tc.details); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
	if d := attrDetails(fuse.ENOENT, a); d != "" {
		t.Errorf("details of an error: %q", d)
	}
}

func TestModeString(t *testing.T) {
	for mode, want := range map[uint32]string{
		syscall.S_IFDIR | 0o755:                   "drwxr-xr-x",
		syscall.S_IFREG | 0o600:                   "-rw-------",
		syscall.S_IFLNK | 0o777:                   "lrwxrwxrwx",
		syscall.S_IFDIR | 0o1777:                  "drwxrwxrwt",
		syscall.S_IFREG | syscall.S_ISUID | 0o644: "-rwSr--r--",
		syscall.S_IFREG | syscall.S_ISGID | 0o755: "-rwxr-sr-x",
		syscall.S_IFIFO | 0o644:                   "prw-r--r--",
	} {
		if got := modeString(mode); got != want {
			t.Errorf("modeString(%o) = %q, want %q", mode, got, want)
		}
	}
	if got := typeMode(syscall.S_IFDIR | 0o755); got != "d:0755" {
		t.Errorf("typeMode = %q", got)
	}
}

// Readers get whole lines, in order; a line longer than a read comes in
// pieces; a reader that does not keep up loses lines, and the writer never
// waits for it.
func TestAccessLogReaders(t *testing.T) {
	l := newAccessLog()
	if l.active() {
		t.Fatal("active without readers")
	}
	r1, r2 := l.open(), l.open()
	c := &fuse.Caller{}
	at := time.Date(2024, 1, 1, 0, 0, 0, 0, time.Local)
	l.add(at, 0, c, "getattr", fuse.OK, "", "%d", 1)
	l.add(at, 0, c, "getattr", fuse.OK, "", "%d", 2)
	line1 := formatLine(at, 0, c, "getattr", "1", fuse.OK, "")
	line2 := formatLine(at, 0, c, "getattr", "2", fuse.OK, "")

	buf := make([]byte, 4096)
	n, st := r1.read(nil, buf)
	if !st.Ok() || string(buf[:n]) != line1+line2 {
		t.Fatalf("read %q %v, want both lines", buf[:n], st)
	}
	small := make([]byte, 10)
	var got []byte
	for len(got) < len(line1)+len(line2) {
		n, _ := r2.read(nil, small)
		got = append(got, small[:n]...)
	}
	if string(got) != line1+line2 {
		t.Fatalf("small reads: %q", got)
	}

	l.close(r2)
	for i := range readerBuffer + 100 {
		l.add(at, 0, c, "getattr", fuse.OK, "", "%d", i)
	}
	if d := r1.dropped.Load(); d != 100 {
		t.Errorf("dropped %d lines, want 100", d)
	}
	cancel := make(chan struct{})
	close(cancel)
	l.close(r1)
	for len(r1.lines) > 0 {
		r1.read(cancel, buf)
	}
	if _, st := r1.read(cancel, buf); st != fuse.EINTR {
		t.Errorf("interrupted read: %v, want EINTR", st)
	}
	if l.active() {
		t.Error("active after every reader closed")
	}
}

func BenchmarkAccessLogInactive(b *testing.B) {
	f := &front{alog: newAccessLog()}
	for b.Loop() {
		if f.alog.active() {
			b.Fatal("active")
		}
	}
}
