package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestMountPermissionsOfOtherUsers runs shell commands as other users on a
// mount. The kernel checks them first (default_permissions); the cluster
// checks again with the credentials the mount sends, and must allow
// everything the kernel allowed: access through a supplementary group (which
// the mount reads from /proc), a touch and a write by a member of the
// file's group, the set-id bits such a write drops, set-gid directories and
// sticky ones.
func TestMountPermissionsOfOtherUsers(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to run commands as other users")
	}
	pc := startProcCluster(t, 3)
	m := startMount(t, pc, noCache...)
	for d := filepath.Dir(m.dir); d != "/" && d != os.TempDir(); d = filepath.Dir(d) {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	sh := func(uid, gid uint32, groups []uint32, script string) (string, error) {
		cmd := exec.Command("/bin/sh", "-ec", script)
		cmd.Dir = m.dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: uid, Gid: gid, Groups: groups}}
		out, err := cmd.CombinedOutput()
		return strings.TrimSpace(string(out)), err
	}
	mustSh := func(uid, gid uint32, groups []uint32, script string) string {
		t.Helper()
		out, err := sh(uid, gid, groups, script)
		if err != nil {
			t.Fatalf("as %d:%d %v: %s: %v\n%s", uid, gid, groups, script, err, out)
		}
		return out
	}
	mustFail := func(uid, gid uint32, script, want string) {
		t.Helper()
		out, err := sh(uid, gid, nil, script)
		if err == nil || !strings.Contains(out, want) {
			t.Fatalf("as %d:%d: %s: %v %q, want a failure saying %q", uid, gid, script, err, out, want)
		}
	}
	stat := func(name string) (mode, uid, gid uint32) {
		t.Helper()
		var st syscall.Stat_t
		if err := syscall.Lstat(m.path(name), &st); err != nil {
			t.Fatal(err)
		}
		return st.Mode, st.Uid, st.Gid
	}

	// A directory and files of group 1000, used by a member of the group
	// through a supplementary group.
	mustSh(0, 0, nil, `mkdir shared && chown 0:1000 shared && chmod 0770 shared
		echo root > shared/f && chown 0:1000 shared/f && chmod 0660 shared/f
		echo root > shared/s && chown 0:1000 shared/s && chmod 06770 shared/s`)
	member := []uint32{1000}
	if out := mustSh(1001, 1001, member, `echo member >> shared/f && touch shared/f shared/g && cat shared/f`); out != "root\nmember" {
		t.Fatalf("the member read %q", out)
	}
	if _, uid, gid := stat("shared/g"); uid != 1001 || gid != 1001 {
		t.Fatalf("shared/g made by 1001:1001 is owned by %d:%d", uid, gid)
	}
	// A write by someone other than the owner drops the set-id bits.
	mustSh(1001, 1001, member, `echo member >> shared/s`)
	if mode, _, _ := stat("shared/s"); mode != syscall.S_IFREG|0o770 {
		t.Fatalf("shared/s after a write by a member: mode %o, want 100770", mode)
	}
	mustFail(14777, 14777, `cat shared/f`, "Permission denied")

	// An open file acts with its opener's credentials, as a descriptor
	// does: a process that opened a 0600 file of root's as root writes and
	// locks it after dropping to another user.
	if _, err := exec.LookPath("setpriv"); err == nil {
		mustSh(0, 0, nil, `echo root > private && chmod 0600 private
			setpriv --reuid 14777 --regid 14777 --clear-groups sh -ec 'echo dropped >&3; flock -x 3' 3>>private`)
		if b, err := os.ReadFile(m.path("private")); err != nil || string(b) != "root\ndropped\n" {
			t.Fatalf("private after a write through root's descriptor by uid 14777: %q, %v", b, err)
		}
	} else {
		t.Log("no setpriv: the write after dropping privileges is not tried")
	}

	// A sticky directory.
	mustSh(0, 0, nil, `mkdir tmp && chmod 1777 tmp`)
	mustSh(1000, 1000, nil, `echo mine > tmp/a && chgrp 1000 tmp/a && chmod 4755 tmp/a`)
	mustFail(14777, 14777, `rm -f tmp/a`, "Operation not permitted")
	mustFail(14777, 14777, `mv tmp/a tmp/b`, "Operation not permitted")
	if mode, uid, _ := stat("tmp/a"); mode != syscall.S_IFREG|0o4755 || uid != 1000 {
		t.Fatalf("tmp/a: mode %o uid %d", mode, uid)
	}
	mustSh(1000, 1000, nil, `rm tmp/a`)

	// A set-gid directory passes its group on.
	mustSh(0, 0, nil, `mkdir sg && chown 0:1000 sg && chmod 2777 sg`)
	mustSh(14777, 14777, nil, `mkdir sg/d && touch sg/f`)
	if mode, uid, gid := stat("sg/d"); mode&syscall.S_ISGID == 0 || uid != 14777 || gid != 1000 {
		t.Fatalf("sg/d: mode %o owner %d:%d, want set-gid, 14777:1000", mode, uid, gid)
	}
	if _, uid, gid := stat("sg/f"); uid != 14777 || gid != 1000 {
		t.Fatalf("sg/f: owner %d:%d, want 14777:1000", uid, gid)
	}
}
