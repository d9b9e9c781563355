package integration

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"syscall"
	"testing"
	"time"
)

func mustOpen(t *testing.T, path string, flags int) int {
	t.Helper()
	fd, err := syscall.Open(path, flags|syscall.O_CLOEXEC, 0o644)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	return fd
}

func fcntlLock(fd int, cmd int, typ int16, start, length int64) (syscall.Flock_t, error) {
	lk := syscall.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
	err := syscall.FcntlFlock(uintptr(fd), cmd, &lk)
	return lk, err
}

// TestMountTwoSessions: two mounts of one cluster are two sessions; each
// sees the other's changes, and their locks conflict.
func TestMountTwoSessions(t *testing.T) {
	pc := startProcCluster(t, 3)
	a := startMount(t, pc, noCache...)
	b := startMount(t, pc, noCache...)

	t.Run("names and data", func(t *testing.T) {
		mustWriteFile(t, a.path("f"), []byte("from a"))
		if got := mustReadPath(t, b.path("f")); string(got) != "from a" {
			t.Fatalf("b reads %q", got)
		}
		if err := os.Rename(b.path("f"), b.path("g")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(a.path("f")); !isNotExist(err) {
			t.Fatalf("a still sees f after b renamed it: %v", err)
		}
		if got := mustReadPath(t, a.path("g")); string(got) != "from a" {
			t.Fatalf("a reads %q from g", got)
		}
		mustWriteFile(t, b.path("g"), []byte("from b, longer"))
		if got := mustReadPath(t, a.path("g")); string(got) != "from b, longer" {
			t.Fatalf("a reads %q after b rewrote g", got)
		}
		if err := os.Mkdir(a.path("dir"), 0o755); err != nil {
			t.Fatal(err)
		}
		mustWriteFile(t, a.path("dir/x"), nil)
		ents, err := os.ReadDir(b.path("dir"))
		if err != nil || len(ents) != 1 || ents[0].Name() != "x" {
			t.Fatalf("b lists dir: %v %v", ents, err)
		}
	})

	t.Run("flock", func(t *testing.T) {
		mustWriteFile(t, a.path("flock"), nil)
		fa, fb := mustOpen(t, a.path("flock"), syscall.O_RDWR), mustOpen(t, b.path("flock"), syscall.O_RDWR)
		defer syscall.Close(fa)
		defer syscall.Close(fb)
		if err := syscall.Flock(fa, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatalf("a: %v", err)
		}
		if err := syscall.Flock(fb, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
			t.Fatalf("b while a holds the lock: %v, want EWOULDBLOCK", err)
		}
		if err := syscall.Flock(fb, syscall.LOCK_SH|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
			t.Fatalf("b shared while a holds it exclusive: %v, want EWOULDBLOCK", err)
		}
		if err := syscall.Flock(fa, syscall.LOCK_UN); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(fb, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatalf("b after a unlocked: %v", err)
		}
		// A blocking flock waits for the holder.
		done := make(chan error, 1)
		go func() { done <- syscall.Flock(fa, syscall.LOCK_EX) }()
		select {
		case err := <-done:
			t.Fatalf("a's blocking flock returned %v while b holds the lock", err)
		case <-time.After(300 * time.Millisecond):
		}
		if err := syscall.Flock(fb, syscall.LOCK_UN); err != nil {
			t.Fatal(err)
		}
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a's blocking flock: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a's blocking flock still waits 10s after b unlocked")
		}
	})

	t.Run("fcntl", func(t *testing.T) {
		mustWriteFile(t, a.path("plock"), nil)
		fa, fb := mustOpen(t, a.path("plock"), syscall.O_RDWR), mustOpen(t, b.path("plock"), syscall.O_RDWR)
		defer syscall.Close(fa)
		defer syscall.Close(fb)
		if _, err := fcntlLock(fa, syscall.F_SETLK, syscall.F_WRLCK, 10, 20); err != nil {
			t.Fatalf("a: %v", err)
		}
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_RDLCK, 0, 0); err != syscall.EAGAIN {
			t.Fatalf("b over a's range: %v, want EAGAIN", err)
		}
		lk, err := fcntlLock(fb, syscall.F_GETLK, syscall.F_WRLCK, 0, 0)
		if err != nil {
			t.Fatal(err)
		}
		if lk.Type != syscall.F_WRLCK || lk.Start != 10 || lk.Len != 20 || lk.Pid != 0 {
			t.Fatalf("F_GETLK from b: type %d start %d len %d pid %d, want a's write lock 10+20 with pid 0",
				lk.Type, lk.Start, lk.Len, lk.Pid)
		}
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_WRLCK, 30, 10); err != nil {
			t.Fatalf("b beside a's range: %v", err)
		}
		if _, err := fcntlLock(fa, syscall.F_SETLK, syscall.F_UNLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_WRLCK, 0, 0); err != nil {
			t.Fatalf("b after a unlocked: %v", err)
		}
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_UNLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		// F_SETLKW waits until the holder on b unlocks. The holder is
		// another process: this one waiting through a for a lock it holds
		// itself through b would be a deadlock (EDEADLK), since a process
		// is one owner whichever mount it uses.
		holder := startLocker(t, "holder on b")
		holder.must("open 1 %s", b.path("plock"))
		holder.must("lk 1 setlk w 0 0")
		done := make(chan error, 1)
		go func() {
			_, err := fcntlLock(fa, syscall.F_SETLKW, syscall.F_WRLCK, 0, 1)
			done <- err
		}()
		select {
		case err := <-done:
			t.Fatalf("a's F_SETLKW returned %v while b holds the lock", err)
		case <-time.After(300 * time.Millisecond):
		}
		holder.must("lk 1 setlk u 0 0")
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("a's F_SETLKW: %v", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("a's F_SETLKW still waits 10s after b unlocked")
		}
	})

	t.Run("unlink while open", func(t *testing.T) {
		mustWriteFile(t, a.path("u"), []byte("data"))
		fd := mustOpen(t, a.path("u"), syscall.O_RDWR)
		defer syscall.Close(fd)
		if err := os.Remove(b.path("u")); err != nil {
			t.Fatal(err)
		}
		for _, m := range []*jfsMount{a, b} {
			if _, err := os.Stat(m.path("u")); !isNotExist(err) {
				t.Fatalf("%s/u after unlink: %v", m.dir, err)
			}
		}
		buf := make([]byte, 16)
		if n, err := syscall.Pread(fd, buf, 0); err != nil || string(buf[:n]) != "data" {
			t.Fatalf("read after unlink: %q %v", buf[:n], err)
		}
		if _, err := syscall.Pwrite(fd, []byte("more"), 4); err != nil {
			t.Fatalf("write after unlink: %v", err)
		}
		if n, err := syscall.Pread(fd, buf, 0); err != nil || string(buf[:n]) != "datamore" {
			t.Fatalf("read back after unlink: %q %v", buf[:n], err)
		}
		var st syscall.Stat_t
		if err := syscall.Fstat(fd, &st); err != nil || st.Nlink != 0 || st.Size != 8 {
			t.Fatalf("fstat after unlink: nlink %d size %d, %v", st.Nlink, st.Size, err)
		}
	})

	t.Run("close releases the right locks", func(t *testing.T) {
		mustWriteFile(t, a.path("c"), nil)
		fd1, fd2 := mustOpen(t, a.path("c"), syscall.O_RDWR), mustOpen(t, a.path("c"), syscall.O_RDWR)
		fb := mustOpen(t, b.path("c"), syscall.O_RDWR)
		defer syscall.Close(fb)
		if _, err := fcntlLock(fd1, syscall.F_SETLK, syscall.F_WRLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Flock(fd2, syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			t.Fatal(err)
		}
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_WRLCK, 0, 0); err != syscall.EAGAIN {
			t.Fatalf("b while a holds the POSIX lock: %v, want EAGAIN", err)
		}
		// Closing either descriptor drops the process's POSIX locks on the
		// file; the flock belongs to the other open file and stays.
		syscall.Close(fd1)
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_WRLCK, 0, 0); err != nil {
			t.Fatalf("b after a closed a descriptor: %v", err)
		}
		if err := syscall.Flock(fb, syscall.LOCK_EX|syscall.LOCK_NB); err != syscall.EWOULDBLOCK {
			t.Fatalf("b's flock while a's other descriptor holds one: %v, want EWOULDBLOCK", err)
		}
		syscall.Close(fd2) // the last close of that open file drops its flock
		deadline := time.Now().Add(5 * time.Second)
		for {
			err := syscall.Flock(fb, syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) || time.Now().After(deadline) {
				t.Fatalf("b's flock after a closed its file: %v", err)
			}
			time.Sleep(10 * time.Millisecond)
		}
	})
}

