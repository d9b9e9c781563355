package integration

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// appendLine appends line to fd with one write(2).
func appendLine(t *testing.T, fd int, line string) {
	t.Helper()
	if n, err := syscall.Write(fd, []byte(line)); err != nil || n != len(line) {
		t.Fatalf("append %q: %d bytes, %v", line, n, err)
	}
}

// TestMountAppendAcrossMounts is the scenario of an O_APPEND descriptor
// opened on one mount before another mount appended to the file: a
// process on mount a takes a lock, appends three lines, fsyncs, unlocks
// and closes; then the process on mount b, whose kernel still has the
// old size, takes the lock and appends one line. The line must go after
// a's three, not over the first of them, whether the lock is a POSIX
// record lock (lockf) or a flock, and whether or not the kernel caches
// attributes. The descriptor on b is O_RDWR|O_APPEND, so that it can
// also read back what it appended.
func TestMountAppendAcrossMounts(t *testing.T) {
	pc := startProcCluster(t, 3)
	cached := []string{"--cache-mode", "timed", "--attr-cache", "30s", "--entry-cache", "30s", "--dir-entry-cache", "30s"}
	mounts := map[string][2]*jfsMount{}
	mounts["cached"] = [2]*jfsMount{startMount(t, pc, cached...), startMount(t, pc, cached...)}
	mounts["attr-cache 0"] = [2]*jfsMount{startMount(t, pc, noCache...), startMount(t, pc, noCache...)}
	lockf := func(t *testing.T, fd int, typ int16) {
		t.Helper()
		cmd := syscall.F_SETLKW
		if typ == syscall.F_UNLCK {
			cmd = syscall.F_SETLK
		}
		if _, err := fcntlLock(fd, cmd, typ, 0, 0); err != nil {
			t.Fatalf("fcntl lock %d: %v", typ, err)
		}
	}
	flock := func(t *testing.T, fd int, typ int16) {
		t.Helper()
		how := map[int16]int{syscall.F_WRLCK: syscall.LOCK_EX, syscall.F_UNLCK: syscall.LOCK_UN}[typ]
		if err := syscall.Flock(fd, how); err != nil {
			t.Fatalf("flock %d: %v", how, err)
		}
	}
	for _, tc := range []struct {
		name  string
		cache string
		lock  func(t *testing.T, fd int, typ int16)
	}{
		{"lockf", "cached", lockf},
		{"flock", "cached", flock},
		{"lockf attr-cache 0", "attr-cache 0", lockf},
		{"flock attr-cache 0", "attr-cache 0", flock},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := mounts[tc.cache][0], mounts[tc.cache][1]
			name := strings.ReplaceAll(tc.name, " ", "-")
			mustWriteFile(t, a.path(name), nil)
			fb := mustOpen(t, b.path(name), syscall.O_RDWR|syscall.O_APPEND)
			defer syscall.Close(fb)
			var st syscall.Stat_t
			if err := syscall.Fstat(fb, &st); err != nil || st.Size != 0 {
				t.Fatalf("b's first stat: size %d, %v", st.Size, err) // b's kernel now has size 0
			}

			fa := mustOpen(t, a.path(name), syscall.O_WRONLY|syscall.O_APPEND)
			tc.lock(t, fa, syscall.F_WRLCK)
			want := ""
			for i := range 3 {
				line := fmt.Sprintf("a line %d\n", i)
				appendLine(t, fa, line)
				want += line
			}
			if err := syscall.Fsync(fa); err != nil {
				t.Fatal(err)
			}
			tc.lock(t, fa, syscall.F_UNLCK)
			if err := syscall.Close(fa); err != nil {
				t.Fatal(err)
			}

			tc.lock(t, fb, syscall.F_WRLCK)
			appendLine(t, fb, "b line\n")
			want += "b line\n"
			// The same descriptor sees the real size and the whole file
			// after its append.
			if err := syscall.Fstat(fb, &st); err != nil || st.Size != int64(len(want)) {
				t.Fatalf("b's stat after its append: size %d, %v; want %d", st.Size, err, len(want))
			}
			buf := make([]byte, 4*len(want))
			n, err := syscall.Pread(fb, buf, 0)
			if err != nil || string(buf[:n]) != want {
				t.Fatalf("b reads %q, %v after its append; want %q", buf[:n], err, want)
			}
			tc.lock(t, fb, syscall.F_UNLCK)
			if got := string(mustReadPath(t, a.path(name))); got != want {
				t.Fatalf("a reads %q, want %q", got, want)
			}
		})
	}
}

