package fuse

import (
	"syscall"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestAppendMode(t *testing.T) {
	for _, tc := range []struct {
		name       string
		flags      uint32
		writeFlags uint32
		want       bool
	}{
		{"O_APPEND descriptor", syscall.O_WRONLY | syscall.O_APPEND | syscall.O_LARGEFILE, 0, true},
		{"O_RDWR|O_APPEND descriptor", syscall.O_RDWR | syscall.O_APPEND, fuse.WRITE_LOCKOWNER, true},
		{"plain descriptor", syscall.O_RDWR | syscall.O_LARGEFILE, 0, false},
		{"write-back of a mapping", 0, fuse.WRITE_CACHE, false},
		{"write-back with flags", syscall.O_RDWR | syscall.O_APPEND, fuse.WRITE_CACHE, false},
	} {
		in := &fuse.WriteIn{Flags: tc.flags, WriteFlags: tc.writeFlags}
		if got := appendMode(in); got != tc.want {
			t.Errorf("%s: appendMode %v, want %v", tc.name, got, tc.want)
		}
	}
	if openFlags(syscall.O_WRONLY|syscall.O_APPEND) != fuse.FOPEN_DIRECT_IO || openFlags(syscall.O_RDWR) != 0 {
		t.Errorf("openFlags: O_APPEND files must be opened for direct I/O, others not")
	}
}
