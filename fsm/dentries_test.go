package fsm

import (
	"fmt"
	"strings"
	"syscall"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestOpenCreatesRoot(t *testing.T) {
	h := mustHarness(t, Options{})
	a := h.mustAttr(RootIno)
	if a.Mode != syscall.S_IFDIR|0o755 || a.Nlink != 2 {
		t.Fatalf("root: %v", a)
	}
	if got := h.mustLookup(RootIno, "..").Ino; got != RootIno {
		t.Fatalf("root/.. = %d", got)
	}
}

func TestNameErrnos(t *testing.T) {
	h := mustHarness(t, Options{})
	h.mustMkdir(RootIno, "d")
	f := h.mustCreate(RootIno, "f", false)
	for _, tc := range []struct {
		name   string
		parent uint64
		want   syscall.Errno
	}{
		{strings.Repeat("x", 256), RootIno, syscall.ENAMETOOLONG},
		{"", RootIno, syscall.EINVAL},
		{".", RootIno, syscall.EINVAL},
		{"..", RootIno, syscall.EINVAL},
		{"a/b", RootIno, syscall.EINVAL},
		{"a\x00b", RootIno, syscall.EINVAL},
		{"d", RootIno, syscall.EEXIST},
		{"f", RootIno, syscall.EEXIST},
		{"x", 999, syscall.ENOENT},
		{"x", f.Ino, syscall.ENOTDIR},
		{strings.Repeat("x", 255), RootIno, 0},
	} {
		t.Run(fmt.Sprintf("%.12q", tc.name), func(t *testing.T) {
			name := []byte(tc.name)
			mustErrno(t, h.do(cMkdir, &jfspb.MkdirRequest{Parent: tc.parent, Name: name, Mode: 0o755}), tc.want)
			if tc.want == 0 {
				name = append(name[:len(name)-1], 'y') // a fresh name for the others
			}
			mustErrno(t, h.do(cMknod, &jfspb.MknodRequest{Parent: tc.parent, Name: name, Mode: 0o644}), tc.want)
			if tc.want == 0 {
				name[0] = 'z'
			}
			mustErrno(t, h.do(cSymlink, &jfspb.SymlinkRequest{Parent: tc.parent, Name: name, Target: []byte("t")}), tc.want)
			if tc.want == 0 {
				name[1] = 'z'
			}
			mustErrno(t, h.do(cLink, &jfspb.LinkRequest{Ino: f.Ino, NewParent: tc.parent, NewName: name}), tc.want)
			if tc.want == 0 {
				name[2] = 'z'
			}
			r := h.do(cCreate, &jfspb.CreateRequest{Parent: tc.parent, Name: name, Mode: 0o644, Flags: syscall.O_EXCL})
			mustErrno(t, r, tc.want)
		})
	}
	if e := h.lookupErrno(RootIno, "missing"); e != syscall.ENOENT {
		t.Fatalf("lookup missing: %v", e)
	}
	if e := h.lookupErrno(f.Ino, "x"); e != syscall.ENOTDIR {
		t.Fatalf("lookup in file: %v", e)
	}
	if e := h.lookupErrno(RootIno, strings.Repeat("y", 256)); e != syscall.ENAMETOOLONG {
		t.Fatalf("lookup long: %v", e)
	}
}

func TestMknod(t *testing.T) {
	h := mustHarness(t, Options{})
	for _, tc := range []struct {
		name string
		mode uint32
		rdev uint32
		want syscall.Errno
		typ  uint32
		rd   uint32
	}{
		{"plain", 0o644, 0, 0, syscall.S_IFREG, 0},
		{"reg", syscall.S_IFREG | 0o600, 7, 0, syscall.S_IFREG, 0},
		{"fifo", syscall.S_IFIFO | 0o600, 0, 0, syscall.S_IFIFO, 0},
		{"sock", syscall.S_IFSOCK | 0o600, 0, 0, syscall.S_IFSOCK, 0},
		{"chr", syscall.S_IFCHR | 0o600, 0x0501, 0, syscall.S_IFCHR, 0x0501},
		{"blk", syscall.S_IFBLK | 0o600, 0x0802, 0, syscall.S_IFBLK, 0x0802},
		{"dir", syscall.S_IFDIR | 0o755, 0, syscall.EPERM, 0, 0},
		{"lnk", syscall.S_IFLNK | 0o777, 0, syscall.EINVAL, 0, 0},
		{"plain", 0o644, 0, syscall.EEXIST, 0, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := h.do(cMknod, &jfspb.MknodRequest{Parent: RootIno, Name: []byte(tc.name), Mode: tc.mode, Rdev: tc.rdev, Uid: 5, Gid: 6, Umask: 0o022}).(*jfspb.MknodResponse)
			mustErrno(t, r, tc.want)
			if tc.want != 0 {
				return
			}
			a := h.mustLookup(RootIno, tc.name)
			if a.Mode&syscall.S_IFMT != tc.typ || a.Rdev != tc.rd || a.Nlink != 1 || a.Uid != 5 || a.Gid != 6 || a.Mode&0o7777 != tc.mode&0o7777&^0o022 {
				t.Fatalf("attr %v", a)
			}
			if a.CtimeNs != h.now || a.MtimeNs != h.now {
				t.Fatalf("times %v, want %d", a, h.now)
			}
		})
	}
}

