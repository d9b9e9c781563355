package integration

import (
	"bytes"
	"errors"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMountFallocate runs fallocate(2) through a real mount for each
// supported mode and checks the data read back, the size and st_blocks on
// this mount (whose kernel caches attributes for 30s) and on a second one.
// The cluster stores 64 KiB blocks, and st_blocks counts the bytes stored.
func TestMountFallocate(t *testing.T) {
	pc := startProcCluster(t, 3)
	cached := []string{"--cache-mode", "timed", "--attr-cache", "30s", "--entry-cache", "30s", "--dir-entry-cache", "30s"}
	a, b := startMount(t, pc, cached...), startMount(t, pc, cached...)
	const K = 1024
	want := bytes.Repeat([]byte("0123456789abcdef"), 200*K/16) // 200 KiB, no zero byte
	mustWriteFile(t, a.path("f"), want)
	fd := mustOpen(t, a.path("f"), syscall.O_RDWR)
	defer syscall.Close(fd)

	check := func(what string, stored int64) {
		t.Helper()
		for _, m := range []*jfsMount{a, b} {
			var st syscall.Stat_t
			if err := syscall.Stat(m.path("f"), &st); err != nil {
				t.Fatal(err)
			}
			if st.Size != int64(len(want)) || st.Blocks != (stored+511)/512 {
				t.Fatalf("%s, %s: size %d, blocks %d; want %d, %d", what, m.dir, st.Size, st.Blocks, len(want), (stored+511)/512)
			}
			if got := mustReadPath(t, m.path("f")); !bytes.Equal(got, want) {
				t.Fatalf("%s, %s: the data read back differs (%d bytes, want %d)", what, m.dir, len(got), len(want))
			}
		}
	}
	fallocate := func(mode uint32, off, length int64) {
		t.Helper()
		if err := unix.Fallocate(fd, mode, off, length); err != nil {
			t.Fatalf("fallocate(mode %#x, %d, %d): %v", mode, off, length, err)
		}
	}
	check("written", 200*K)

	// Mode 0 past the end: the size grows and the new range is stored.
	fallocate(0, 150*K, 150*K)
	want = append(want, make([]byte, 100*K)...)
	check("allocated to 300 KiB", 300*K)

	// KEEP_SIZE past the end: the size stays, and nothing past it is stored.
	fallocate(unix.FALLOC_FL_KEEP_SIZE, 250*K, 1000*K)
	check("allocated keeping the size", 300*K)

	// A hole over blocks 1 and 2 (64 KiB to 192 KiB) and a bit on either side.
	fallocate(unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, 60*K, 140*K)
	clear(want[60*K : 200*K])
	// Block 0 is trimmed to 60 KiB, blocks 1 and 2 are gone, block 3 keeps
	// its 64 KiB with the first 8 zeroed, block 4 its 44 KiB.
	check("punched", 60*K+64*K+44*K)

	// Zeroing a range fills it with stored zeros; past the end it grows
	// the file.
	fallocate(unix.FALLOC_FL_ZERO_RANGE, 10, 20)
	clear(want[10:30])
	fallocate(unix.FALLOC_FL_ZERO_RANGE, 290*K, 20*K)
	want = append(want, make([]byte, 10*K)...)
	check("zeroed", 60*K+64*K+54*K)

	// Writing into the hole reads back.
	if _, err := syscall.Pwrite(fd, []byte("in the hole"), 100*K); err != nil {
		t.Fatal(err)
	}
	copy(want[100*K:], "in the hole")
	check("written into the hole", 60*K+(100*K+11-64*K)+64*K+54*K)

	// The modes jfs does not support, and a punch without KEEP_SIZE, which
	// Linux refuses, fail with EOPNOTSUPP and change nothing.
	for _, mode := range []uint32{unix.FALLOC_FL_PUNCH_HOLE, unix.FALLOC_FL_COLLAPSE_RANGE, unix.FALLOC_FL_INSERT_RANGE} {
		if err := unix.Fallocate(fd, mode, 0, 64*K); !errors.Is(err, syscall.EOPNOTSUPP) {
			t.Fatalf("fallocate(mode %#x): %v, want EOPNOTSUPP", mode, err)
		}
	}
	check("after the refused modes", 60*K+(100*K+11-64*K)+64*K+54*K)
}
