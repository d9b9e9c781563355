package fsm

import (
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestSessionsAlive: a SessionsAlive entry stamps each listed live session
// with the entry's time, keeps it across a reopen, and skips
// sessions that are gone.
func TestSessionsAlive(t *testing.T) {
	h := mustHarness(t, Options{})
	other := h.mustRegister("client-2")
	if s := h.f.Session(h.sess); s.AliveNs != 0 {
		t.Fatalf("fresh session alive_ns %d, want 0", s.AliveNs)
	}
	e := h.entry(jfspb.CommandType_COMMAND_TYPE_SESSIONS_ALIVE, &jfspb.SessionsAliveRequest{Sessions: []uint64{h.sess, 999}}, 0, 0, 0)
	mustOK(t, h.mustApplyEntry(e))
	stamp := h.now
	if s := h.f.Session(h.sess); s.AliveNs != stamp {
		t.Fatalf("alive_ns %d, want the entry's time %d", s.AliveNs, stamp)
	}
	if s := h.f.Session(other); s.AliveNs != 0 {
		t.Fatalf("unlisted session alive_ns %d, want 0", s.AliveNs)
	}
	if h.f.Session(999) != nil {
		t.Fatal("an unknown session was created")
	}
	h.mustReopen()
	if s := h.f.Session(h.sess); s.AliveNs != stamp {
		t.Fatalf("after reopening: alive_ns %d, want %d", s.AliveNs, stamp)
	}
}