func TestMkdirRmdir(t *testing.T) {
	h := mustHarness(t, Options{})
	d := h.mustMkdir(RootIno, "d")
	if d.Nlink != 2 || d.Mode&syscall.S_IFMT != syscall.S_IFDIR {
		t.Fatalf("new dir %v", d)
	}
	if n := h.mustAttr(RootIno).Nlink; n != 3 {
		t.Fatalf("root nlink %d, want 3", n)
	}
	sub := h.mustMkdir(d.Ino, "sub")
	if n := h.mustAttr(d.Ino).Nlink; n != 3 {
		t.Fatalf("d nlink %d", n)
	}
	if got := h.mustLookup(sub.Ino, "..").Ino; got != d.Ino {
		t.Fatalf("sub/.. = %d", got)
	}
	h.mustCreate(RootIno, "file", false)
	for _, tc := range []struct {
		parent uint64
		name   string
		want   syscall.Errno
	}{
		{RootIno, "file", syscall.ENOTDIR},
		{RootIno, "d", syscall.ENOTEMPTY},
		{RootIno, "nope", syscall.ENOENT},
		{RootIno, ".", syscall.EINVAL},
		{RootIno, "..", syscall.EINVAL},
		{d.Ino, "sub", 0},
		{RootIno, "d", 0},
	} {
		mustErrno(t, h.do(cRmdir, &jfspb.RmdirRequest{Parent: tc.parent, Name: []byte(tc.name)}), tc.want)
	}
	if n := h.mustAttr(RootIno).Nlink; n != 2 {
		t.Fatalf("root nlink %d after rmdir, want 2", n)
	}
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: d.Ino}), syscall.ENOENT)
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: sub.Ino}), syscall.ENOENT)
}

func TestUnlink(t *testing.T) {
	h := mustHarness(t, Options{})
	d := h.mustMkdir(RootIno, "d")
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, []byte("hello"))
	used := h.f.StatFS(nil)
	mustErrno(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("d")}), syscall.EISDIR)
	mustErrno(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("nope")}), syscall.ENOENT)
	mustErrno(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: f.Ino, Name: []byte("x")}), syscall.ENOTDIR)
	mustErrno(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: d.Ino, Name: []byte("f")}), syscall.ENOENT)
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: f.Ino}), syscall.ENOENT)
	if e := h.lookupErrno(RootIno, "f"); e != syscall.ENOENT {
		t.Fatalf("lookup after unlink: %v", e)
	}
	st := h.f.StatFS(nil)
	if st.UsedInodes != used.UsedInodes-1 || st.UsedBytes != used.UsedBytes-5 {
		t.Fatalf("statfs before %v after %v", used, st)
	}
}

// renameCase builds a tree: /a (dir) holding /a/f (file "f-data") and
// /a/sub (empty dir); /b (dir) holding /b/g (file), /b/full (dir holding
// x), /b/empty (dir); /h a hard link of /a/f.
type renameTree struct {
	a, b, f, sub, g, full, empty uint64
}

