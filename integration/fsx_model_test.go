package integration

import (
	"bytes"
	"fmt"
	"strings"
)

// The model side of the fsx exerciser (fsx_test.go): what a file must hold,
// the log of the last operations, and the report of a mismatch.

// fsxModel is the expected content of one file; len(data) is its size.
type fsxModel struct{ data []byte }

// write puts b at off, growing the file (the gap reads as zeros).
func (m *fsxModel) write(off int64, b []byte) {
	if len(b) == 0 {
		// write(2) and copy_file_range(2) of nothing leave the size alone,
		// even past the end.
		return
	}
	if end := off + int64(len(b)); end > int64(len(m.data)) {
		m.resize(end)
	}
	copy(m.data[off:], b)
}

// resize truncates or extends the file to size.
func (m *fsxModel) resize(size int64) {
	if size <= int64(len(m.data)) {
		clear(m.data[size:])
		m.data = m.data[:size]
		return
	}
	if size <= int64(cap(m.data)) {
		m.data = m.data[:size] // the bytes past the old size were cleared when cut
		return
	}
	m.data = append(m.data, make([]byte, size-int64(len(m.data)))...)
}

// zero makes [off, off+n) read as zeros, clipped to the size.
func (m *fsxModel) zero(off, n int64) {
	if off >= int64(len(m.data)) {
		return
	}
	clear(m.data[off:min(off+n, int64(len(m.data)))])
}

// slice returns the expected bytes of [off, off+n), clipped to the size.
func (m *fsxModel) slice(off, n int64) []byte {
	if off >= int64(len(m.data)) {
		return nil
	}
	return m.data[off:min(off+n, int64(len(m.data)))]
}

// fsxLog keeps the last entries of the operation log.
type fsxLog struct {
	entries []string
	next    int // the number of the next operation
}

const fsxLogKeep = 50

func (l *fsxLog) add(format string, args ...any) {
	l.entries = append(l.entries, fmt.Sprintf("%6d ", l.next)+fmt.Sprintf(format, args...))
	if len(l.entries) > fsxLogKeep {
		l.entries = l.entries[len(l.entries)-fsxLogKeep:]
	}
}

func (l *fsxLog) String() string { return strings.Join(l.entries, "\n") }

// fsxDiff describes how got differs from want, both read at offset base,
// the way fsx does: the first differing offset, how many bytes differ, and
// hex lines of 16 bytes of each around the first few differences.
func fsxDiff(base int64, want, got []byte) string {
	var b strings.Builder
	if len(want) != len(got) {
		fmt.Fprintf(&b, "length: want %d bytes, got %d (from offset %#x)\n", len(want), len(got), base)
	}
	n := min(len(want), len(got))
	first, count := -1, 0
	for i := range n {
		if want[i] != got[i] {
			if first < 0 {
				first = i
			}
			count++
		}
	}
	if first < 0 {
		return b.String()
	}
	fmt.Fprintf(&b, "%d bytes differ, the first at offset %#x\n", count, base+int64(first))
	fmt.Fprintf(&b, "%-10s %-48s %s\n", "OFFSET", "GOOD", "BAD")
	shown := 0
	// Lines start at file offsets that are multiples of 16.
	for abs := (base + int64(first)) &^ 15; abs < base+int64(n) && shown < 8; abs += 16 {
		lo, hi := max(abs-base, 0), min(abs+16-base, int64(n))
		if bytes.Equal(want[lo:hi], got[lo:hi]) {
			continue
		}
		fmt.Fprintf(&b, "%#010x % -48x % x\n", base+lo, want[lo:hi], got[lo:hi])
		shown++
	}
	return b.String()
}
