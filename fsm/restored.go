package fsm

import (
	"errors"
	"fmt"
	"os"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// applyRestored readies a backup's state for a restore (PrepareRestore). The
// backup holds the sessions of the cluster it was taken on, at the
// time it was taken: they all end here, as by expiry (their locks are
// released, their opens end, their sustained inodes are freed), so every
// mount registers anew and its old handles fail. The member table becomes
// req.Members (this cluster's, with their corrupt marks as they were before
// the restore): a backup from another cluster knows other nodes. EINVAL for
// a member without an id.
func (t *txn) applyRestored(req *jfspb.RestoredRequest) *jfspb.RestoredResponse {
	for _, m := range req.GetMembers() {
		if m.GetId() == "" {
			return &jfspb.RestoredResponse{Errno: eno(syscall.EINVAL)}
		}
	}
	var sessions []*jfspb.Session
	t.scan(bucketSession, nil, func(_, v []byte) bool {
		s := new(jfspb.Session)
		if err := proto.Unmarshal(v, s); err != nil {
			t.fail(err)
			return false
		}
		sessions = append(sessions, s)
		return true
	})
	if t.err != nil {
		return nil
	}
	for _, s := range sessions {
		t.endSession(s)
	}
	t.deletePrefix(bucketMember, nil)
	for _, m := range req.GetMembers() {
		rec := &jfspb.Member{Id: m.Id, Address: m.Address, ApiAddr: m.ApiAddr, Corrupt: m.Corrupt}
		b, err := proto.Marshal(rec)
		t.fail(err)
		t.put(bucketMember, []byte(m.Id), b)
	}
	return &jfspb.RestoredResponse{SessionsEnded: uint32(len(sessions))}
}

// Members returns every recorded member, by id. It returns nil if the state
// cannot be read.
func (f *FSM) Members() []*jfspb.Member {
	var out []*jfspb.Member
	err := f.view(func(t *txn) error {
		out = nil
		var err error
		t.scan(bucketMember, nil, func(_, v []byte) bool {
			m := new(jfspb.Member)
			if err = proto.Unmarshal(v, m); err != nil {
				return false
			}
			out = append(out, m)
			return true
		})
		return err
	})
	if err != nil {
		return nil
	}
	return out
}

// PrepareRestore readies the state file at path, a verified backup's state
// (OpenBackup), to become the state of a running cluster: it applies
// Restored (members) to it as the entry after its applied index, stamped
// nowNs, so that the state that every node installs already has no session
// of the backup and this cluster's member table. It returns the state's new
// applied index and how many sessions ended. The file is changed in place;
// nothing else is.
func PrepareRestore(path string, members []*jfspb.Member, nowNs int64) (applied uint64, ended uint32, err error) {
	// The file was written and synced whole by OpenBackup: mark it clean
	// so that Open trusts it, and sync the one commit made here.
	if err := (&FSM{path: path}).markClean(); err != nil {
		return 0, 0, fmt.Errorf("fsm: prepare restore: %w", err)
	}
	defer os.Remove(CleanMarker(path))
	f, err := Open(path, Options{SyncCommits: true, CompactMin: -1})
	if err != nil {
		return 0, 0, fmt.Errorf("fsm: prepare restore: %w", err)
	}
	defer func() { err = errors.Join(err, f.Close()) }()
	body, err := proto.Marshal(&jfspb.RestoredRequest{Members: members})
	if err != nil {
		return 0, 0, err
	}
	data, err := Seal(&jfspb.LogEntry{Type: uint32(jfspb.CommandType_COMMAND_TYPE_RESTORED), TimeNs: nowNs, Body: body})
	if err != nil {
		return 0, 0, err
	}
	index := f.AppliedIndex() + 1
	results, err := f.ApplyBatch([]Entry{{Index: index, Data: data}})
	if err != nil {
		return 0, 0, fmt.Errorf("fsm: prepare restore: %w", err)
	}
	r, ok := results[0].Resp.(*jfspb.RestoredResponse)
	if !ok || r.Errno != 0 {
		return 0, 0, fmt.Errorf("fsm: prepare restore: answered %v", results[0].Resp)
	}
	return index, r.SessionsEnded, nil
}