func mustRenameTree(h *harness) renameTree {
	h.t.Helper()
	var tr renameTree
	tr.a = h.mustMkdir(RootIno, "a").Ino
	tr.b = h.mustMkdir(RootIno, "b").Ino
	tr.f = h.mustCreate(tr.a, "f", false).Ino
	h.mustWrite(tr.f, 0, []byte("f-data"))
	tr.sub = h.mustMkdir(tr.a, "sub").Ino
	tr.g = h.mustCreate(tr.b, "g", false).Ino
	tr.full = h.mustMkdir(tr.b, "full").Ino
	h.mustCreate(tr.full, "x", false)
	tr.empty = h.mustMkdir(tr.b, "empty").Ino
	mustOK(h.t, h.do(cLink, &jfspb.LinkRequest{Ino: tr.f, NewParent: RootIno, NewName: []byte("h")}))
	return tr
}

func TestRename(t *testing.T) {
	const noreplace, exchange = renameNoReplace, renameExchange
	type ref struct {
		dir  func(renameTree) uint64
		name string
	}
	a := func(tr renameTree) uint64 { return tr.a }
	b := func(tr renameTree) uint64 { return tr.b }
	root := func(renameTree) uint64 { return RootIno }
	sub := func(tr renameTree) uint64 { return tr.sub }
	for _, tc := range []struct {
		name     string
		from, to ref
		flags    uint32
		want     syscall.Errno
		check    func(t *testing.T, h *harness, tr renameTree)
	}{
		{"same dir", ref{a, "f"}, ref{a, "f2"}, 0, 0, func(t *testing.T, h *harness, tr renameTree) {
			if h.mustLookup(tr.a, "f2").Ino != tr.f || h.lookupErrno(tr.a, "f") != syscall.ENOENT {
				t.Fatal("not renamed")
			}
		}},
		{"across dirs", ref{a, "f"}, ref{b, "f"}, 0, 0, func(t *testing.T, h *harness, tr renameTree) {
			mustEqualBytes(t, "data", h.mustRead(h.mustLookup(tr.b, "f").Ino, 0, 100), []byte("f-data"))
		}},
		{"over file frees it", ref{a, "f"}, ref{b, "g"}, 0, 0, func(t *testing.T, h *harness, tr renameTree) {
			mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: tr.g}), syscall.ENOENT)
			if h.mustLookup(tr.b, "g").Ino != tr.f {
				t.Fatal("g is not f")
			}
		}},
		{"noreplace existing", ref{a, "f"}, ref{b, "g"}, noreplace, syscall.EEXIST, nil},
		{"noreplace free", ref{a, "f"}, ref{b, "new"}, noreplace, 0, nil},
		{"both flags", ref{a, "f"}, ref{b, "g"}, noreplace | exchange, syscall.EINVAL, nil},
		{"unknown flag", ref{a, "f"}, ref{b, "g"}, 4, syscall.EINVAL, nil},
		{"exchange missing", ref{a, "f"}, ref{b, "nope"}, exchange, syscall.ENOENT, nil},
		{"exchange file and dir", ref{a, "f"}, ref{b, "full"}, exchange, 0, func(t *testing.T, h *harness, tr renameTree) {
			if h.mustLookup(tr.a, "f").Ino != tr.full || h.mustLookup(tr.b, "full").Ino != tr.f {
				t.Fatal("not exchanged")
			}
			if h.mustLookup(tr.full, "..").Ino != tr.a {
				t.Fatal("full/.. not a")
			}
			if na, nb := h.mustAttr(tr.a).Nlink, h.mustAttr(tr.b).Nlink; na != 4 || nb != 3 {
				t.Fatalf("nlink a %d b %d, want 4 3", na, nb)
			}
		}},
		{"missing source", ref{a, "nope"}, ref{b, "x"}, 0, syscall.ENOENT, nil},
		{"missing parent", ref{func(renameTree) uint64 { return 999 }, "f"}, ref{b, "x"}, 0, syscall.ENOENT, nil},
		{"dir over empty dir", ref{a, "sub"}, ref{b, "empty"}, 0, 0, func(t *testing.T, h *harness, tr renameTree) {
			mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: tr.empty}), syscall.ENOENT)
			if na, nb := h.mustAttr(tr.a).Nlink, h.mustAttr(tr.b).Nlink; na != 2 || nb != 4 {
				t.Fatalf("nlink a %d b %d, want 2 4", na, nb)
			}
			if h.mustLookup(tr.sub, "..").Ino != tr.b {
				t.Fatal("sub/.. not b")
			}
		}},
		{"dir over non-empty dir", ref{a, "sub"}, ref{b, "full"}, 0, syscall.ENOTEMPTY, nil},
		{"dir over file", ref{a, "sub"}, ref{b, "g"}, 0, syscall.ENOTDIR, nil},
		{"file over dir", ref{a, "f"}, ref{b, "empty"}, 0, syscall.EISDIR, nil},
		{"dir into itself", ref{root, "a"}, ref{a, "x"}, 0, syscall.EINVAL, nil},
		{"dir into its subtree", ref{root, "a"}, ref{sub, "x"}, 0, syscall.EINVAL, nil},
		{"dir over its ancestor", ref{a, "sub"}, ref{root, "a"}, 0, syscall.ENOTEMPTY, nil},
		{"onto a hard link", ref{a, "f"}, ref{root, "h"}, 0, 0, func(t *testing.T, h *harness, tr renameTree) {
			if h.mustLookup(tr.a, "f").Ino != tr.f || h.mustLookup(RootIno, "h").Ino != tr.f || h.mustAttr(tr.f).Nlink != 2 {
				t.Fatal("rename onto a hard link changed something")
			}
		}},
		{"onto itself", ref{a, "f"}, ref{a, "f"}, 0, 0, nil},
		{"bad new name", ref{a, "f"}, ref{a, "x/y"}, 0, syscall.EINVAL, nil},
		{"long new name", ref{a, "f"}, ref{a, strings.Repeat("n", 256)}, 0, syscall.ENAMETOOLONG, nil},
		{"new parent is file", ref{a, "f"}, ref{func(tr renameTree) uint64 { return tr.g }, "x"}, 0, syscall.ENOTDIR, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustHarness(t, Options{})
			tr := mustRenameTree(h)
			before := h.mustAttr(tr.a)
			r := h.do(cRename, &jfspb.RenameRequest{
				Parent: tc.from.dir(tr), Name: []byte(tc.from.name),
				NewParent: tc.to.dir(tr), NewName: []byte(tc.to.name), Flags: tc.flags,
			})
			mustErrno(t, r, tc.want)
			if tc.want != 0 {
				if after := h.mustAttr(tr.a); after.MtimeNs != before.MtimeNs {
					t.Fatal("failed rename changed the source directory")
				}
			}
			if tc.check != nil {
				tc.check(t, h, tr)
			}
		})
	}
}

