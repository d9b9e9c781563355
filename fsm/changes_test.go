package fsm

import (
	"slices"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestChangeListenerNamesWhatChanged: each entry's inode records and
// directory entries reach the change listener, with the entry's session,
// before a reader can see them.
func TestChangeListenerNamesWhatChanged(t *testing.T) {
	h := mustHarness(t, Options{})
	var got []Change
	visible := false
	h.f.SetChangeListener(func(cs []Change) {
		got = append(got, cs...)
		if h.lookupErrno(RootIno, "new") == 0 {
			visible = true
		}
	})
	a := h.mustCreate(RootIno, "new", false)
	if visible {
		t.Fatal("the change listener ran after the create was visible to readers")
	}
	mustOK(t, h.do(cRename, &jfspb.RenameRequest{Parent: RootIno, Name: []byte("new"), NewParent: RootIno, NewName: []byte("moved")}))
	var inos []uint64
	var names []string
	for _, c := range got {
		if c.Session != h.sess {
			t.Errorf("change %+v: session %d, want %d", c, c.Session, h.sess)
		}
		inos = append(inos, c.Inos...)
		for _, e := range c.Entries {
			if e.Parent != RootIno {
				t.Errorf("entry %+v: parent, want %d", e, RootIno)
			}
			names = append(names, e.Name)
		}
	}
	for _, n := range []string{"new", "moved"} {
		if !slices.Contains(names, n) {
			t.Errorf("entries changed %v, want %q among them", names, n)
		}
	}
	if !slices.Contains(inos, a.Ino) || !slices.Contains(inos, RootIno) {
		t.Errorf("inodes changed %v, want %d and the root", inos, a.Ino)
	}
}
