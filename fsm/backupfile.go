package fsm

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"

	bolt "go.etcd.io/bbolt"
)

// The backup file format (jfsctl snapshot save / restore): a header, the
// bolt state file, and a SHA-256 over both.
//
//	offset  size  field
//	0       8     magic "JFSBAKv\n"
//	8       4     format version, big-endian (BackupVersion)
//	12      8     index: the state's last applied log index
//	20      8     term: the leader's raft term when the backup was taken
//	28      8     size: bytes of the bolt file that follow
//	36      8     inodes: inodes in the state
//	44      size  the bolt file (Snapshot.WriteTo)
//	44+size 32    SHA-256 of every byte before it
//
// All integers are big-endian. A file of any other length, magic, version
// or checksum is refused before its contents are used.

// ErrBadBackup: a file that is not a whole, unaltered jfs backup.
var ErrBadBackup = errors.New("not a valid jfs backup")

const (
	backupMagic = "JFSBAKv\n"
	// BackupVersion is the backup format this build writes and reads.
	BackupVersion = 1
	// BackupHeaderLen and BackupTrailerLen are the bytes around the bolt
	// file.
	BackupHeaderLen  = 44
	BackupTrailerLen = sha256.Size
)

// BackupHeader describes a backup.
type BackupHeader struct {
	Index  uint64 // the state's last applied log index
	Term   uint64 // the leader's term when it was taken
	Size   uint64 // bytes of the bolt file
	Inodes uint64 // inodes in the state
}

// Marshal returns the header's BackupHeaderLen bytes.
func (h BackupHeader) Marshal() []byte {
	b := make([]byte, 0, BackupHeaderLen)
	b = append(b, backupMagic...)
	b = binary.BigEndian.AppendUint32(b, BackupVersion)
	for _, v := range []uint64{h.Index, h.Term, h.Size, h.Inodes} {
		b = binary.BigEndian.AppendUint64(b, v)
	}
	return b
}

// ParseBackupHeader reads a header; the error wraps ErrBadBackup.
func ParseBackupHeader(b []byte) (BackupHeader, error) {
	if len(b) < BackupHeaderLen {
		return BackupHeader{}, fmt.Errorf("%w: %d bytes is too short for the %d-byte header (truncated)", ErrBadBackup, len(b), BackupHeaderLen)
	}
	if string(b[:8]) != backupMagic {
		return BackupHeader{}, fmt.Errorf("%w: it does not start with the backup magic", ErrBadBackup)
	}
	if v := binary.BigEndian.Uint32(b[8:]); v != BackupVersion {
		return BackupHeader{}, fmt.Errorf("%w: format version %d, this build reads %d", ErrBadBackup, v, BackupVersion)
	}
	be := binary.BigEndian
	return BackupHeader{Index: be.Uint64(b[12:]), Term: be.Uint64(b[20:]), Size: be.Uint64(b[28:]), Inodes: be.Uint64(b[36:])}, nil
}

// AppliedIndex is the last applied index of the view's state.
func (s *Snapshot) AppliedIndex() uint64 {
	return newTxn(nil, s.tx, 0, 0, 0).metaGet(metaApplied)
}

// Inodes is the number of inodes in the view's state.
func (s *Snapshot) Inodes() uint64 {
	return uint64(s.tx.Bucket(bucketInode).Stats().KeyN)
}

// Size is the number of bytes WriteTo writes.
func (s *Snapshot) Size() int64 { return s.tx.Size() }

// WriteBackup writes the view as a backup file to w, with term in its
// header, and returns the header it wrote and the checksum.
func (s *Snapshot) WriteBackup(w io.Writer, term uint64) (BackupHeader, [32]byte, error) {
	h := BackupHeader{Index: s.AppliedIndex(), Term: term, Size: uint64(s.Size()), Inodes: s.Inodes()}
	sum := sha256.New()
	hw := io.MultiWriter(w, sum)
	var out [32]byte
	if _, err := hw.Write(h.Marshal()); err != nil {
		return h, out, fmt.Errorf("fsm: write backup: %w", err)
	}
	n, err := s.WriteTo(hw)
	if err != nil {
		return h, out, fmt.Errorf("fsm: write backup: %w", err)
	}
	if uint64(n) != h.Size {
		return h, out, fmt.Errorf("fsm: write backup: wrote %d bytes of state, expected %d", n, h.Size)
	}
	copy(out[:], sum.Sum(nil))
	if _, err := w.Write(out[:]); err != nil {
		return h, out, fmt.Errorf("fsm: write backup: %w", err)
	}
	return h, out, nil
}