func TestLink(t *testing.T) {
	h := mustHarness(t, Options{})
	d := h.mustMkdir(RootIno, "d")
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, []byte("data"))
	link := func(ino uint64, parent uint64, name string) *jfspb.LinkResponse {
		return h.do(cLink, &jfspb.LinkRequest{Ino: ino, NewParent: parent, NewName: []byte(name)}).(*jfspb.LinkResponse)
	}
	mustErrno(t, link(d.Ino, RootIno, "d2"), syscall.EPERM)
	mustErrno(t, link(f.Ino, RootIno, "d"), syscall.EEXIST)
	mustErrno(t, link(999, RootIno, "x"), syscall.ENOENT)
	mustErrno(t, link(f.Ino, f.Ino, "x"), syscall.ENOTDIR)
	r := link(f.Ino, d.Ino, "f2")
	mustOK(t, r)
	if r.Attr.Nlink != 2 {
		t.Fatalf("nlink %d", r.Attr.Nlink)
	}
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	a := h.mustLookup(d.Ino, "f2")
	if a.Nlink != 1 {
		t.Fatalf("nlink after unlink %d", a.Nlink)
	}
	mustEqualBytes(t, "data via link", h.mustRead(a.Ino, 0, 10), []byte("data"))
}

func TestSymlink(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	sym := func(name string, target []byte) *jfspb.SymlinkResponse {
		return h.do(cSymlink, &jfspb.SymlinkRequest{Parent: RootIno, Name: []byte(name), Target: target}).(*jfspb.SymlinkResponse)
	}
	mustErrno(t, sym("long", make([]byte, 4097)), syscall.ENAMETOOLONG)
	mustErrno(t, sym("empty", nil), syscall.ENOENT)
	mustErrno(t, sym("f", []byte("x")), syscall.EEXIST)
	target := []byte("../some/where\xff")
	r := sym("l", target)
	mustOK(t, r)
	if r.Attr.Mode != syscall.S_IFLNK|0o777 || r.Attr.Size != uint64(len(target)) {
		t.Fatalf("attr %v", r.Attr)
	}
	max := sym("max", []byte(strings.Repeat("t", 4096)))
	mustOK(t, max)
	rl := h.f.ReadLink(&jfspb.ReadLinkRequest{Ino: r.Attr.Ino})
	mustOK(t, rl)
	mustEqualBytes(t, "target", rl.Target, target)
	mustErrno(t, h.f.ReadLink(&jfspb.ReadLinkRequest{Ino: f.Ino}), syscall.EINVAL)
	mustErrno(t, h.f.ReadLink(&jfspb.ReadLinkRequest{Ino: 999}), syscall.ENOENT)
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("l")}))
	mustErrno(t, h.f.ReadLink(&jfspb.ReadLinkRequest{Ino: r.Attr.Ino}), syscall.ENOENT)
}

