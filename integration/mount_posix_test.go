package integration

import (
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/posixtest"
)

// posixSkips are the posixtest cases that cannot pass on jfs, and why.
var posixSkips = map[string]string{
	// The case takes a write lock and then a read lock through two
	// descriptors of the same process and expects EAGAIN. POSIX record
	// locks belong to the process, so the second request converts the
	// first: Linux grants it on ext4 and tmpfs as jfs does (go-fuse skips
	// this case in its own run for the same reason).
	"FcntlFlockLocksFile": "expects a POSIX lock to conflict with one of the same process, which POSIX and Linux do not do",
	// One goroutine opens a name while another renames a file and a
	// symlink over it in a tight loop. The kernel looks the name up, then
	// opens the inode it found; if the rename freed that inode in between
	// (jfs frees an unlinked inode that no session has open, even while a
	// kernel still holds a lookup of it: fuse/DESIGN.md), the open is
	// answered ESTALE, the kernel walks the path once more, and a second
	// lost race returns ESTALE to the caller. It passes on an idle machine
	// and fails now and then under load.
	"OpenSymlinkRace": "an open racing with renames over its name can fail with ESTALE after the kernel's one retry (known limit, fuse/DESIGN.md)",
}

// TestMountPosix runs go-fuse's POSIX suite on a jfs mount of a three-node
// cluster, each case in a fresh directory.
func TestMountPosix(t *testing.T) {
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	names := make([]string, 0, len(posixtest.All))
	for name := range posixtest.All {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			if reason, ok := posixSkips[name]; ok {
				t.Skip(reason)
			}
			dir := filepath.Join(m.dir, name)
			if err := os.Mkdir(dir, 0o755); err != nil {
				t.Fatal(err)
			}
			posixtest.All[name](t, dir)
		})
	}
}
