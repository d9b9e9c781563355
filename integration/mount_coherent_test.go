package integration

import (
	"bytes"
	"net/http"
	"os"
	"regexp"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// mountMetric reads one sample of a mount's metrics ("name" or
// "name{labels}"); -1 when it is not there.
func mountMetric(t testing.TB, m *jfsMount, sample string) float64 {
	t.Helper()
	resp, err := http.Get("http://" + m.metricsAddr + "/metrics")
	if err != nil {
		t.Fatalf("scrape the mount: %v", err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	re := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(sample) + ` (\S+)$`)
	mm := re.FindStringSubmatch(b.String())
	if mm == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(mm[1], 64)
	return v
}

// mustCoherentReady waits until m's cache stream is reset and
// acknowledged: from then on its lookups and getattrs are granted.
func mustCoherentReady(t *testing.T, m *jfsMount) {
	t.Helper()
	if !waitFor(60*time.Second, func() bool { return mountMetric(t, m, "jfs_cache_ready") == 1 }) {
		t.Fatalf("the mount's cache stream is not ready after 60s:\n%s", m.log())
	}
}

// sentReads is how many getattr and lookup requests m sent to the cluster.
func sentReads(t *testing.T, m *jfsMount) float64 {
	t.Helper()
	return mountMetric(t, m, `jfs_meta_ops_total{method="getattr"}`) + mountMetric(t, m, `jfs_meta_ops_total{method="lookup"}`)
}

func mustStatInfo(t *testing.T, path string) os.FileInfo {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatalf("stat %s: %v", path, err)
	}
	return fi
}

// TestMountCoherentCaches: two mounts with coherent caches. Mount b caches
// a file's attributes and name (its repeated stats send nothing to the
// cluster); right after a change on mount a returns, b's stat sees it, for
// every kind of change.
func TestMountCoherentCaches(t *testing.T) {
	pc := startProcCluster(t, 3)
	a := startMount(t, pc, "--cache-mode", "coherent")
	b := startMount(t, pc, "--cache-mode", "coherent")
	mustCoherentReady(t, a)
	mustCoherentReady(t, b)
	if err := os.Mkdir(a.path("d"), 0o755); err != nil {
		t.Fatal(err)
	}
	mustWriteFile(t, a.path("d/f"), []byte("x"))

	// cached stats b's files until b serves them from the kernel: a round
	// of stats sends nothing. (A change of a's still on its way, such as
	// a close sent after the call returned, may take a grant back once.)
	cached := func(names ...string) {
		t.Helper()
		ok := waitFor(30*time.Second, func() bool {
			before := sentReads(t, b)
			for _, n := range names {
				mustStatInfo(t, b.path(n))
			}
			return sentReads(t, b) == before
		})
		if !ok {
			t.Fatalf("b's stats of %v still ask the cluster after 30s", names)
		}
	}

	t.Run("repeated stats send nothing", func(t *testing.T) {
		cached("d", "d/f")
		before := sentReads(t, b)
		for i := 0; i < 200; i++ {
			mustStatInfo(t, b.path("d/f"))
		}
		if after := sentReads(t, b); after != before {
			t.Fatalf("200 stats of an unchanged file sent %v reads", after-before)
		}
		if mountMetric(t, b, "jfs_cache_grants_total") <= 0 {
			t.Fatal("no grant counted")
		}
	})

	t.Run("chmod", func(t *testing.T) {
		cached("d/f")
		if err := os.Chmod(a.path("d/f"), 0o600); err != nil {
			t.Fatal(err)
		}
		if m := mustStatInfo(t, b.path("d/f")).Mode().Perm(); m != 0o600 {
			t.Fatalf("b sees mode %o after a's chmod returned, want 600", m)
		}
	})

	t.Run("write and close", func(t *testing.T) {
		cached("d/f")
		mustWriteFile(t, a.path("d/f"), []byte("hello, world"))
		if sz := mustStatInfo(t, b.path("d/f")).Size(); sz != 12 {
			t.Fatalf("b sees size %d after a's write and close, want 12", sz)
		}
	})

	t.Run("rename", func(t *testing.T) {
		cached("d", "d/f")
		if err := os.Rename(a.path("d/f"), a.path("d/g")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(b.path("d/f")); !isNotExist(err) {
			t.Fatalf("b still sees d/f after a renamed it: %v", err)
		}
		if sz := mustStatInfo(t, b.path("d/g")).Size(); sz != 12 {
			t.Fatalf("b's d/g: size %d", sz)
		}
	})

	t.Run("unlink", func(t *testing.T) {
		cached("d", "d/g")
		dir := mustStatInfo(t, b.path("d"))
		if err := os.Remove(a.path("d/g")); err != nil {
			t.Fatal(err)
		}
		if _, err := os.Stat(b.path("d/g")); !isNotExist(err) {
			t.Fatalf("b still sees d/g after a removed it: %v", err)
		}
		if now := mustStatInfo(t, b.path("d")); now.ModTime().Equal(dir.ModTime()) {
			t.Fatalf("b sees d's old mtime %v after an unlink in it", dir.ModTime())
		}
	})

	t.Run("create", func(t *testing.T) {
		cached("d")
		dir := mustStatInfo(t, b.path("d"))
		if err := os.Mkdir(a.path("d/sub"), 0o755); err != nil {
			t.Fatal(err)
		}
		now := mustStatInfo(t, b.path("d"))
		if now.ModTime().Equal(dir.ModTime()) {
			t.Fatalf("b sees d's old mtime after a created d/sub")
		}
		if mustStatInfo(t, b.path("d/sub")).IsDir() != true {
			t.Fatal("d/sub is not a directory on b")
		}
		mustWriteFile(t, a.path("d/new"), []byte("n"))
		if sz := mustStatInfo(t, b.path("d/new")).Size(); sz != 1 {
			t.Fatalf("b's d/new: size %d", sz)
		}
	})

	if mountMetric(t, b, "jfs_cache_events_total") < 2 {
		t.Fatal("b handled no invalidation")
	}
}

// TestMountCoherentPages: in coherent mode an open of a file that nothing
// changed since this mount's last open keeps the kernel's pages (no read
// reaches the mount), and an open after another mount changed the file,
// even to the same size, reads the new data (close-to-open holds).
func TestMountCoherentPages(t *testing.T) {
	pc := startProcCluster(t, 3)
	a, b := startMount(t, pc, "--cache-mode", "coherent"), startMount(t, pc, "--cache-mode", "coherent")
	mustCoherentReady(t, a)
	mustCoherentReady(t, b)
	mustWriteFile(t, a.path("f"), []byte("first version"))
	reads := func() float64 { return mountMetric(t, b, `jfs_fuse_ops_total{method="Read"}`) }
	if got := mustReadPath(t, b.path("f")); string(got) != "first version" {
		t.Fatalf("b reads %q", got)
	}
	before, kept := reads(), mountMetric(t, b, "jfs_cache_kept_pages_total")
	for range 3 {
		if got := mustReadPath(t, b.path("f")); string(got) != "first version" {
			t.Fatalf("b reads %q again", got)
		}
	}
	if r := reads(); r != before {
		t.Fatalf("reading an unchanged file again sent %v reads to the mount, want 0 (pages kept)", r-before)
	}
	if k := mountMetric(t, b, "jfs_cache_kept_pages_total"); k < kept+3 {
		t.Fatalf("kept pages at %v opens of 3", k-kept)
	}
	// Same size, other bytes: the version still moves (ctime).
	mustWriteFile(t, a.path("f"), []byte("other version"))
	if got := mustReadPath(t, b.path("f")); string(got) != "other version" {
		t.Fatalf("after a rewrote f and closed it, b reads %q", got)
	}
	mustWriteFile(t, a.path("f"), []byte("a longer third version"))
	if got := mustReadPath(t, b.path("f")); string(got) != "a longer third version" {
		t.Fatalf("after a grew f, b reads %q", got)
	}
	// Same size and mtime put back: the kernel's own check (size and
	// mtime, FUSE_AUTO_INVAL_DATA) cannot see this change; ctime does.
	var st syscall.Stat_t
	if err := syscall.Stat(a.path("f"), &st); err != nil {
		t.Fatal(err)
	}
	mtime := time.Unix(st.Mtim.Unix())
	mustWriteFile(t, a.path("f"), []byte("A LONGER THIRD VERSION"))
	if err := os.Chtimes(a.path("f"), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if got := mustReadPath(t, b.path("f")); string(got) != "A LONGER THIRD VERSION" {
		t.Fatalf("after a rewrote f with its size and mtime kept, b reads %q", got)
	}
	// b's own write, then a's: b's next open must not keep pages of
	// either older state.
	mustWriteFile(t, b.path("f"), []byte("b wrote this"))
	mustWriteFile(t, a.path("f"), []byte("a wrote that"))
	if got := mustReadPath(t, b.path("f")); string(got) != "a wrote that" {
		t.Fatalf("after b's then a's write, b reads %q", got)
	}
}