func TestReadDirPaging(t *testing.T) {
	h := mustHarness(t, Options{})
	d := h.mustMkdir(RootIno, "d")
	want := map[string]bool{}
	for i := range 10 {
		name := fmt.Sprintf("f%02d", i)
		h.mustCreate(d.Ino, name, false)
		want[name] = true
	}
	mustErrno(t, h.f.ReadDir(&jfspb.ReadDirRequest{Ino: 999}), syscall.ENOENT)
	f := h.mustLookup(d.Ino, "f00")
	mustErrno(t, h.f.ReadDir(&jfspb.ReadDirRequest{Ino: f.Ino}), syscall.ENOTDIR)

	seen := map[string]int{}
	var cookie uint64
	lastCookie := uint64(2)
	for page := 0; ; page++ {
		r := h.f.ReadDir(&jfspb.ReadDirRequest{Ino: d.Ino, Cookie: cookie, Limit: 3})
		mustOK(t, r)
		for _, e := range r.Entries {
			if e.Cookie <= lastCookie {
				t.Fatalf("cookie %d after %d", e.Cookie, lastCookie)
			}
			lastCookie = e.Cookie
			seen[string(e.Name)]++
			if e.Attr == nil || e.Attr.Mode&syscall.S_IFMT != syscall.S_IFREG {
				t.Fatalf("entry %s without attr: %v", e.Name, e.Attr)
			}
			cookie = e.Cookie
		}
		if page == 0 {
			// Concurrent changes: remove a listed and an unlisted entry,
			// add a new one.
			mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: d.Ino, Name: []byte("f00")}))
			mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: d.Ino, Name: []byte("f09")}))
			h.mustCreate(d.Ino, "new", false)
			delete(want, "f09")
			want["new"] = true
		}
		if r.Eof {
			break
		}
		if page > 10 {
			t.Fatal("no eof")
		}
	}
	for name := range want {
		if seen[name] != 1 {
			t.Errorf("%s seen %d times", name, seen[name])
		}
	}
	if len(seen) != len(want) {
		t.Errorf("seen %v, want %v", seen, want)
	}
}

func TestCreateExisting(t *testing.T) {
	h := mustHarness(t, Options{})
	f := h.mustCreate(RootIno, "f", false)
	h.mustWrite(f.Ino, 0, []byte("abc"))
	h.mustMkdir(RootIno, "d")
	create := func(name string, flags uint32) *jfspb.CreateResponse {
		return h.do(cCreate, &jfspb.CreateRequest{Parent: RootIno, Name: []byte(name), Mode: 0o644, Flags: flags}).(*jfspb.CreateResponse)
	}
	mustErrno(t, create("f", syscall.O_CREAT|syscall.O_EXCL), syscall.EEXIST)
	mustErrno(t, create("d", syscall.O_CREAT), syscall.EISDIR)
	r := create("f", syscall.O_CREAT)
	mustOK(t, r)
	if r.Created || r.Attr.Ino != f.Ino || r.Attr.Size != 3 {
		t.Fatalf("open existing: %v", r)
	}
	r = create("f", syscall.O_CREAT|syscall.O_TRUNC)
	mustOK(t, r)
	if r.Attr.Size != 0 || len(h.mustRead(f.Ino, 0, 10)) != 0 {
		t.Fatalf("O_TRUNC: %v", r)
	}
}

