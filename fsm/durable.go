package fsm

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	bolt "go.etcd.io/bbolt"
)

// The state file is a cache of the raft log (DESIGN.md, "Durability"):
// commits are not fsynced, so after a crash of the machine the file may be
// torn in ways no check can see (a meta page that names pages that never
// reached the disk). It is trusted only when it was closed cleanly, which
// the clean marker beside it records:
//
//   - Close syncs the file, closes it, then writes the marker and syncs
//     it and the directory;
//   - Open, finding the file and its marker, removes the marker durably
//     before it opens the file for writing;
//   - Open, finding the file without a marker, discards the file and
//     starts from an empty state, which the node fills from its newest
//     snapshot and the log.
//
// With Options.SyncCommits every commit is synced and the file is whole at
// any moment, so the marker stays in place while the file is open.

// CleanMarker is the name of the clean marker of the state file at path.
func CleanMarker(path string) string { return path + ".clean" }

// Discarded tells why Open threw the existing state file away ("" when it
// did not): it was not closed cleanly, so it cannot be trusted. The state
// then starts empty at index 0 and must be rebuilt from a snapshot and the
// log.
func (f *FSM) Discarded() string { return f.discarded }

// discardUnclean throws the state file away when it exists without its
// clean marker. It runs before the damage checks: a file that was not
// closed cleanly is not worth checking, and may be torn in ways they miss.
func (f *FSM) discardUnclean() error {
	fi, err := os.Stat(f.path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("fsm: %w", err)
	}
	if _, err := os.Stat(CleanMarker(f.path)); err == nil {
		return nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("fsm: %w", err)
	}
	f.discarded = "it was not closed cleanly (crash, kill or power loss), so it may be torn"
	if err := os.Remove(f.path); err != nil {
		return fmt.Errorf("fsm: discard %s: %w", f.path, err)
	}
	os.Remove(f.path + ".restore")
	os.Remove(f.path + ".compact")
	if err := syncDir(filepath.Dir(f.path)); err != nil {
		return fmt.Errorf("fsm: discard %s: %w", f.path, err)
	}
	return nil
}

// takeMarker removes the clean marker durably before the file is opened
// for writing: from now until the next clean Close the file is not to be
// trusted. With SyncCommits the marker stays (every commit is synced).
// It runs after the damage checks, so a damaged file that was closed
// cleanly (rot while stopped, not a crash) is still refused, naming the
// file, at every start.
func (f *FSM) takeMarker() error {
	if f.opts.SyncCommits {
		return nil
	}
	marker := CleanMarker(f.path)
	err := os.Remove(marker)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err == nil {
		err = syncDir(filepath.Dir(marker))
	}
	if err != nil {
		return fmt.Errorf("fsm: remove %s: %w", marker, err)
	}
	return nil
}

// markClean writes the clean marker and syncs it and its directory. The
// state file must be synced (and, without SyncCommits, closed) first.
func (f *FSM) markClean() error {
	marker := CleanMarker(f.path)
	fh, err := os.OpenFile(marker, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("fsm: clean marker: %w", err)
	}
	_, err = fh.WriteString("closed cleanly\n")
	if err == nil {
		err = fh.Sync()
	}
	if cerr := fh.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = syncDir(filepath.Dir(marker))
	}
	if err != nil {
		return fmt.Errorf("fsm: clean marker: %w", err)
	}
	return nil
}

// DefaultCompactMin is the smallest bolt file that compaction looks at.
const DefaultCompactMin = 64 << 20

// compactMaxLive bounds the live data that a compaction while the node runs
// copies (apply waits for it); a larger state is compacted at the next start.
const compactMaxLive = 256 << 20

// worthCompacting reports whether a bolt file of size bytes with free bytes
// unused should be rewritten: at least min bytes, at least half of it free.
func worthCompacting(size, free, min int64) bool {
	return min >= 0 && size >= min && 2*free >= size
}

