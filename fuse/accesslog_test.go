package fuse

import (
	"syscall"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

// TestAccessLogLine pins lines to JuiceFS's format (pkg/vfs logit): the
// operation, its arguments and details, then " - ", the result as the
// errno's text, and the seconds.
func TestAccessLogLine(t *testing.T) {
	start := time.Date(2024, 1, 15, 10, 23, 45, 123456789, time.Local)
	c := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 100}, Pid: 12345}
	file := &fuse.Attr{Ino: 12345, Mode: syscall.S_IFREG | 0o644, Nlink: 1, Owner: fuse.Owner{Uid: 1000, Gid: 100},
		Atime: 1705310625, Mtime: 1705310626, Ctime: 1705310627, Size: 6}
	root := &fuse.Attr{Ino: 1, Mode: syscall.S_IFDIR | 0o755, Nlink: 2, Atime: 1, Mtime: 2, Ctime: 3, Size: 4096}
	const prefix = "2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] "
	for _, tc := range []struct {
		op     string
		st     fuse.Status
		d      time.Duration
		format string
		args   []any
		want   string
	}{
		{"getattr", fuse.OK, 213 * time.Microsecond, "(%d):%s", []any{1, entryDetails(fuse.OK, root)},
			"getattr (1): (1,[drwxr-xr-x:0040755,2,0,0,1,2,3,4096]) - OK <0.000213>"},
		{"getattr", fuse.OK, 10 * time.Microsecond, "(%d):%s", []any{12345, entryDetails(fuse.OK, file)},
			"getattr (12345): (12345,[-rw-r--r--:0100644,1,1000,100,1705310625,1705310626,1705310627,6]) - OK <0.000010>"},
		{"lookup", fuse.ENOENT, 1234567 * time.Nanosecond, "(%d,%s):%s", []any{1, "a b", entryDetails(fuse.ENOENT, file)},
			"lookup (1,a b): - no such file or directory <0.001235>"},
		{"flush", fuse.OK, 9 * time.Microsecond, "(%d,%d,%016X)", []any{16388, 3, uint64(0xabc)},
			"flush (16388,3,0000000000000ABC) - OK <0.000009>"},
		{"read", fuse.OK, 2 * time.Second, "(%d,%d,%d,%d): (%d)", []any{12345, 4096, 0, 7, 6},
			"read (12345,4096,0,7): (6) - OK <2.000000>"},
		{"mkdir", fuse.OK, 0, "(%d,%s,%s):%s", []any{1, "d", argMode(0o755), entryDetails(fuse.OK, root)},
			"mkdir (1,d,?rwxr-xr-x:00755): (1,[drwxr-xr-x:0040755,2,0,0,1,2,3,4096]) - OK <0.000000>"},
		{"create", fuse.OK, 0, "(%d,%s,%s):%s [fh:%d]", []any{1, "f", argMode(syscall.S_IFREG | 0o644), entryDetails(fuse.OK, file), 9},
			"create (1,f,-rw-r--r--:0100644): (12345,[-rw-r--r--:0100644,1,1000,100,1705310625,1705310626,1705310627,6]) [fh:9] - OK <0.000000>"},
		{"unlink", fuse.Status(syscall.ESTALE), 0, "(%d,%s)", []any{1, "new\nline"},
			"unlink (1,new\\nline) - stale file handle <0.000000>"},
		{"unlink", fuse.OK, 0, "(%d,%s)", []any{1, "new\nline"},
			"unlink (1,new\\nline) - OK <0.000000>"},
		{"setlk", fuse.Status(syscall.EDEADLK), time.Millisecond, "%s",
			[]any{lockArgs(&fuse.LkIn{InHeader: fuse.InHeader{NodeId: 2}, Fh: 5, Owner: 7, Lk: fuse.FileLock{End: 1<<63 - 1, Typ: syscall.F_WRLCK, Pid: 99}}, true)},
			"setlk (2,5,0000000000000007,0,9223372036854775807,W,true,99) - resource deadlock avoided <0.001000>"},
		{"flock", fuse.OK, 0, "%s",
			[]any{lockArgs(&fuse.LkIn{InHeader: fuse.InHeader{NodeId: 2}, Fh: 5, Owner: 7, LkFlags: fuse.FUSE_LK_FLOCK, Lk: fuse.FileLock{Typ: syscall.F_RDLCK}}, false)},
			"flock (2,5,0000000000000007,LOCKSH,false) - OK <0.000000>"},
		{"setattr", fuse.OK, 0, "(%d[%d],0x%X,[%s]):%s", []any{12345, 0, uint32(fuse.FATTR_MODE | fuse.FATTR_MTIME_NOW | fuse.FATTR_SIZE),
			setattrArgs(&fuse.SetAttrIn{SetAttrInCommon: fuse.SetAttrInCommon{Valid: fuse.FATTR_MODE | fuse.FATTR_MTIME_NOW | fuse.FATTR_SIZE, Mode: syscall.S_IFREG | 0o600, Size: 0}}), ""},
			"setattr (12345[0],0x109,[mode=-rw-------:00600,mtime=NOW,size=0]): - OK <0.000000>"},
	} {
		l := newAccessLog()
		r := l.open()
		l.add(start, tc.d, c, tc.op, tc.st, tc.format, tc.args...)
		buf := make([]byte, 4096)
		n, _ := r.read(nil, buf)
		if got, want := string(buf[:n]), prefix+tc.want+"\n"; got != want {
			t.Errorf("got  %q\nwant %q", got, want)
		}
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
		syscall.S_IFIFO | 0o644:                   "frw-r--r--",
		0o755:                                     "?rwxr-xr-x",
	} {
		if got := modeString(mode); got != want {
			t.Errorf("modeString(%o) = %q, want %q", mode, got, want)
		}
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
	l.add(at, 0, c, "getattr", fuse.OK, "(%d)", 1)
	l.add(at, 0, c, "getattr", fuse.OK, "(%d)", 2)
	line1 := formatLine(at, 0, c, "getattr", "(1)", fuse.OK)
	line2 := formatLine(at, 0, c, "getattr", "(2)", fuse.OK)

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
		l.add(at, 0, c, "getattr", fuse.OK, "(%d)", i)
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
