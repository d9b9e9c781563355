package fuse

import (
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestOpenDirs(t *testing.T) {
	var d openDirs
	if _, ok := d.removed(5); ok {
		t.Fatal("a directory never opened is answered for")
	}
	d.open(5, &jfspb.Attr{Ino: 5, Mode: 0o40755, Nlink: 2})
	d.open(5, &jfspb.Attr{Ino: 5, Mode: 0o40755, Nlink: 2})
	d.seen(&jfspb.Attr{Ino: 5, Mode: 0o40700, Nlink: 3})
	d.seen(&jfspb.Attr{Ino: 6, Mode: 0o40700, Nlink: 2}) // not open: ignored
	if _, ok := d.removed(6); ok {
		t.Fatal("seen made directory 6 open")
	}
	a, ok := d.removed(5)
	if !ok || a.Mode != 0o40700 || a.Nlink != 0 || a.Ino != 5 {
		t.Fatalf("removed(5) = %v, %v; want the last attributes seen with nlink 0", a, ok)
	}
	d.release(5)
	if _, ok := d.removed(5); !ok {
		t.Fatal("forgotten after the first of two closes")
	}
	d.release(5)
	if _, ok := d.removed(5); ok {
		t.Fatal("still answered for after the last close")
	}
	d.release(5) // a stray close is harmless
}