// TestMountAppendConcurrent appends 1,000 lines from each of two mounts at
// once, without any lock, through O_APPEND descriptors: every line must be
// in the file once, whole, and each mount's lines in the order it wrote
// them.
func TestMountAppendConcurrent(t *testing.T) {
	pc := startProcCluster(t, 3)
	mounts := []*jfsMount{startMount(t, pc), startMount(t, pc)}
	const perMount = 1000
	mustWriteFile(t, mounts[0].path("log"), nil)
	line := func(m, i int) string {
		// Lines of different lengths, so that a misplaced one shows.
		return fmt.Sprintf("mount %d line %04d %s\n", m, i, strings.Repeat("x", i%37))
	}
	fds := make([]int, len(mounts))
	for m, mnt := range mounts {
		fds[m] = mustOpen(t, mnt.path("log"), syscall.O_WRONLY|syscall.O_APPEND)
		defer syscall.Close(fds[m])
	}
	start := make(chan struct{})
	errs := make(chan error, len(mounts))
	var wg sync.WaitGroup
	for m := range mounts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range perMount {
				l := line(m, i)
				if n, err := syscall.Write(fds[m], []byte(l)); err != nil || n != len(l) {
					errs <- fmt.Errorf("mount %d line %d: wrote %d bytes, %v", m, i, n, err)
					return
				}
			}
		}()
	}
	began := time.Now()
	close(start)
	wg.Wait()
	elapsed := time.Since(began)
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	t.Logf("%d appends from %d mounts in %v (%.0f/s)", perMount*len(mounts), len(mounts), elapsed,
		float64(perMount*len(mounts))/elapsed.Seconds())

	total := 0
	for m := range mounts {
		for i := range perMount {
			total += len(line(m, i))
		}
	}
	for _, mnt := range mounts {
		data := mustReadPath(t, mnt.path("log"))
		if len(data) != total {
			t.Errorf("%s: %d bytes, want %d", mnt.dir, len(data), total)
		}
		next := make([]int, len(mounts)) // the next line expected from each mount
		for n, l := range bytes.SplitAfter(data, []byte("\n")) {
			if len(l) == 0 {
				continue
			}
			var m, i int
			if _, err := fmt.Sscanf(string(l), "mount %d line %d", &m, &i); err != nil || m < 0 || m >= len(mounts) || string(l) != line(m, i) {
				t.Fatalf("%s: line %d is torn: %q", mnt.dir, n, l)
			}
			if i != next[m] {
				t.Fatalf("%s: line %d is mount %d's line %d, want its line %d", mnt.dir, n, m, i, next[m])
			}
			next[m]++
		}
		for m, got := range next {
			if got != perMount {
				t.Errorf("%s: %d lines of mount %d, want %d", mnt.dir, got, m, perMount)
			}
		}
	}
	if st, err := os.Stat(mounts[1].path("log")); err != nil || st.Size() != int64(total) {
		t.Fatalf("size seen by the second mount: %v, %v; want %d", st, err, total)
	}
}

// TestMountAppendFlags checks the cases where the append mode of a write is
// not the one the file was opened with, with kernels that cache attributes:
// pwrite(2) on an O_APPEND descriptor appends (as Linux does), and
// fcntl(F_SETFL) turns append mode on and off for later writes.
func TestMountAppendFlags(t *testing.T) {
	pc := startProcCluster(t, 3)
	cached := []string{"--cache-mode", "timed", "--attr-cache", "30s", "--entry-cache", "30s", "--dir-entry-cache", "30s"}
	a, b := startMount(t, pc, cached...), startMount(t, pc, cached...)
	mustWriteFile(t, a.path("f"), nil)
	fb := mustOpen(t, b.path("f"), syscall.O_RDWR|syscall.O_APPEND)
	defer syscall.Close(fb)
	fa := mustOpen(t, a.path("f"), syscall.O_RDWR)
	defer syscall.Close(fa)
	var st syscall.Stat_t
	for _, fd := range []int{fa, fb} {
		if err := syscall.Fstat(fd, &st); err != nil || st.Size != 0 {
			t.Fatalf("first stat: size %d, %v", st.Size, err) // both kernels now have size 0
		}
	}
	// Each write is synced: a plain write waits in its mount's buffer
	// until then, where the other mount's appends cannot see it.
	pwrite := func(fd int, s string, off int64) {
		t.Helper()
		if n, err := syscall.Pwrite(fd, []byte(s), off); err != nil || n != len(s) {
			t.Fatalf("pwrite %q at %d: %d, %v", s, off, n, err)
		}
		if err := syscall.Fsync(fd); err != nil {
			t.Fatalf("fsync after pwrite %q: %v", s, err)
		}
	}
	setfl := func(fd, flags int) {
		t.Helper()
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, flags); err != nil {
			t.Fatalf("F_SETFL %#x: %v", flags, err)
		}
	}
	want := func(s string) {
		t.Helper()
		for _, m := range []*jfsMount{a, b} {
			if got := string(mustReadPath(t, m.path("f"))); got != s {
				t.Fatalf("%s reads %q, want %q", m.dir, got, s)
			}
		}
	}

	pwrite(fa, "0123456789", 0)
	pwrite(fb, "A", 0) // appends: the offset does not count
	want("0123456789A")
	setfl(fb, 0) // append mode off: b writes where it says
	pwrite(fb, "B", 1)
	want("0B23456789A")
	setfl(fa, unix.O_APPEND) // append mode on for a descriptor opened without it
	pwrite(fb, "C", 11)      // b grows the file behind a's cached size
	appendLine(t, fa, "D")
	want("0B23456789ACD")
}

