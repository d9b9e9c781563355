package fsm

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// A state file closed cleanly is trusted at the next Open; while open it
// has no clean marker.
func TestCleanCloseIsTrusted(t *testing.T) {
	h := mustHarness(t, Options{})
	a := h.mustCreate(RootIno, "kept", false)
	if _, err := os.Stat(CleanMarker(h.path)); !os.IsNotExist(err) {
		t.Fatalf("clean marker while open: %v", err)
	}
	applied := h.f.AppliedIndex()
	h.mustReopen()
	if why := h.f.Discarded(); why != "" {
		t.Fatalf("a cleanly closed file was discarded: %s", why)
	}
	if h.f.AppliedIndex() != applied || h.mustLookup(RootIno, "kept").Ino != a.Ino {
		t.Fatalf("state lost over a clean close: applied %d, want %d", h.f.AppliedIndex(), applied)
	}
	if _, err := os.Stat(CleanMarker(h.path)); !os.IsNotExist(err) {
		t.Fatalf("clean marker left in place after Open: %v", err)
	}
}

// A state file left without a clean marker (the process died, or the
// machine) is discarded, whatever it holds, even when it is torn: the state
// starts empty at index 0, to be rebuilt from a snapshot and the log.
func TestUncleanFileIsDiscarded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		damage func([]byte) []byte
	}{
		{"whole", func(b []byte) []byte { return b }},
		{"torn", func(b []byte) []byte { return b[:len(b)-100] }},
		{"garbled", func(b []byte) []byte {
			for i := 0; i < len(b); i += 97 {
				b[i] ^= 0x5a
			}
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := mustHarness(t, Options{})
			h.mustCreate(RootIno, "lost", false)
			// A copy of the open file is what a crash leaves: no marker.
			b, err := os.ReadFile(h.path)
			if err != nil {
				t.Fatal(err)
			}
			path := h.path + ".crashed"
			if err := os.WriteFile(path, tc.damage(b), 0o600); err != nil {
				t.Fatal(err)
			}
			f, err := Open(path, Options{})
			if err != nil {
				t.Fatalf("Open of an unclean file: %v", err)
			}
			defer f.Close()
			if f.Discarded() == "" || f.AppliedIndex() != 0 {
				t.Fatalf("unclean file kept: discarded %q, applied %d", f.Discarded(), f.AppliedIndex())
			}
			if r := f.Lookup(&jfspb.LookupRequest{Parent: RootIno, Name: []byte("lost")}); r.Errno == 0 {
				t.Fatal("the discarded state still answers")
			}
		})
	}
}

// With SyncCommits the marker stays while the file is open: a crash leaves
// a file that is trusted.
func TestSyncCommitsKeepsMarker(t *testing.T) {
	h := mustHarness(t, Options{SyncCommits: true})
	h.mustCreate(RootIno, "kept", false)
	if _, err := os.Stat(CleanMarker(h.path)); err != nil {
		t.Fatalf("no clean marker while open with SyncCommits: %v", err)
	}
}

