package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"syscall"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// ErrChecksum: a log entry whose CRC-32C does not match its bytes, or that
// has none although an entry with one was applied before it. It is never
// applied; the node stops.
var ErrChecksum = errors.New("fsm: log entry checksum mismatch")

// ErrNoChecksum is what VerifyChecksum answers for an entry that carries no
// checksum: one written before entries were sealed. Such an entry is
// accepted only while no sealed entry came before it.
var ErrNoChecksum = errors.New("no checksum")

// metaSealed is set (to the index of the entry) by the first applied entry
// that carries a checksum; from then on an entry without one is
// ErrChecksum. Being in the state, it travels in snapshots.
var metaSealed = []byte("sealed")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// checksumField is the encoded tag of LogEntry.crc32c (field 60, fixed32);
// the field is always the last thing in a sealed entry.
var checksumField = protowire.AppendTag(nil, 60, protowire.Fixed32Type)

// checksumLen is the length of the encoded checksum field.
var checksumLen = len(checksumField) + 4

// Seal marshals e without its checksum (it clears e.Crc32C), and appends
// the CRC-32C of those bytes as LogEntry.crc32c. Every entry proposed to the
// log must be sealed.
func Seal(e *jfspb.LogEntry) ([]byte, error) {
	e.Crc32C = 0
	b, err := proto.Marshal(e)
	if err != nil {
		return nil, fmt.Errorf("fsm: marshal log entry: %w", err)
	}
	sum := crc32.Checksum(b, castagnoli)
	b = append(b, checksumField...)
	return protowire.AppendFixed32(b, sum), nil
}

// VerifyChecksum checks a sealed entry's checksum without decoding it: the
// error says what is wrong, and is ErrNoChecksum for an entry that carries
// none (written before entries were sealed). Apply verifies every entry; a
// node also checks its stored log with it at start.
//
// The upgrade rule: entries without a checksum are accepted until the first
// entry with one; after it every entry must carry one. A wrong checksum is
// always an error.
func VerifyChecksum(data []byte) error { return verifyChecksum(data) }

// verifyChecksum checks that data ends with the checksum field and that it
// matches the bytes before it. The checksum field is recognised only as the
// last top-level field of the message, so that an entry written before
// sealing whose last bytes happen to look like one (inside its body, say)
// is ErrNoChecksum, not a mismatch.
func verifyChecksum(data []byte) error {
	n := len(data) - checksumLen
	if n < 0 || !bytes.Equal(data[n:n+len(checksumField)], checksumField) || !lastFieldAt(data, n) {
		return ErrNoChecksum
	}
	want := binary.LittleEndian.Uint32(data[len(data)-4:])
	if got := crc32.Checksum(data[:n], castagnoli); got != want {
		return fmt.Errorf("crc32c %08x, recorded %08x", got, want)
	}
	return nil
}

// lastFieldAt reports whether the last top-level field of the protobuf
// message data starts at offset n.
func lastFieldAt(data []byte, n int) bool {
	for off := 0; off < len(data); {
		_, _, l := protowire.ConsumeField(data[off:])
		if l < 0 {
			return false
		}
		if off+l == len(data) {
			return off == n
		}
		off += l
	}
	return false
}

// checkSeal applies the upgrade rule to the entry t applies (at t.index):
// err is what verifyChecksum said of it. The first entry with a checksum
// records that the log is sealed from then on.
func (t *txn) checkSeal(err error) error {
	switch {
	case errors.Is(err, ErrNoChecksum):
		if at := t.metaGet(metaSealed); at != 0 {
			return fmt.Errorf("no checksum, but entry %d and every one since carried one (written by an older version?)", at)
		}
		return nil
	case err != nil:
		return err
	}
	if t.metaGet(metaSealed) == 0 {
		t.metaPut(metaSealed, t.index)
	}
	return nil
}

// CheckpointFunc hears of every checkpoint entry: snap is the state as of
// index, which the callee must Release. It is called before AppliedIndex
// reaches index, on the apply path, and must not block; digesting snap
// belongs in another goroutine.
type CheckpointFunc func(index uint64, snap *Snapshot)

// SetCheckpointListener installs fn; call it before the first ApplyBatch.
func (f *FSM) SetCheckpointListener(fn CheckpointFunc) { f.checkpoint = fn }

// applyCheckpoint changes nothing: ApplyBatch ends its transaction at a
// checkpoint so that the state as of its index can be digested.
func (t *txn) applyCheckpoint(*jfspb.CheckpointRequest) *jfspb.CheckpointResponse {
	return &jfspb.CheckpointResponse{Index: t.index}
}

// applyMarkCorrupt records the mark in the member table, where it stays
// until the member is removed. EINVAL without a node id.
func (t *txn) applyMarkCorrupt(req *jfspb.MarkCorruptRequest) *jfspb.MarkCorruptResponse {
	if req.NodeId == "" {
		return &jfspb.MarkCorruptResponse{Errno: eno(syscall.EINVAL)}
	}
	m := &jfspb.Member{Id: req.NodeId}
	if v := t.b(bucketMember).Get([]byte(req.NodeId)); v != nil {
		t.fail(proto.Unmarshal(v, m))
	}
	m.Corrupt = fmt.Sprintf("state differed from the other replicas at index %d: %s", req.Index, req.Reason)
	rec, err := proto.Marshal(m)
	t.fail(err)
	t.put(bucketMember, []byte(req.NodeId), rec)
	return &jfspb.MarkCorruptResponse{}
}

// Digest hashes the view like FSM.Digest. A damaged page gives an error
// that wraps ErrDamaged.
func (s *Snapshot) Digest() (sum [32]byte, err error) {
	err = GuardFault(s.tx.DB().Path(), func() error {
		var err error
		sum, err = digestTx(s.tx)
		return err
	})
	return sum, err
}

// digestTx hashes every bucket, key and value of tx except the applied
// index. Bolt panics on a damaged page: call it under GuardFault.
func digestTx(tx *bolt.Tx) ([32]byte, error) {
	var sum [32]byte
	h := sha256.New()
	field := func(b []byte) {
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(len(b))))
		h.Write(b)
	}
	err := tx.ForEach(func(name []byte, b *bolt.Bucket) error {
		field(name)
		return b.ForEach(func(k, v []byte) error {
			if bytes.Equal(name, bucketMeta) && bytes.Equal(k, metaApplied) {
				return nil
			}
			field(k)
			field(v)
			return nil
		})
	})
	copy(sum[:], h.Sum(nil))
	return sum, err
}