// CompactFile rewrites the closed bolt file at path without its free pages
// when compaction is worth it (at least min bytes, at least half of them
// unused; min < 0: never): the live keys are copied into path.compact, which
// is synced and renamed over path, and the directory is synced. It returns
// the file's size before and after. The file must not be open; check it
// with CheckBoltFile first.
func CompactFile(path string, min int64) (before, after int64, err error) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) || (err == nil && fi.Size() == 0) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	before = fi.Size()
	if min < 0 || before < min {
		return before, before, nil
	}
	var used int64
	err = GuardFault(path, func() error {
		src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer src.Close()
		return src.View(func(tx *bolt.Tx) error {
			used = usedBytes(tx)
			return nil
		})
	})
	if err != nil {
		return before, before, err
	}
	if !worthCompacting(before, before-used, min) {
		return before, before, nil
	}
	err = GuardFault(path, func() error {
		src, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer src.Close()
		return compactInto(src, path)
	})
	if err != nil {
		return before, before, err
	}
	fi, err = os.Stat(path)
	if err != nil {
		return before, before, err
	}
	return before, fi.Size(), nil
}

// usedBytes is what the pages that hold the buckets of tx take, plus the
// meta pages and the root: what a compacted copy needs, about.
func usedBytes(tx *bolt.Tx) int64 {
	var pages int
	tx.ForEach(func(_ []byte, b *bolt.Bucket) error {
		s := b.Stats()
		pages += s.BranchPageN + s.BranchOverflowN + s.LeafPageN + s.LeafOverflowN
		return nil
	})
	return int64(pages+4) * int64(tx.DB().Info().PageSize)
}

// compactInto copies the live keys of src into path.compact, syncs it and
// renames it over path (syncing the directory). src stays open; the caller
// closes it (its mapping still shows the old file's pages).
func compactInto(src *bolt.DB, path string) error {
	tmp := path + ".compact"
	os.Remove(tmp)
	dst, err := bolt.Open(tmp, 0o600, &bolt.Options{NoSync: true, NoFreelistSync: true, NoGrowSync: true})
	if err != nil {
		return fmt.Errorf("compact %s: %w", path, err)
	}
	err = bolt.Compact(dst, src, 64<<20)
	if err == nil {
		err = dst.Sync()
	}
	if cerr := dst.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("compact %s: %w", path, err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return fmt.Errorf("compact %s: %w", path, err)
	}
	return nil
}

// CompactWorth reports whether CompactIfWorth would compact the state
// file now. It is cheap (no page is read) and safe at any time.
func (f *FSM) CompactWorth() bool {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	return f.db != nil && f.compactWorth()
}

// compactWorth: at least half of the file is free, it is at least
// Options.CompactMin bytes, and what is live is small enough to copy while
// apply waits. The caller holds dbMu.
func (f *FSM) compactWorth() bool {
	st := f.db.Stats()
	var size int64
	f.db.View(func(tx *bolt.Tx) error {
		size = tx.Size()
		return nil
	})
	free := int64(st.FreePageN+st.PendingPageN) * int64(f.db.Info().PageSize)
	return worthCompacting(size, free, f.opts.CompactMin) && size-free <= compactMaxLive
}

// CompactIfWorth rewrites the state file without its free pages when at
// least half of it is free, it is at least Options.CompactMin bytes, and
// what is live is small enough to copy while apply waits (256 MiB; a
// larger state is compacted at the next start instead). Reads wait too;
// neither waits for open snapshots of the old file. It reports whether it compacted. The node calls it before each snapshot,
// so that the snapshot, which streams the whole file, is small as well.
func (f *FSM) CompactIfWorth() (bool, error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	if f.db == nil {
		return false, ErrClosed
	}
	if !f.compactWorth() {
		return false, nil
	}
	if err := compactInto(f.db, f.path); err != nil {
		return false, fmt.Errorf("fsm: %w", err)
	}
	// As in Restore, the old file is closed once the snapshots that read
	// it are released (a backup streaming to a slow client, a digest):
	// closing it here would hold apply and reads until then.
	old := f.db
	compactHook()
	if err := f.reopen(); err != nil {
		f.db = nil // nothing may apply to a file the path no longer names
		go closeOld(old)
		return false, err
	}
	go closeOld(old)
	return true, nil
}

// compactHook runs in CompactIfWorth between the copy and the open of the
// compacted file; tests replace it.
var compactHook = func() {}
