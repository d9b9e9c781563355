package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Sessions and exactly-once execution.
//
// A session's id is the log index of the entry that registered it. Every
// command other than Register, CloseSession and ExpireSession names a live
// session in its envelope, else its answer is ESTALE and it changes nothing.
//
// For a command with seq > 0, the response is stored under (session, seq).
// A repeat of a stored (session, seq) gets the stored response without being
// applied again. A (session, seq) at or below the highest acked seen from
// the session whose response is gone gets EALREADY. Each command of the
// session deletes the stored responses at or below its acked, and replaces
// those of the seqs it acknowledges one by one (acked_seqs: the client
// received them while an older request, such as a blocked F_SETLKW, was
// still in flight; it never retries them) by a 4-byte marker, so that a
// late duplicate of such a request still gets EALREADY rather than being
// applied again; the markers go with the responses once acked passes them.
// A marker only ever replaces a stored response, so there are never more
// markers than responses were stored above acked. seq 0 opts out of all
// this.
//
// A SetLk or Flock answered EAGAIN changed nothing (or, for a flock
// conversion, only dropped the old lock, as Linux does), and its response is
// not stored: the leader re-proposes a blocking lock request with the same
// (session, seq) when the lock may have become free, and it must be
// evaluated again.

var marshalOpts = proto.MarshalOptions{Deterministic: true}

func (t *txn) sessionRecord(sid uint64) *jfspb.Session {
	if sid == 0 {
		return nil
	}
	v := t.b(bucketSession).Get(u64(sid))
	if v == nil {
		return nil
	}
	s := new(jfspb.Session)
	if err := proto.Unmarshal(v, s); err != nil {
		t.fail(fmt.Errorf("%w: %v", errCorruptRecord("session", sid), err))
		return nil
	}
	return s
}

func (t *txn) putSession(s *jfspb.Session) {
	v, err := marshalOpts.Marshal(s)
	if err != nil {
		t.fail(err)
		return
	}
	t.put(bucketSession, u64(s.GetId()), v)
}

func errnoOf(m jfspb.Errno) syscall.Errno { return syscall.Errno(m.GetErrno()) }

// applyOnce applies a session command with exactly-once bookkeeping.
func (t *txn) applyOnce(c command, typ jfspb.CommandType, env *jfspb.LogEntry, req proto.Message) response {
	sid, seq := env.GetSession(), env.GetSeq()
	s := t.sessionRecord(sid)
	if s == nil {
		if t.err != nil {
			return nil
		}
		return c.errnoResponse(syscall.ESTALE)
	}
	var resp response
	if seq > 0 {
		if v := t.b(bucketResult).Get(key2(sid, seq)); v != nil && !isAckedMarker(v) {
			resp = t.storedResult(sid, seq, v)
			if resp == nil {
				return nil
			}
		} else if v != nil || seq <= s.GetAcked() {
			resp = c.errnoResponse(syscall.EALREADY)
		}
	}
	if resp == nil {
		if resp = c.apply(t, req); resp == nil {
			return nil // storage failure, in t.err
		}
		if seq > 0 && !(c.reevaluateEAGAIN && errnoOf(resp) == syscall.EAGAIN) {
			v, err := marshalOpts.Marshal(resp)
			if err != nil {
				t.fail(err)
				return nil
			}
			k := binary.BigEndian.AppendUint32(nil, uint32(typ))
			t.put(bucketResult, key2(sid, seq), append(k, v...))
		}
	}
	if acked := env.GetAcked(); acked > s.GetAcked() {
		t.forgetResults(sid, acked)
		s.Acked = acked
		t.putSession(s)
	}
	for _, a := range env.GetAckedSeqs() {
		if a > s.GetAcked() && a != seq {
			k := key2(sid, a)
			if v := t.b(bucketResult).Get(k); v != nil && !isAckedMarker(v) {
				t.put(bucketResult, k, ackedMarker)
			}
		}
	}
	return resp
}

// ackedMarker replaces the stored response of a seq above acked that the
// client acknowledged one by one: a late repeat of it answers EALREADY, as
// one at or below acked does. It is deleted with the responses once acked
// passes it. No command type is 0xffffffff, so it is never a response.
var ackedMarker = []byte{0xff, 0xff, 0xff, 0xff}

func isAckedMarker(v []byte) bool { return bytes.Equal(v, ackedMarker) }

// StoredResults counts the responses kept for retries of session sid (not
// the markers of results acknowledged one by one).
func (f *FSM) StoredResults(sid uint64) uint64 {
	var n uint64
	f.view(func(t *txn) error {
		n = 0
		t.scan(bucketResult, u64(sid), func(_, v []byte) bool {
			if !isAckedMarker(v) {
				n++
			}
			return true
		})
		return nil
	})
	return n
}

// storedResult decodes a stored response: command type, then the message.
func (t *txn) storedResult(sid, seq uint64, v []byte) response {
	if len(v) >= 4 {
		if c, ok := t.f.commands[jfspb.CommandType(binary.BigEndian.Uint32(v))]; ok {
			m := c.newResp()
			if err := proto.Unmarshal(v[4:], m); err == nil {
				return m
			}
		}
	}
	t.fail(fmt.Errorf("fsm: corrupt stored result of session %d seq %d", sid, seq))
	return nil
}

