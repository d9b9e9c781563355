package fuse

import (
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestDataVersions(t *testing.T) {
	var d dataVersions
	v1 := &jfspb.Attr{Size: 5, MtimeNs: 10, CtimeNs: 10}
	steps := []struct {
		what string
		attr *jfspb.Attr
		want bool
	}{
		{"first open", v1, false},
		{"unchanged", v1, true},
		{"unchanged again", &jfspb.Attr{Size: 5, MtimeNs: 10, CtimeNs: 10, AtimeNs: 99}, true},
		{"ctime moved", &jfspb.Attr{Size: 5, MtimeNs: 10, CtimeNs: 11}, false},
		{"back to the old version is a change from the last open", v1, false},
		{"no attributes", nil, false},
		{"after no attributes", v1, false},
	}
	for _, s := range steps {
		if got := d.unchanged(7, s.attr); got != s.want {
			t.Fatalf("%s: unchanged %v, want %v", s.what, got, s.want)
		}
	}
	d.forget(7)
	if d.unchanged(7, v1) {
		t.Fatal("after forget: unchanged")
	}
	if d.unchanged(8, v1) {
		t.Fatal("another inode: unchanged")
	}
}
