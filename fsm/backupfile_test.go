package fsm

import (
	"bytes"
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// mustBackup writes a backup of h's state, taken with term 7.
func mustBackup(t *testing.T, h *harness) []byte {
	t.Helper()
	snap, err := h.f.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Release()
	var buf bytes.Buffer
	hd, sum, err := snap.WriteBackup(&buf, 7)
	if err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	if hd.Index != h.f.AppliedIndex() || hd.Term != 7 || int(hd.Size) != len(b)-BackupHeaderLen-BackupTrailerLen ||
		sum != sha256.Sum256(b[:len(b)-BackupTrailerLen]) {
		t.Fatalf("header %+v, checksum %x for %d bytes", hd, sum, len(b))
	}
	return b
}

// TestBackupVerify: a whole backup verifies and opens; a truncated, longer,
// tampered or foreign one is refused with ErrBadBackup and a reason.
func TestBackupVerify(t *testing.T) {
	h := mustHarness(t, Options{})
	h.mustMkdir(RootIno, "d")
	h.mustCreate(RootIno, "f", false)
	good := mustBackup(t, h)
	dir := t.TempDir()
	hd, _, err := VerifyBackup(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatal(err)
	}
	if hd.Inodes != 3 {
		t.Fatalf("inodes %d, want 3 (root, d, f)", hd.Inodes)
	}
	path := filepath.Join(dir, "good.jfs")
	if err := os.WriteFile(path, good, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, _, err := OpenBackup(path, filepath.Join(dir, "good.state")); err != nil {
		t.Fatalf("OpenBackup: %v", err)
	}

	tampered := bytes.Clone(good)
	tampered[len(tampered)/2] ^= 1
	badMagic := bytes.Clone(good)
	badMagic[0] = 'X'
	garbage := append(bytes.Clone(good[:BackupHeaderLen]), make([]byte, len(good)-BackupHeaderLen-BackupTrailerLen)...)
	sum := sha256.Sum256(garbage)
	garbage = append(garbage, sum[:]...)
	for _, tc := range []struct {
		name, want string
		data       []byte
	}{
		{"empty", "truncated", nil},
		{"short header", "truncated", good[:30]},
		{"truncated", "truncated", good[:len(good)-1]},
		{"longer", "trailing bytes", append(bytes.Clone(good), 0)},
		{"tampered", "checksum mismatch", tampered},
		{"bad magic", "magic", badMagic},
		{"garbage state", "not a jfs state file", garbage},
	} {
		p := filepath.Join(dir, tc.name)
		if err := os.WriteFile(p, tc.data, 0o600); err != nil {
			t.Fatal(err)
		}
		_, _, err := OpenBackup(p, p+".state")
		if !errors.Is(err, ErrBadBackup) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want ErrBadBackup saying %q", tc.name, err, tc.want)
		}
		if _, serr := os.Stat(p + ".state"); serr == nil {
			t.Errorf("%s: the state file was left behind", tc.name)
		}
	}
}

// TestPrepareRestore: the prepared state has no session of the backup (its
// sustained inode is freed), the given member table, and an applied index
// one past the backup's. Restored into a state machine that had applied far
// more, the applied index is the prepared one, and later entries apply.
func TestPrepareRestore(t *testing.T) {
	h := mustHarness(t, Options{})
	mustOK(t, h.mustApplyEntry(h.entry(jfspb.CommandType_COMMAND_TYPE_SET_MEMBER,
		&jfspb.SetMemberRequest{Member: &jfspb.Member{Id: "other-cluster-node", ApiAddr: "10.9.9.9:1"}}, 0, 0, 0)))
	open := h.mustCreate(RootIno, "open-unlinked", true)
	mustOK(t, h.do(cUnlink, &jfspb.UnlinkRequest{Parent: RootIno, Name: []byte("open-unlinked")}))
	backup := mustBackup(t, h)
	dir := t.TempDir()
	path := filepath.Join(dir, "b.jfs")
	if err := os.WriteFile(path, backup, 0o600); err != nil {
		t.Fatal(err)
	}
	hd, _, err := OpenBackup(path, filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	members := []*jfspb.Member{{Id: "n1", Address: "127.0.0.1:1", ApiAddr: "127.0.0.1:2"}, {Id: "n2", Corrupt: "found different"}}
	applied, ended, err := PrepareRestore(filepath.Join(dir, "state"), members, t0)
	if err != nil {
		t.Fatal(err)
	}
	if applied != hd.Index+1 || ended != 1 {
		t.Fatalf("applied %d ended %d, want %d and 1", applied, ended, hd.Index+1)
	}

	// A replica far ahead of the backup takes the prepared state.
	g := mustOpen(t, filepath.Join(dir, "replica.db"), Options{})
	g2 := &harness{t: t, f: g, index: hd.Index + 1000, now: h.now}
	g2.mustRegister("ahead")
	state, err := os.Open(filepath.Join(dir, "state"))
	if err != nil {
		t.Fatal(err)
	}
	defer state.Close()
	if err := g.Restore(state); err != nil {
		t.Fatal(err)
	}
	if g.AppliedIndex() != applied {
		t.Fatalf("applied index after restore %d, want %d", g.AppliedIndex(), applied)
	}
	if s := g.Sessions(); len(s) != 0 {
		t.Fatalf("sessions after restore: %v", s)
	}
	if a := g.GetAttr(&jfspb.GetAttrRequest{Ino: open.Ino}); a.Errno == 0 {
		t.Fatalf("the backup session's open unlinked inode was not freed: %v", a)
	}
	got := g.Members()
	if len(got) != 2 || got[0].Id != "n1" || got[0].ApiAddr != "127.0.0.1:2" || got[1].Id != "n2" || got[1].Corrupt != "found different" {
		t.Fatalf("members after restore: %v", got)
	}
	// Raft restores under an index past both; the next entries apply.
	g2.index = hd.Index + 2000
	sid := g2.mustRegister("after")
	if g.Session(sid) == nil || g.AppliedIndex() != g2.index {
		t.Fatalf("an entry after the restore was not applied: applied %d, session %d", g.AppliedIndex(), sid)
	}
}