// TestRemoveOpenDir: a directory removed (rmdir, or renamed over) while a
// session has it open is kept, empty and with nlink 0, until its last close
// or its session's end: its attributes stay readable and it lists nothing,
// but nothing can be created in it.
func TestRemoveOpenDir(t *testing.T) {
	h := mustHarness(t, Options{})
	sustained := func() bool {
		t.Helper()
		var has bool
		if err := h.f.view(func(tx *txn) error { has = tx.hasPrefix(bucketSustained, nil); return nil }); err != nil {
			t.Fatal(err)
		}
		return has
	}
	mustGone := func(ino uint64) {
		t.Helper()
		mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: ino}), syscall.ENOENT)
		if sustained() {
			t.Fatal("an inode is still listed as sustained")
		}
	}
	mustKept := func(ino uint64, mode uint32) {
		t.Helper()
		a := h.mustAttr(ino)
		if a.Nlink != 0 || a.Mode != syscall.S_IFDIR|mode {
			t.Fatalf("removed open dir: nlink %d mode %o, want 0 and %o", a.Nlink, a.Mode, syscall.S_IFDIR|mode)
		}
		r := h.f.ReadDir(&jfspb.ReadDirRequest{Ino: ino})
		mustOK(t, r)
		if len(r.Entries) != 0 || !r.Eof {
			t.Fatalf("removed open dir lists %v (eof %v)", r.Entries, r.Eof)
		}
		mustErrno(t, h.do(cMkdir, &jfspb.MkdirRequest{Parent: ino, Name: []byte("x"), Mode: 0o755}), syscall.ENOENT)
		mustErrno(t, h.do(cCreate, &jfspb.CreateRequest{Parent: ino, Name: []byte("x"), Mode: 0o644, Fh: 9}), syscall.ENOENT)
		mustErrno(t, h.f.Lookup(&jfspb.LookupRequest{Parent: ino, Name: []byte("..")}), syscall.ENOENT)
		if !sustained() {
			t.Fatal("the removed open dir is not listed as sustained")
		}
	}

	// rmdir, then the last close frees it.
	d := h.mustMkdir(RootIno, "d")
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: d.Ino, Flags: syscall.O_RDONLY | syscall.O_DIRECTORY, Fh: 1}))
	mustOK(t, h.do(cRmdir, &jfspb.RmdirRequest{Parent: RootIno, Name: []byte("d")}))
	mustKept(d.Ino, 0o755)
	if n := h.mustAttr(RootIno).Nlink; n != 2 {
		t.Fatalf("root nlink %d after rmdir, want 2", n)
	}
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: d.Ino, Fh: 1}))
	mustGone(d.Ino)

	// A directory that is not open is freed at once.
	e := h.mustMkdir(RootIno, "e")
	mustOK(t, h.do(cRmdir, &jfspb.RmdirRequest{Parent: RootIno, Name: []byte("e")}))
	mustGone(e.Ino)

	// Renamed over (posixtest RenameOpenDir), then the session ends.
	a := h.mustMkdir(RootIno, "a")
	b := h.mustMkdir(RootIno, "b")
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: b.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE), Mode: 0o700}))
	mustOK(t, h.do(cOpen, &jfspb.OpenRequest{Ino: b.Ino, Flags: syscall.O_RDONLY | syscall.O_DIRECTORY, Fh: 2}))
	mustOK(t, h.do(cRename, &jfspb.RenameRequest{Parent: RootIno, Name: []byte("a"), NewParent: RootIno, NewName: []byte("b")}))
	if got := h.mustLookup(RootIno, "b").Ino; got != a.Ino {
		t.Fatalf("b is %d after the rename, want %d", got, a.Ino)
	}
	mustKept(b.Ino, 0o700)
	mustOK(t, h.mustApplyEntry(h.entry(cClose, &jfspb.CloseSessionRequest{}, h.sess, 0, 0)))
	mustGone(b.Ino)
}