// TestMountLockCoherence: with the kernel caching attributes and names, a
// reader that takes a lock still sees what another mount wrote under the
// lock, even through a descriptor opened before the write.
func TestMountLockCoherence(t *testing.T) {
	pc := startProcCluster(t, 3)
	cached := []string{"--cache-mode", "timed", "--attr-cache", "30s", "--entry-cache", "30s", "--dir-entry-cache", "30s"}
	a := startMount(t, pc, cached...)
	b := startMount(t, pc, cached...)
	old := bytes.Repeat([]byte("old."), 1024)
	mustWriteFile(t, a.path("shared"), old)
	fa := mustOpen(t, a.path("shared"), syscall.O_RDWR)
	defer syscall.Close(fa)
	fb := mustOpen(t, b.path("shared"), syscall.O_RDWR)
	defer syscall.Close(fb)
	buf := make([]byte, len(old))
	if n, err := syscall.Pread(fb, buf, 0); err != nil || !bytes.Equal(buf[:n], old) {
		t.Fatalf("b's first read: %d bytes, %v", n, err) // now in b's page cache
	}
	for i := range 5 {
		next := bytes.Repeat([]byte{byte('a' + i)}, len(old))
		if _, err := fcntlLock(fa, syscall.F_SETLKW, syscall.F_WRLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := syscall.Pwrite(fa, next, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := fcntlLock(fa, syscall.F_SETLK, syscall.F_UNLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		if _, err := fcntlLock(fb, syscall.F_SETLKW, syscall.F_RDLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
		n, err := syscall.Pread(fb, buf, 0)
		if err != nil || !bytes.Equal(buf[:n], next) {
			t.Fatalf("round %d: b reads %q... under its lock, want %q...", i, buf[:min(n, 8)], next[:8])
		}
		if _, err := fcntlLock(fb, syscall.F_SETLK, syscall.F_UNLCK, 0, 0); err != nil {
			t.Fatal(err)
		}
	}
	// The same with flock, the other way round.
	for i := range 3 {
		next := bytes.Repeat([]byte{byte('A' + i)}, len(old))
		if err := syscall.Flock(fb, syscall.LOCK_EX); err != nil {
			t.Fatal(err)
		}
		if _, err := syscall.Pwrite(fb, next, 0); err != nil {
			t.Fatal(err)
		}
		syscall.Flock(fb, syscall.LOCK_UN)
		if err := syscall.Flock(fa, syscall.LOCK_SH); err != nil {
			t.Fatal(err)
		}
		n, err := syscall.Pread(fa, buf, 0)
		if err != nil || !bytes.Equal(buf[:n], next) {
			t.Fatalf("flock round %d: a reads %q... under its lock, want %q...", i, buf[:min(n, 8)], next[:8])
		}
		syscall.Flock(fa, syscall.LOCK_UN)
	}
	// Names: after the cache timeout is not needed when caches are off, but
	// with them on a new name shows up at the latest after the timeout; a
	// new open shows the data at once.
	names, err := os.ReadDir(b.dir)
	if err != nil || !slices.ContainsFunc(names, func(e os.DirEntry) bool { return e.Name() == "shared" }) {
		t.Fatalf("b lists %v, %v", names, err)
	}
}
