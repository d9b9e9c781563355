package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"syscall"
	"testing"
)

// TestMountWriteBackVisibility: a mount keeps a file's writes until close,
// fsync or an unlock; another mount reads them from then on, not before.
func TestMountWriteBackVisibility(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc), startMount(t, pc, noCache...)
	mustWriteFile(t, a.path("f"), nil)
	fd := mustOpen(t, a.path("f"), syscall.O_WRONLY)
	defer syscall.Close(fd)

	if _, err := syscall.Pwrite(fd, []byte("first"), 0); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); len(got) != 0 {
		t.Fatalf("b reads %q before a's close or fsync: the write was not buffered", got)
	}
	if err := syscall.Fsync(fd); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "first" {
		t.Fatalf("b reads %q after a's fsync, want %q", got, "first")
	}

	// An unlock by the writer publishes its writes.
	if _, err := fcntlLock(fd, syscall.F_SETLKW, syscall.F_WRLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := syscall.Pwrite(fd, []byte("second"), 0); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "first" {
		t.Fatalf("b reads %q while a holds its lock, before unlock", got)
	}
	if _, err := fcntlLock(fd, syscall.F_SETLK, syscall.F_UNLCK, 0, 0); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "second" {
		t.Fatalf("b reads %q after a's unlock, want %q", got, "second")
	}

	// A close publishes them.
	if _, err := syscall.Pwrite(fd, []byte("third!!"), 0); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "second" {
		t.Fatalf("b reads %q before a's close", got)
	}
	if err := syscall.Close(fd); err != nil {
		t.Fatal(err)
	}
	fd = -1
	if got := mustReadPath(t, b.path("f")); string(got) != "third!!" {
		t.Fatalf("b reads %q after a's close, want %q", got, "third!!")
	}
}

// TestMountWriteBackReadYourWrites: on the writing mount, another
// descriptor, stat and a truncate see the buffered writes at once.
func TestMountWriteBackReadYourWrites(t *testing.T) {
	pc := startProcCluster(t, 3)
	for _, opts := range [][]string{nil, noCache} {
		t.Run(fmt.Sprintf("cache=%v", opts == nil), func(t *testing.T) {
			m := startMount(t, pc, opts...)
			w := mustOpen(t, m.path("f"), syscall.O_CREAT|syscall.O_WRONLY)
			defer syscall.Close(w)
			data := bytes.Repeat([]byte("0123456789"), 1000)
			for off := 0; off < len(data); off += 1000 { // small writes, joined in the buffer
				if _, err := syscall.Pwrite(w, data[off:off+1000], int64(off)); err != nil {
					t.Fatal(err)
				}
			}
			r := mustOpen(t, m.path("f"), syscall.O_RDONLY)
			defer syscall.Close(r)
			buf := make([]byte, 2*len(data))
			if n, err := syscall.Pread(r, buf, 0); err != nil || !bytes.Equal(buf[:n], data) {
				t.Fatalf("a second descriptor reads %d bytes (%v), want the %d written", n, err, len(data))
			}
			if _, err := syscall.Pwrite(w, []byte("tail"), int64(len(data))); err != nil {
				t.Fatal(err)
			}
			var st syscall.Stat_t
			if err := syscall.Stat(m.path("f"), &st); err != nil || st.Size != int64(len(data)+4) {
				t.Fatalf("stat after a buffered write: size %d (%v), want %d", st.Size, err, len(data)+4)
			}
			// A truncate comes after the writes made before it.
			if _, err := syscall.Pwrite(w, []byte("cut off"), 5); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Ftruncate(w, 3); err != nil {
				t.Fatal(err)
			}
			if _, err := syscall.Pwrite(w, []byte("Z"), 10); err != nil {
				t.Fatal(err)
			}
			if err := syscall.Close(w); err != nil {
				t.Fatal(err)
			}
			want := append([]byte("012"), make([]byte, 7)...)
			want = append(want, 'Z')
			if got := mustReadPath(t, m.path("f")); !bytes.Equal(got, want) {
				t.Fatalf("after write, truncate, write: %q, want %q", got, want)
			}
		})
	}
}

// TestMountWriteBackErrorAtClose: a buffered write that the cluster refuses
// (here for the capacity) fails the close, as on NFS.
func TestMountWriteBackErrorAtClose(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	if out, errOut, err := jfsctl(t, pc.servers(), "settings", "set", "--capacity", fmt.Sprint(64<<10)); err != nil {
		t.Fatalf("jfsctl settings set: %v %s %s", err, out, errOut)
	}
	fd := mustOpen(t, m.path("big"), syscall.O_CREAT|syscall.O_WRONLY)
	for off := 0; off < 256<<10; off += 16 << 10 {
		if _, err := syscall.Pwrite(fd, make([]byte, 16<<10), int64(off)); err != nil {
			syscall.Close(fd)
			t.Fatalf("write at %d: %v; a buffered write fails no earlier than the close", off, err)
		}
	}
	if err := syscall.Close(fd); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("close after writing 256 KiB under a 64 KiB capacity: %v, want ENOSPC", err)
	}
	// fsync reports it too, and a later close is clean.
	fd = mustOpen(t, m.path("big2"), syscall.O_CREAT|syscall.O_WRONLY)
	defer syscall.Close(fd)
	if _, err := syscall.Pwrite(fd, make([]byte, 256<<10), 0); err != nil {
		t.Fatalf("write: %v", err)
	}
	if err := syscall.Fsync(fd); !errors.Is(err, syscall.ENOSPC) {
		t.Fatalf("fsync after writing 256 KiB under a 64 KiB capacity: %v, want ENOSPC", err)
	}
	if err := syscall.Close(fd); err != nil {
		t.Fatalf("close after fsync reported the error: %v", err)
	}
}

// TestMountWriteBackKillLeader: the leader is killed while a mount has
// several writes of a large file in flight; nothing that fsync and close
// acknowledged is lost.
func TestMountWriteBackKillLeader(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc, noCache...)
	c := pc.client(t)
	leader := pc.leader(t, c)
	const mib, total, killAt = 1 << 20, 48, 16
	block := func(i int) []byte { return bytes.Repeat([]byte{byte(i)}, mib) }
	f, err := os.Create(m.path("big"))
	if err != nil {
		t.Fatal(err)
	}
	killed := make(chan struct{})
	for i := range total {
		if _, err := f.Write(block(i)); err != nil {
			t.Fatalf("write %d: %v", i, err)
		}
		if i == killAt {
			go func() {
				defer close(killed)
				pc.kill(leader)
			}()
		}
	}
	if err := f.Sync(); err != nil {
		t.Fatalf("fsync: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	<-killed
	if got := pc.leader(t, c); got == leader {
		t.Fatalf("killed node %s still leads", leader.id)
	}
	got := mustReadPath(t, m.path("big"))
	if len(got) != total*mib {
		t.Fatalf("%d bytes after the failover, want %d", len(got), total*mib)
	}
	for i := range total {
		if !bytes.Equal(got[i*mib:(i+1)*mib], block(i)) {
			t.Fatalf("MiB %d differs after the failover", i)
		}
	}
}
