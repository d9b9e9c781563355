package integration

import (
	"bytes"
	"os"
	"syscall"
	"testing"
)

// TestMountCloseToOpenSize: after one mount closes a file it changed, an
// open on another mount reads the new content, even though that mount's
// kernel cached the file's old size (here for 30s) before.
func TestMountCloseToOpenSize(t *testing.T) {
	pc := startProcCluster(t, 3)
	cached := []string{"--cache-mode", "timed", "--attr-cache", "30s", "--entry-cache", "30s", "--dir-entry-cache", "30s"}
	a, b := startMount(t, pc, cached...), startMount(t, pc, cached...)
	mustWriteFile(t, a.path("f"), []byte("short"))
	statSize := func(m *jfsMount) int64 {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Stat(m.path("f"), &st); err != nil {
			t.Fatal(err)
		}
		return st.Size
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "short" || statSize(b) != 5 {
		t.Fatalf("b reads %q before the change", got)
	}

	// Grow it on a: b's kernel still holds the size 5.
	longer := bytes.Repeat([]byte("longer content "), 1000)
	mustWriteFile(t, a.path("f"), longer)
	if got := mustReadPath(t, b.path("f")); !bytes.Equal(got, longer) {
		t.Fatalf("after a grew f and closed it, an open on b reads %d bytes, want %d", len(got), len(longer))
	}
	if got := statSize(b); got != int64(len(longer)) {
		t.Fatalf("after the open on b, stat on b says size %d, want %d", got, len(longer))
	}

	// Shrink it on a: b must not read past the new end.
	if err := os.Truncate(a.path("f"), 3); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "lon" {
		t.Fatalf("after a truncated f to 3 bytes, an open on b reads %d bytes (%.20q), want \"lon\"", len(got), got)
	}
}
