package fsm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"

	bolt "go.etcd.io/bbolt"
)

// ErrDamaged: a bolt file that bolt cannot safely map: a torn or truncated
// file, or one whose meta pages are both invalid. Opening such a file would
// crash the process with a fault, or read garbage. Errors that wrap it are
// *DamagedError.
var ErrDamaged = errors.New("damaged")

// DamagedError says which file is damaged, how, and (Hint) what the
// operator can do about it.
type DamagedError struct {
	File   string // base name, e.g. fsm.db
	Reason string
	Hint   string
}

func (e *DamagedError) Error() string {
	s := e.File + " is damaged: " + e.Reason
	if e.Hint != "" {
		s += "; " + e.Hint
	}
	return s
}

func (e *DamagedError) Is(target error) bool { return target == ErrDamaged }

// WithHint returns err with hint added when it is a *DamagedError, and err
// unchanged otherwise.
func WithHint(err error, hint string) error {
	var de *DamagedError
	if errors.As(err, &de) {
		return &DamagedError{File: de.File, Reason: de.Reason, Hint: hint}
	}
	return err
}

// The bolt file format (go.etcd.io/bbolt, format version 2): pages of
// pageSize bytes; pages 0 and 1 are meta pages, each a 16-byte page header
// followed by the meta record, native (little-endian) byte order.
const (
	boltMagic       = 0xED0CDAED
	boltVersion     = 2
	boltPageHeader  = 16
	boltMetaLen     = 64 // magic .. checksum
	boltMetaSumOff  = 56 // checksum covers the meta bytes before it
	boltMetaPgidOff = 40 // the high-water mark: pages in use
	boltMetaTxidOff = 48
)

type boltMeta struct {
	pageSize   uint32
	pages      uint64
	txid       uint64
	whyInvalid string
}

func readBoltMeta(page []byte) boltMeta {
	if len(page) < boltPageHeader+boltMetaLen {
		return boltMeta{whyInvalid: "short"}
	}
	m := page[boltPageHeader : boltPageHeader+boltMetaLen]
	le := binary.LittleEndian
	switch {
	case le.Uint32(m[0:]) != boltMagic:
		return boltMeta{whyInvalid: "bad magic"}
	case le.Uint32(m[4:]) != boltVersion:
		return boltMeta{whyInvalid: fmt.Sprintf("format version %d", le.Uint32(m[4:]))}
	}
	h := fnv.New64a()
	h.Write(m[:boltMetaSumOff])
	if h.Sum64() != le.Uint64(m[boltMetaSumOff:]) {
		return boltMeta{whyInvalid: "bad checksum"}
	}
	return boltMeta{pageSize: le.Uint32(m[8:]), pages: le.Uint64(m[boltMetaPgidOff:]), txid: le.Uint64(m[boltMetaTxidOff:])}
}

// CheckBoltFile checks, without mapping it, that the bolt file at path is
// whole: at least one valid meta page, a size that is a multiple of the page
// size and covers every page the newest valid meta page counts. A missing or
// empty file is fine (bolt creates it). The error wraps ErrDamaged and says
// what is wrong.
func CheckBoltFile(path string) error {
	fh, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	defer fh.Close()
	fi, err := fh.Stat()
	if err != nil {
		return err
	}
	size := fi.Size()
	if size == 0 {
		return nil
	}
	damaged := func(format string, args ...any) error {
		return &DamagedError{File: filepath.Base(path), Reason: fmt.Sprintf(format, args...)}
	}
	first := make([]byte, boltPageHeader+boltMetaLen)
	if _, err := io.ReadFull(fh, first); err != nil {
		return damaged("%d bytes is too short for a bolt file", size)
	}
	m0 := readBoltMeta(first)
	pageSize := int64(m0.pageSize)
	if m0.whyInvalid != "" {
		pageSize = int64(os.Getpagesize())
	}
	if pageSize < 512 || pageSize > 1<<20 {
		return damaged("page size %d", pageSize)
	}
	second := make([]byte, boltPageHeader+boltMetaLen)
	m1 := boltMeta{whyInvalid: "missing"}
	if _, err := fh.ReadAt(second, pageSize); err == nil {
		m1 = readBoltMeta(second)
	}
	best := m0
	if m0.whyInvalid != "" || (m1.whyInvalid == "" && m1.txid > m0.txid) {
		best = m1
	}
	if best.whyInvalid != "" {
		return damaged("both meta pages are invalid (%s; %s)", m0.whyInvalid, m1.whyInvalid)
	}
	if int64(best.pageSize) != pageSize {
		return damaged("meta pages disagree on the page size (%d, %d)", pageSize, best.pageSize)
	}
	if size%pageSize != 0 {
		return damaged("size %d is not a multiple of the page size %d (torn or truncated)", size, pageSize)
	}
	if need := int64(best.pages) * pageSize; best.pages > uint64(1<<62)/uint64(pageSize) || size < need {
		return damaged("size %d is shorter than the %d pages (%d bytes) in use (truncated)", size, best.pages, need)
	}
	return nil
}

// checkPages walks every bucket and key of the bolt file at path, read-only,
// in this goroutine: a damaged page makes bolt panic, which GuardFault
// turns into an error here. (Opened for writing with NoFreelistSync, bolt
// walks the pages itself, in a goroutine of its own, where such a panic
// would kill the process.) Damage inside a value is not seen.
func checkPages(path string) error {
	return GuardFault(path, func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			return &DamagedError{File: filepath.Base(path), Reason: err.Error()}
		}
		defer db.Close()
		return db.View(func(tx *bolt.Tx) error {
			return tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
				return b.ForEach(func(_, _ []byte) error { return nil })
			})
		})
	})
}

// GuardFault runs fn, turning a panic, and a memory fault on a mapped file
// that bolt would otherwise die of (SIGBUS), into a *DamagedError for the
// file at path. Use it around code that opens or first reads a bolt file.
func GuardFault(path string, fn func() error) (err error) {
	old := debug.SetPanicOnFault(true)
	defer debug.SetPanicOnFault(old)
	defer func() {
		if r := recover(); r != nil {
			err = &DamagedError{File: filepath.Base(path), Reason: fmt.Sprint(r)}
		}
	}()
	return fn()
}