// VerifyBackup checks that r, of length size, is a whole backup whose
// checksum matches: the header parses, the length is exactly the header's
// plus the state's plus the trailer's, and the SHA-256 over everything
// before the trailer equals the trailer. It reads the whole file. It does
// not check that the state itself is a jfs state file (CheckBackupState).
// The error wraps ErrBadBackup and says what is wrong.
func VerifyBackup(r io.ReaderAt, size int64) (BackupHeader, [32]byte, error) {
	var sum [32]byte
	head := make([]byte, BackupHeaderLen)
	if n, err := r.ReadAt(head, 0); n < len(head) {
		if err != nil && !errors.Is(err, io.EOF) {
			return BackupHeader{}, sum, fmt.Errorf("fsm: read backup: %w", err)
		}
		return BackupHeader{}, sum, fmt.Errorf("%w: %d bytes is too short for the %d-byte header (truncated)", ErrBadBackup, size, BackupHeaderLen)
	}
	h, err := ParseBackupHeader(head)
	if err != nil {
		return h, sum, err
	}
	want := uint64(BackupHeaderLen) + h.Size + BackupTrailerLen
	if h.Size > 1<<62 || uint64(size) != want {
		how := "truncated"
		if uint64(size) > want {
			how = "trailing bytes"
		}
		return h, sum, fmt.Errorf("%w: the file is %d bytes, its header says %d (%s)", ErrBadBackup, size, want, how)
	}
	hs := sha256.New()
	if _, err := io.Copy(hs, io.NewSectionReader(r, 0, size-BackupTrailerLen)); err != nil {
		return h, sum, fmt.Errorf("fsm: read backup: %w", err)
	}
	if _, err := r.ReadAt(sum[:], size-BackupTrailerLen); err != nil {
		return h, sum, fmt.Errorf("fsm: read backup: %w", err)
	}
	if got := hs.Sum(nil); !bytes.Equal(got, sum[:]) {
		return h, sum, fmt.Errorf("%w: checksum mismatch (SHA-256 %x, the file says %x): the file was damaged or altered", ErrBadBackup, got[:8], sum[:8])
	}
	return h, sum, nil
}

// CheckBackupState checks that the state file at path (a backup's state,
// written out on its own) is a whole jfs state file of this format whose
// lock table loads, and that it agrees with the backup's header h (applied
// index and inode count). The error wraps ErrBadBackup.
func CheckBackupState(path string, h BackupHeader) error {
	if err := checkStateFile(path); err != nil {
		return fmt.Errorf("%w: the state inside is not a jfs state file: %v", ErrBadBackup, err)
	}
	var applied, inodes uint64
	err := GuardFault(path, func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer db.Close()
		return db.View(func(tx *bolt.Tx) error {
			s := &Snapshot{tx: tx}
			applied, inodes = s.AppliedIndex(), s.Inodes()
			return nil
		})
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadBackup, err)
	}
	if applied != h.Index || inodes != h.Inodes {
		return fmt.Errorf("%w: the state inside (index %d, %d inodes) does not match the header (index %d, %d inodes)",
			ErrBadBackup, applied, inodes, h.Index, h.Inodes)
	}
	return nil
}

// OpenBackup verifies the backup file at path (VerifyBackup), writes its
// state to statePath and checks it (CheckBackupState). On success the
// caller owns statePath; on failure it is removed.
func OpenBackup(path, statePath string) (BackupHeader, [32]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return BackupHeader{}, [32]byte{}, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return BackupHeader{}, [32]byte{}, err
	}
	h, sum, err := VerifyBackup(f, fi.Size())
	if err != nil {
		return h, sum, err
	}
	if err := writeSynced(statePath, io.NewSectionReader(f, BackupHeaderLen, int64(h.Size))); err != nil {
		os.Remove(statePath)
		return h, sum, err
	}
	if err := CheckBackupState(statePath, h); err != nil {
		os.Remove(statePath)
		return h, sum, err
	}
	return h, sum, nil
}