// A state mostly made of free pages is compacted, before a snapshot
// (CompactIfWorth) and at Open, and keeps every key: the digest does not
// change.
func TestCompaction(t *testing.T) {
	h := mustHarness(t, Options{CompactMin: 1 << 20})
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	var inos []uint64
	for i := range 8 {
		a := h.mustCreate(RootIno, fmt.Sprintf("big-%d", i), false)
		h.mustWrite(a.Ino, 0, data)
		inos = append(inos, a.Ino)
	}
	keep := h.mustCreate(RootIno, "keep", false)
	h.mustWrite(keep.Ino, 0, []byte("still here"))
	if ok, err := h.f.CompactIfWorth(); err != nil || ok {
		t.Fatalf("CompactIfWorth of a full state: %v, %v; want no compaction", ok, err)
	}
	for i := range inos {
		mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte(fmt.Sprintf("big-%d", i))}))
	}
	before := fileSize(t, h.path)
	_, sum, err := h.f.Digest()
	if err != nil {
		t.Fatal(err)
	}
	ok, err := h.f.CompactIfWorth()
	if err != nil || !ok {
		t.Fatalf("CompactIfWorth after deleting 8 MiB of %d bytes: %v, %v", before, ok, err)
	}
	after := fileSize(t, h.path)
	if after*4 > before {
		t.Fatalf("compacted from %d to %d bytes", before, after)
	}
	_, sum2, err := h.f.Digest()
	if err != nil || sum2 != sum {
		t.Fatalf("digest changed by compaction: %v", err)
	}
	mustEqualBytes(t, "keep", h.mustRead(keep.Ino, 0, 100), []byte("still here"))
	h.mustWrite(keep.Ino, 0, data) // apply goes on
	t.Logf("compacted %d -> %d bytes", before, after)

	// At Open: grow and free again, close, reopen.
	a := h.mustCreate(RootIno, "again", false)
	for off := int64(0); off < 8<<20; off += int64(len(data)) {
		h.mustWrite(a.Ino, off, data)
	}
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("again")}))
	_, sum, _ = h.f.Digest()
	before = fileSize(t, h.path)
	h.mustReopen()
	after = fileSize(t, h.path)
	if after*2 > before {
		t.Fatalf("Open compacted from %d to %d bytes", before, after)
	}
	if _, sum2, _ = h.f.Digest(); sum2 != sum {
		t.Fatal("digest changed by compaction at Open")
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// Reads go on beside a compaction before a snapshot, on the leader: one
// that comes while the old file is closed and the compacted one not yet
// open waits for it. Before, it found no file and answered EIO, and the
// leader kept that getattr or lookup answer for later reads while no entry
// was applied (cluster/reads.go).
func TestCompactionReadsWait(t *testing.T) {
	h := mustHarness(t, Options{CompactMin: 1 << 20})
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	keep := h.mustCreate(RootIno, "keep", false)
	for i := range 4 {
		a := h.mustCreate(RootIno, fmt.Sprintf("big-%d", i), false)
		h.mustWrite(a.Ino, 0, data)
		mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte(fmt.Sprintf("big-%d", i))}))
	}
	got := make(chan *jfspb.GetAttrResponse, 1)
	hooked := false
	old := compactHook
	compactHook = func() {
		hooked = true
		// A read that started now could not see a state file.
		if h.f.dbMu.TryRLock() {
			missing := h.f.db == nil
			h.f.dbMu.RUnlock()
			if missing {
				t.Error("during a compaction a read may run while there is no state file")
			}
		}
		go func() { got <- h.f.GetAttr(&jfspb.GetAttrRequest{Ino: keep.Ino}) }()
	}
	t.Cleanup(func() { compactHook = old })
	if ok, err := h.f.CompactIfWorth(); err != nil || !ok {
		t.Fatalf("CompactIfWorth: %v, %v; want a compaction", ok, err)
	}
	if !hooked {
		t.Fatal("compactHook did not run")
	}
	if r := <-got; r.Errno != 0 || r.Attr.GetIno() != keep.Ino {
		t.Fatalf("getattr during the compaction: errno %d, attr %v", r.Errno, r.Attr)
	}
}

// A compaction does not wait for the snapshots open on the old file (a
// backup streaming to a slow client held apply and reads until it ended),
// and the snapshot goes on reading the state it was taken from.
func TestCompactionWithSnapshotOpen(t *testing.T) {
	h := mustHarness(t, Options{CompactMin: 1 << 20})
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	keep := h.mustCreate(RootIno, "keep", false)
	h.mustWrite(keep.Ino, 0, []byte("kept"))
	for i := range 4 {
		a := h.mustCreate(RootIno, fmt.Sprintf("big-%d", i), false)
		h.mustWrite(a.Ino, 0, data)
		mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte(fmt.Sprintf("big-%d", i))}))
	}
	open, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer open.Release()
	type result struct {
		ok  bool
		err error
	}
	done := make(chan result, 1)
	go func() { ok, err := h.f.CompactIfWorth(); done <- result{ok, err} }()
	select {
	case r := <-done:
		if r.err != nil || !r.ok {
			t.Fatalf("CompactIfWorth: %v, %v; want a compaction", r.ok, r.err)
		}
	case <-time.After(30 * time.Second):
		open.Release() // lets the old code's compaction finish
		<-done
		t.Fatal("CompactIfWorth waited for a snapshot of the old file to be released")
	}
	var old bytes.Buffer
	if _, err := open.WriteTo(&old); err != nil {
		t.Fatalf("the open snapshot after the compaction: %v", err)
	}
	open.Release()
	mustEqualBytes(t, "keep", h.mustRead(keep.Ino, 0, 100), []byte("kept"))
	h.mustWrite(keep.Ino, 0, data) // apply goes on
}
