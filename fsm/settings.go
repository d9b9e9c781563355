package fsm

import (
	"syscall"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// The settings (block size, capacity, inode limit) shape what apply does,
// so they live in the replicated state, never in a node's flags: every
// replica applies every entry with the same ones. A new cluster's first
// leader proposes SetSettings with initial set, carrying its flags; the
// first such entry wins and later initial ones change nothing. An operator
// changes them through the log (SetSettings without initial). A state with
// no settings recorded behaves as DefaultBlockSize with no capacity and no
// inode limit.

var (
	metaBlockSize = []byte("blocksize") // 0: not recorded yet
	metaCapacity  = []byte("capacity")  // 0: none
	metaMaxInodes = []byte("maxinodes") // 0: none
)

// MaxBlockSize is the largest block size: one block must fit in one write.
// MinBlockSize is the smallest an operator may set: a tiny block would turn
// one write into millions of block records.
const (
	MaxBlockSize = MaxWrite
	MinBlockSize = 4 << 10
)

// validBlockSize reports whether bs may be recorded: a power of two of at
// most MaxBlockSize, and for a change by an operator (not initial) at least
// MinBlockSize. The initial settings carry the first leader's jfsd
// --block-size, which jfsd already holds to MinBlockSize (tests of the
// state machine alone use smaller blocks).
func validBlockSize(bs uint64, initial bool) bool {
	return bs != 0 && bs&(bs-1) == 0 && bs <= MaxBlockSize && (initial || bs >= MinBlockSize)
}

// settings are the replicated settings as apply uses them.
type settings struct {
	blockSize uint64 // never 0
	capacity  uint64 // 0: none
	maxInodes uint64 // 0: none
}

func (t *txn) settings() settings {
	s := settings{
		blockSize: t.metaGet(metaBlockSize),
		capacity:  t.metaGet(metaCapacity),
		maxInodes: t.metaGet(metaMaxInodes),
	}
	if s.blockSize == 0 {
		s.blockSize = DefaultBlockSize
	}
	return s
}

func (s settings) proto() *jfspb.Settings {
	return &jfspb.Settings{BlockSize: uint32(s.blockSize), Capacity: s.capacity, MaxInodes: s.maxInodes}
}

// applySetSettings records req.Settings. With initial it changes nothing
// once settings are recorded. A block size of 0 keeps the current one
// (EINVAL with initial, which must carry the block size); EINVAL for a
// block size validBlockSize refuses; EBUSY for a different block size
// while any file data is stored or waits to be freed (the stored blocks are
// shaped by it). Capacity and inode limit may change at any time; 0
// removes them.
func (t *txn) applySetSettings(req *jfspb.SetSettingsRequest) *jfspb.SetSettingsResponse {
	want := req.GetSettings()
	cur := t.settings()
	bs := uint64(want.GetBlockSize())
	if !(bs == 0 && !req.GetInitial()) && !validBlockSize(bs, req.GetInitial()) {
		return &jfspb.SetSettingsResponse{Errno: eno(syscall.EINVAL), Settings: cur.proto()}
	}
	recorded := t.metaGet(metaBlockSize) != 0
	if req.GetInitial() && recorded {
		return &jfspb.SetSettingsResponse{Settings: cur.proto()}
	}
	switch {
	case bs == 0:
		bs = cur.blockSize
	case bs != cur.blockSize && t.holdsData():
		if !req.GetInitial() {
			return &jfspb.SetSettingsResponse{Errno: eno(syscall.EBUSY), Settings: cur.proto()}
		}
		// Data was written before the first settings were applied: it
		// keeps its shape.
		bs = cur.blockSize
	}
	t.metaPut(metaBlockSize, bs)
	t.metaPut(metaCapacity, want.GetCapacity())
	t.metaPut(metaMaxInodes, want.GetMaxInodes())
	return &jfspb.SetSettingsResponse{Settings: t.settings().proto()}
}

// holdsData reports whether any data block is stored or any dead range
// waits to be freed.
func (t *txn) holdsData() bool {
	if k, _ := t.b(bucketBlock).Cursor().First(); k != nil {
		return true
	}
	k, _ := t.b(bucketFreeing).Cursor().First()
	return k != nil
}

// Settings returns the settings in effect, and whether they were recorded
// (false: a new cluster's first leader has not proposed them yet).
func (f *FSM) Settings() (*jfspb.Settings, bool) {
	var s *jfspb.Settings
	var recorded bool
	if err := f.view(func(t *txn) error {
		s, recorded = t.settings().proto(), t.metaGet(metaBlockSize) != 0
		return nil
	}); err != nil {
		return nil, false
	}
	return s, recorded
}
