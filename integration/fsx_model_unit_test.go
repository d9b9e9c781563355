package integration

import (
	"bytes"
	"strings"
	"testing"
)

// TestFSXModel checks the exerciser's model: writes past the end leave
// zeros, a truncate down and up brings zeros back, zero is clipped to the
// size.
func TestFSXModel(t *testing.T) {
	var m fsxModel
	m.write(4, []byte("abcd"))
	m.resize(6)
	m.resize(10)
	m.zero(0, 5)
	m.zero(20, 5)
	want := []byte{0, 0, 0, 0, 0, 'b', 0, 0, 0, 0}
	if !bytes.Equal(m.data, want) {
		t.Fatalf("model holds %q, want %q", m.data, want)
	}
	if got := m.slice(8, 10); len(got) != 2 {
		t.Fatalf("slice past the end: %d bytes, want 2", len(got))
	}
	if got := m.slice(10, 1); got != nil {
		t.Fatalf("slice at the end: %q, want nothing", got)
	}
	// A copy from an empty file writes nothing, even past the end: the
	// size stays (as copy_file_range(2) and a write(2) of 0 bytes leave it).
	m.write(100, nil)
	if len(m.data) != 10 {
		t.Fatalf("a write of nothing at 100 made the size %d, want 10", len(m.data))
	}
}

// TestFSXDiff checks the mismatch report: the first differing offset, the
// count, and hex lines at file offsets that are multiples of 16.
func TestFSXDiff(t *testing.T) {
	want := make([]byte, 40)
	got := bytes.Clone(want)
	got[20], got[21] = 1, 2
	d := fsxDiff(3, want, got[:39])
	for _, s := range []string{"length: want 40 bytes, got 39", "2 bytes differ, the first at offset 0x17", "0x0000000010 ", "01 02"} {
		if !strings.Contains(d, s) {
			t.Errorf("the report lacks %q:\n%s", s, d)
		}
	}
	if d := fsxDiff(0, want, want); d != "" {
		t.Errorf("equal data reported as %q", d)
	}
}
