package fsm

import (
	"slices"
	"syscall"
	"testing"

	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestEveryCommandCarriesErrno walks the whole dispatch table: every
// command's response type takes an errno, an entry from an unknown session
// is answered with ESTALE in that type, and a retried entry is answered
// with the stored response. None of it may panic.
func TestEveryCommandCarriesErrno(t *testing.T) {
	h := mustHarness(t, Options{})
	types := make([]jfspb.CommandType, 0, len(h.f.commands))
	for typ := range h.f.commands {
		types = append(types, typ)
	}
	slices.Sort(types)
	for _, typ := range types {
		c := h.f.commands[typ]
		t.Run(c.name, func(t *testing.T) {
			r := c.errnoResponse(syscall.EIO)
			if got := errnoOf(r); got != syscall.EIO {
				t.Fatalf("errnoResponse(EIO) carries %v", got)
			}
			if got, want := r.ProtoReflect().Descriptor(), c.newResp().ProtoReflect().Descriptor(); got != want {
				t.Fatalf("errnoResponse is a %s, want %s", got.FullName(), want.FullName())
			}
			if c.sessionFree {
				return
			}
			stale := h.mustApplyEntry(h.entry(typ, c.newReq(), 1<<40, 1, 0))
			if stale.ProtoReflect().Descriptor() != r.ProtoReflect().Descriptor() {
				t.Fatalf("unknown session: answered with %T", stale)
			}
			mustErrno(t, stale, syscall.ESTALE)

			h.seq++
			first := h.mustApplyEntry(h.entry(typ, c.newReq(), h.sess, h.seq, 0))
			retry := h.mustApplyEntry(h.entry(typ, c.newReq(), h.sess, h.seq, 0))
			if c.reevaluateEAGAIN && mustErrnoOf(t, first) == syscall.EAGAIN {
				return // not stored, by design
			}
			if !proto.Equal(first, retry) {
				t.Fatalf("retry answered %v, first answer %v", retry, first)
			}
		})
	}
}