// TestMountAppendLargeRecords appends records of 1 MiB less a page, the
// largest write(2) that the kernel always sends as one FUSE write, from two
// mounts at once: each record must land whole, never cut by the other
// mount's.
func TestMountAppendLargeRecords(t *testing.T) {
	pc := startProcCluster(t, 3)
	mounts := []*jfsMount{startMount(t, pc), startMount(t, pc)}
	const (
		perMount = 6
		size     = 1<<20 - 4096
	)
	mustWriteFile(t, mounts[0].path("big"), nil)
	fill := func(m, i int) byte { return byte('A' + m*perMount + i) }
	start := make(chan struct{})
	errs := make(chan error, len(mounts))
	var wg sync.WaitGroup
	for m, mnt := range mounts {
		fd := mustOpen(t, mnt.path("big"), syscall.O_WRONLY|syscall.O_APPEND)
		defer syscall.Close(fd)
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			for i := range perMount {
				rec := bytes.Repeat([]byte{fill(m, i)}, size)
				if n, err := syscall.Write(fd, rec); err != nil || n != size {
					errs <- fmt.Errorf("mount %d record %d: wrote %d bytes, %v", m, i, n, err)
					return
				}
			}
		}()
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	data := mustReadPath(t, mounts[1].path("big"))
	if len(data) != len(mounts)*perMount*size {
		t.Fatalf("%d bytes, want %d", len(data), len(mounts)*perMount*size)
	}
	seen := map[byte]bool{}
	for off := 0; off < len(data); off += size {
		rec := data[off : off+size]
		if c := rec[0]; bytes.Count(rec, []byte{c}) != size || seen[c] {
			t.Fatalf("the record at %d is cut or repeated (starts with %q)", off, c)
		}
		seen[rec[0]] = true
	}
}

// TestMountAppendMmap checks that a file opened with O_APPEND (for direct
// I/O) can be mapped shared, and that what is written through the mapping
// goes where it was written: the kernel writes such pages back as writes
// that carry no file flags, which must not be taken for appends.
func TestMountAppendMmap(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc)
	want := bytes.Repeat([]byte("x"), 8192)
	mustWriteFile(t, a.path("f"), want)
	fd := mustOpen(t, a.path("f"), syscall.O_RDWR|syscall.O_APPEND)
	defer syscall.Close(fd)
	mem, err := unix.Mmap(fd, 0, len(want), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatalf("mmap of an O_APPEND file: %v", err)
	}
	defer unix.Munmap(mem)

	copy(mem, "HELLO")
	copy(want, "HELLO")
	if err := unix.Msync(mem, unix.MS_SYNC); err != nil {
		t.Fatalf("msync: %v", err)
	}
	if got := mustReadPath(t, b.path("f")); !bytes.Equal(got, want) {
		t.Fatalf("after msync the other mount reads %d bytes starting %q, want %d starting %q", len(got), got[:min(len(got), 8)], len(want), want[:8])
	}
	appendLine(t, fd, "tail\n")
	want = append(want, "tail\n"...)
	if got := mustReadPath(t, b.path("f")); !bytes.Equal(got, want) {
		t.Fatalf("after the append the other mount reads %d bytes, want %d", len(got), len(want))
	}
}