// forgetResults deletes the stored responses of sid with seq <= acked.
func (t *txn) forgetResults(sid, acked uint64) {
	var keys [][]byte
	t.scan(bucketResult, u64(sid), func(k, _ []byte) bool {
		if binary.BigEndian.Uint64(k[8:]) > acked {
			return false
		}
		keys = append(keys, k)
		return true
	})
	for _, k := range keys {
		t.del(bucketResult, k)
	}
}

// applyRegister opens a session whose id is this entry's index, or returns
// the live session already registered under the same client id by the same
// identity. The session records the identity that registered it (set by
// the node from the caller's certificate), so that no other may use it.
func (t *txn) applyRegister(req *jfspb.RegisterRequest) *jfspb.RegisterResponse {
	cid := req.GetClientId()
	if cid != "" {
		if v := t.b(bucketClient).Get([]byte(cid)); len(v) == 8 {
			sid := binary.BigEndian.Uint64(v)
			if s := t.sessionRecord(sid); s != nil && s.GetIdentity() == req.GetIdentity() {
				return &jfspb.RegisterResponse{Session: sid}
			}
		}
	}
	s := &jfspb.Session{
		Id: t.index, Host: req.GetHost(), MountPoint: req.GetMountPoint(),
		Pid: req.GetPid(), Version: req.GetVersion(), ClientId: cid, CreatedNs: t.now,
		Identity: req.GetIdentity(), Coherent: req.GetCoherent(),
	}
	t.putSession(s)
	if cid != "" {
		t.put(bucketClient, []byte(cid), u64(s.Id))
	}
	return &jfspb.RegisterResponse{Session: s.Id}
}

// applyCloseSession ends the session in the envelope; a session that is
// already gone is success.
func (t *txn) applyCloseSession(*jfspb.CloseSessionRequest) *jfspb.CloseSessionResponse {
	if s := t.sessionRecord(t.session); s != nil {
		t.endSession(s)
	}
	return &jfspb.CloseSessionResponse{}
}

// applyExpireSession ends req.SessionId: ENOENT if there is no such session.
func (t *txn) applyExpireSession(req *jfspb.ExpireSessionRequest) *jfspb.ExpireSessionResponse {
	s := t.sessionRecord(req.GetSessionId())
	if s == nil {
		return &jfspb.ExpireSessionResponse{Errno: eno(syscall.ENOENT)}
	}
	if until := req.GetDelegFenceUntilNs(); until > 0 {
		t.fenceDelegs(s.GetId(), until)
	}
	t.endSession(s)
	return &jfspb.ExpireSessionResponse{}
}

// applySessionsAlive stamps every listed live session with the entry's
// time: the leader heard from it since its previous such entry. Sessions
// that no longer exist are skipped.
func (t *txn) applySessionsAlive(req *jfspb.SessionsAliveRequest) *jfspb.SessionsAliveResponse {
	for _, sid := range req.GetSessions() {
		s := t.sessionRecord(sid)
		if s == nil {
			if t.err != nil {
				return nil
			}
			continue
		}
		if t.now > s.AliveNs {
			s.AliveNs = t.now
			t.putSession(s)
		}
	}
	return &jfspb.SessionsAliveResponse{}
}

// endSession releases everything session s holds: its locks, its opens
// in the replicated table (under an older version's entry freeing the
// sustained inodes nobody else has open; under a leaderOpens entry leaving
// them orphans for FreeOrphans, as other sessions may hold them open in the
// leader's memory), its stored results.
func (t *txn) endSession(s *jfspb.Session) {
	sid := s.GetId()
	t.releaseSessionLocks(sid)
	var inos []uint64
	t.scan(bucketSessOpen, u64(sid), func(k, _ []byte) bool {
		inos = append(inos, binary.BigEndian.Uint64(k[8:]))
		return true
	})
	for _, ino := range inos {
		t.del(bucketOpen, key2(ino, sid))
		t.del(bucketSessOpen, key2(sid, ino))
		if n := t.inode(ino); !t.leaderOpens && n != nil && n.Nlink == 0 && !t.isOpen(ino) {
			t.freeInode(ino, n)
		}
	}
	t.deletePrefix(bucketResult, u64(sid))
	if cid := s.GetClientId(); cid != "" {
		if v := t.b(bucketClient).Get([]byte(cid)); len(v) == 8 && binary.BigEndian.Uint64(v) == sid {
			t.del(bucketClient, []byte(cid))
		}
	}
	t.del(bucketSession, u64(sid))
}

// Sessions returns every live session, by id. It returns nil if the state
// cannot be read.
func (f *FSM) Sessions() []*jfspb.Session {
	var out []*jfspb.Session
	err := f.view(func(t *txn) error {
		out = nil
		var err error
		t.scan(bucketSession, nil, func(k, v []byte) bool {
			s := new(jfspb.Session)
			if err = proto.Unmarshal(v, s); err != nil {
				return false
			}
			out = append(out, s)
			return true
		})
		return err
	})
	if err != nil {
		return nil
	}
	return out
}

// Session returns the live session id, or nil.
func (f *FSM) Session(id uint64) *jfspb.Session {
	var s *jfspb.Session
	if err := f.view(func(t *txn) error { s = t.sessionRecord(id); return nil }); err != nil {
		return nil
	}
	return s
}
