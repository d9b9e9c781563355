package cluster

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/hashicorp/raft"
	raftboltdb "github.com/hashicorp/raft-boltdb/v2"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// TestCheckLogUpgradeRule: the start-up check of raft.db accepts commands
// without a checksum (written before entries were sealed) up to the first
// one with a checksum; one without after it is refused as a version mix,
// not as damage (no advice to wipe the node); a wrong checksum is damage.
func TestCheckLogUpgradeRule(t *testing.T) {
	entry := func(t *testing.T, seq uint64, seal bool) []byte {
		t.Helper()
		e := &jfspb.LogEntry{Type: uint32(jfspb.CommandType_COMMAND_TYPE_MKDIR), Session: 1, Seq: seq, Body: []byte{0x10, 0x01}}
		var b []byte
		var err error
		if seal {
			b, err = fsm.Seal(e)
		} else {
			b, err = proto.Marshal(e)
		}
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	const (
		unsealed = iota
		sealed
		wrong
	)
	cases := []struct {
		name    string
		entries []int
		want    string // "" for no error
		damaged bool
	}{
		{"old entries only", []int{unsealed, unsealed}, "", false},
		{"old entries, then sealed ones", []int{unsealed, unsealed, sealed, sealed}, "", false},
		{"an old entry after a sealed one", []int{unsealed, sealed, unsealed}, "log entry 4 has no checksum although entry 3", false},
		{"a wrong checksum before sealing", []int{unsealed, wrong}, "log entry 3 fails its checksum", true},
		{"a wrong checksum after sealing", []int{sealed, wrong}, "log entry 3 fails its checksum", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			bs, err := raftboltdb.New(raftboltdb.Options{Path: filepath.Join(t.TempDir(), "raft.db")})
			if err != nil {
				t.Fatal(err)
			}
			defer bs.Close()
			// Index 1 is a configuration entry, as a bootstrapped log has.
			logs := []*raft.Log{{Index: 1, Term: 1, Type: raft.LogConfiguration, Data: []byte{1}}}
			for i, kind := range c.entries {
				data := entry(t, uint64(i+1), kind != unsealed)
				if kind == wrong {
					data[len(data)-1] ^= 0xff
				}
				logs = append(logs, &raft.Log{Index: uint64(i + 2), Term: 1, Type: raft.LogCommand, Data: data})
			}
			if err := bs.StoreLogs(logs); err != nil {
				t.Fatal(err)
			}
			err = checkLog(bs, 0)
			switch {
			case c.want == "" && err != nil:
				t.Fatalf("checkLog: %v", err)
			case c.want == "":
				return
			case err == nil || !strings.Contains(err.Error(), c.want):
				t.Fatalf("checkLog: got %v, want an error saying %q", err, c.want)
			case errors.Is(err, fsm.ErrDamaged) != c.damaged:
				t.Fatalf("checkLog: %v: damaged %v, want %v", err, errors.Is(err, fsm.ErrDamaged), c.damaged)
			}
		})
	}
}