// TestTmpfile: an O_TMPFILE file has no name and nlink 0, lives while open,
// and can be linked into place once unless it was made with O_EXCL.
func TestTmpfile(t *testing.T) {
	h := mustHarness(t, Options{})
	tmpfile := func(parent uint64, flags uint32, fh uint64) *jfspb.CreateResponse {
		t.Helper()
		return h.do(cCreate, &jfspb.CreateRequest{Parent: parent, Mode: 0o640, Umask: 0o022, Uid: 7, Gid: 8,
			Flags: syscall.O_RDWR | flags, Fh: fh, Tmpfile: true}).(*jfspb.CreateResponse)
	}
	link := func(ino uint64, name string) *jfspb.LinkResponse {
		t.Helper()
		return h.do(cLink, &jfspb.LinkRequest{Ino: ino, NewParent: RootIno, NewName: []byte(name)}).(*jfspb.LinkResponse)
	}
	rootBefore := h.mustAttr(RootIno)

	r := tmpfile(RootIno, 0, 1)
	mustOK(t, r)
	if a := r.Attr; a.Nlink != 0 || a.Mode != syscall.S_IFREG|0o640 || a.Uid != 7 || a.Gid != 8 || !r.Created {
		t.Fatalf("tmpfile attr %v created %v", a, r.Created)
	}
	ino := r.Attr.Ino
	if d := h.f.ReadDir(&jfspb.ReadDirRequest{Ino: RootIno}); len(d.Entries) != 0 {
		t.Fatalf("root lists %v", d.Entries)
	}
	if a := h.mustAttr(RootIno); a.MtimeNs != rootBefore.MtimeNs {
		t.Fatal("a tmpfile changed its directory's mtime")
	}
	h.mustWrite(ino, 0, []byte("temporary"))
	mustEqualBytes(t, "tmpfile data", h.mustRead(ino, 0, 100), []byte("temporary"))

	// Linked into place, it is an ordinary file.
	l := link(ino, "named")
	mustOK(t, l)
	if l.Attr.Nlink != 1 || h.mustLookup(RootIno, "named").Ino != ino {
		t.Fatalf("linked tmpfile: %v", l.Attr)
	}
	// Unlinked again while open, it cannot be linked again.
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("named")}))
	mustErrno(t, link(ino, "again"), syscall.ENOENT)
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: ino, Fh: 1}))
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: ino}), syscall.ENOENT)

	// With O_EXCL it never gets a name, and its last close frees it.
	x := tmpfile(RootIno, syscall.O_EXCL, 2)
	mustOK(t, x)
	mustErrno(t, link(x.Attr.Ino, "excl"), syscall.ENOENT)
	mustOK(t, h.do(cRelease, &jfspb.ReleaseRequest{Ino: x.Attr.Ino, Fh: 2}))
	mustErrno(t, h.f.GetAttr(&jfspb.GetAttrRequest{Ino: x.Attr.Ino}), syscall.ENOENT)

	// In a setgid directory it takes the directory's group; a file is no
	// directory; an unlinked plain file cannot be linked either.
	d := h.mustMkdir(RootIno, "shared")
	mustOK(t, h.do(cSetAttr, &jfspb.SetAttrRequest{Ino: d.Ino, Valid: uint32(jfspb.SetAttrMask_SET_ATTR_MODE | jfspb.SetAttrMask_SET_ATTR_GID), Mode: 0o2775, Gid: 50}))
	if g := tmpfile(d.Ino, 0, 3); g.Attr.GetGid() != 50 {
		t.Fatalf("tmpfile in a setgid dir has gid %d, want 50", g.Attr.GetGid())
	}
	f := h.mustCreate(RootIno, "f", true)
	mustErrno(t, tmpfile(f.Ino, 0, 4), syscall.ENOTDIR)
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("f")}))
	mustErrno(t, link(f.Ino, "f2"), syscall.ENOENT)
}
