package fsm

import (
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// applyRestored follows the restore of a backup (cluster/backup.go). The
// restored state holds the sessions of the cluster it was taken on, at the
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
