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

// ErrChecksum: a log entry whose CRC-32C is missing or does not match its
// bytes. It is never applied; the node stops.
var ErrChecksum = errors.New("fsm: log entry checksum mismatch")

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
// error says what is wrong. Apply verifies every entry; a node also checks
// its stored log with it at start.
func VerifyChecksum(data []byte) error { return verifyChecksum(data) }

// verifyChecksum checks that data ends with the checksum field and that it
// matches the bytes before it.
func verifyChecksum(data []byte) error {
	n := len(data) - checksumLen
	if n < 0 || !bytes.Equal(data[n:n+len(checksumField)], checksumField) {
		return errors.New("no checksum")
	}
	want := binary.LittleEndian.Uint32(data[len(data)-4:])
	if got := crc32.Checksum(data[:n], castagnoli); got != want {
		return fmt.Errorf("crc32c %08x, recorded %08x", got, want)
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
