package fsm

import (
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// The member table maps a node id to its raft and API addresses. Raft's own
// configuration says who votes; this table adds what raft does not carry:
// where each node serves clients, so that followers can send clients to the
// leader.

// applySetMember records or forgets a member. Only id, address and api_addr
// are taken from the request; a corrupt mark (applyMarkCorrupt) is kept.
// EINVAL without an id.
func (t *txn) applySetMember(req *jfspb.SetMemberRequest) *jfspb.SetMemberResponse {
	m := req.GetMember()
	if m.GetId() == "" {
		return &jfspb.SetMemberResponse{Errno: eno(syscall.EINVAL)}
	}
	if req.Remove {
		t.del(bucketMember, []byte(m.Id))
		return &jfspb.SetMemberResponse{}
	}
	rec := &jfspb.Member{Id: m.Id, Address: m.Address, ApiAddr: m.ApiAddr}
	// A corrupt mark outlives address updates: only removal clears it.
	if v := t.b(bucketMember).Get([]byte(m.Id)); v != nil {
		old := &jfspb.Member{}
		t.fail(proto.Unmarshal(v, old))
		rec.Corrupt = old.Corrupt
	}
	b, err := proto.Marshal(rec)
	t.fail(err)
	t.put(bucketMember, []byte(m.Id), b)
	return &jfspb.SetMemberResponse{}
}

// Member returns the recorded addresses of node id, or nil.
func (f *FSM) Member(id string) *jfspb.Member {
	var m *jfspb.Member
	f.view(func(t *txn) error {
		v := t.b(bucketMember).Get([]byte(id))
		if v == nil {
			return nil
		}
		rec := &jfspb.Member{}
		if err := proto.Unmarshal(v, rec); err != nil {
			return err
		}
		m = rec
		return nil
	})
	return m
}
