// Package fsm is the replicated state machine of jfs: inodes, directory
// entries, file data, extended attributes, sessions and locks, kept in one
// bbolt file and changed only by applying committed raft log entries.
//
// Apply is deterministic: it reads no clock (timestamps come from the
// entry's time_ns), uses no randomness and never iterates over a Go map.
// File-system errors are results (the errno field of the response), never Go
// errors; ApplyBatch returns an error only when the node must stop.
//
// Concurrency: ApplyBatch, Restore and Close are serialised with one
// another. The read methods (GetAttr, Lookup, ReadDir, ...), Snapshot,
// Digest, AppliedIndex and WaitApplied may be called from any goroutine at
// any time; reads see the state as of the last committed batch.
package fsm

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"

	bolt "go.etcd.io/bbolt"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/rangelock"
)

// Errors returned by the FSM. An apply error means the node must stop.
var (
	// ErrCorruptEntry: a log entry's envelope or body does not decode.
	ErrCorruptEntry = errors.New("fsm: corrupt log entry")
	// ErrUnknownCommand: a log entry of a command type this version does
	// not know, and not marked skippable.
	ErrUnknownCommand = errors.New("fsm: unknown command type")
	// ErrClosed: the FSM was closed.
	ErrClosed = errors.New("fsm: closed")
	// ErrBadSnapshot: a snapshot stream that is not a jfs state file.
	ErrBadSnapshot = errors.New("fsm: bad snapshot")
)

const (
	// DefaultBlockSize is the block size of a state with no settings
	// recorded, and of a new cluster unless told otherwise.
	DefaultBlockSize = 64 << 10

	// RootIno is the inode number of the root directory.
	RootIno = 1
	// MaxWrite is the most data one Write command may carry.
	MaxWrite = 4 << 20
	// MaxFallocate is the most bytes one Fallocate command may allocate
	// (store as zeros): one command is applied in one transaction.
	MaxFallocate = 64 << 20
	// MaxRead is the most data one Read answers; a larger request gets a
	// short answer. It keeps a response well under the gRPC message limit
	// and bounds what one read allocates.
	MaxRead = 4 << 20
	// MaxNameLen is the longest name, in bytes.
	MaxNameLen = 255
	// MaxSymlinkLen is the longest symlink target, in bytes.
	MaxSymlinkLen = 4096

	// formatVersion is stored in the meta bucket; Open refuses others.
	formatVersion = 1
)

// Options configure an FSM.
type Options struct {
	// BlockSize, Capacity and MaxInodes are the settings this node
	// proposes if it leads a new cluster (InitialSettings); apply never
	// reads them, it uses the replicated settings (settings.go). Zero
	// values: DefaultBlockSize, no capacity, no inode limit.
	BlockSize int
	Capacity  uint64
	MaxInodes uint64
	// SyncCommits fsyncs every bolt commit, as the first release did. By
	// default commits are not synced: the raft log is the durable record,
	// and a state file that was not closed cleanly is discarded at Open and
	// rebuilt from a snapshot and the log (durable.go).
	SyncCommits bool
	// CompactMin is the smallest state file worth compacting (at Open and
	// by CompactIfWorth) once half of it is free; 0: DefaultCompactMin,
	// negative: never.
	CompactMin int64
}

func (o Options) withDefaults() Options {
	if o.BlockSize <= 0 {
		o.BlockSize = DefaultBlockSize
	}
	if o.CompactMin == 0 {
		o.CompactMin = DefaultCompactMin
	}
	return o
}

// InitialSettings are the settings of the Options, for the SetSettings
// entry that a new cluster's first leader proposes.
func (f *FSM) InitialSettings() *jfspb.Settings {
	return &jfspb.Settings{BlockSize: uint32(f.opts.BlockSize), Capacity: f.opts.Capacity, MaxInodes: f.opts.MaxInodes}
}

// Entry is one committed raft log entry; Data is a marshaled jfspb.LogEntry.
type Entry struct {
	Index, Term uint64
	Data        []byte
}

// Result is the outcome of one entry: the command's response message, with
// its errno, or nil for an entry that was skipped or already applied.
type Result struct {
	Resp proto.Message
}

// FSM is the state machine. See the package comment for concurrency.
type FSM struct {
	path      string
	opts      Options
	discarded string // why Open threw the old file away; see Discarded

	applyMu sync.Mutex   // serialises ApplyBatch, Restore, Close
	dbMu    sync.RWMutex // guards db against Restore and Close
	db      *bolt.DB

	tableMu sync.RWMutex // guards table
	table   *rangelock.Table

	// created is the time stamp (ns) of the file system's creation, 0
	// until the first time-stamped entry is applied; pendingCreated is set
	// by that entry until its batch commits. Guarded by applyMu.
	created, pendingCreated int64

	applied  atomic.Uint64
	waitMu   sync.Mutex
	advanced chan struct{} // closed and replaced when applied advances
	closed   chan struct{}

	commands map[jfspb.CommandType]command

	// lockListener hears, after each committed batch, which inodes' locks
	// may have changed (all: every inode may have). Set before the first
	// ApplyBatch; see SetLockListener.
	lockListener func(inos []uint64, all bool)
	// waitListener hears of the queued lock waits that a committed batch
	// ended; pendingEnds collects them until it commits. Guarded by
	// applyMu. See SetWaitListener.
	waitListener func([]WaitEnd)
	pendingEnds  []WaitEnd
	// checkpoint hears of checkpoint entries; see SetCheckpointListener.
	checkpoint CheckpointFunc
	// openListener hears of the opens that Create and Open record in the
	// leader's memory; see SetOpenListener.
	openListener func(session, fh, ino uint64)
	// changeListener hears of the inodes and entries each entry of a batch
	// changed, before the batch commits; curChange collects the entry
	// being applied and pendingChanges the batch's. Guarded by applyMu.
	// See SetChangeListener.
	changeListener func([]Change)
	curChange      *Change
	pendingChanges []Change
}

// EntryKey names a directory entry: the name in directory Parent.
type EntryKey struct {
	Parent uint64
	Name   string
}

// Change is what one applied log entry changed of the state a mount may
// cache: the inode records it wrote or deleted, and the directory entries
// it added, replaced or removed. Session is the entry's session (0 for
// the leader's own entries).
type Change struct {
	Index   uint64
	Session uint64
	Inos    []uint64
	Entries []EntryKey
}

// SetChangeListener installs fn, called during ApplyBatch with the changes
// of the entries of a transaction (only those that changed an inode or an
// entry), after they were applied and before the transaction commits: no
// reader can see their effect yet. The leader marks the keys as changing
// with it (cluster/caches.go). fn must not block. Call it before the first
// ApplyBatch.
func (f *FSM) SetChangeListener(fn func([]Change)) { f.changeListener = fn }

// SetOpenListener installs fn, called during the apply of a Create or Open
// entry proposed by a leader that keeps open files in memory
// (LogEntry.leader_opens), with the open it made: (session, fh) has ino
// open. It runs inside the apply transaction, before any reader can see
// the entry's effect (a new inode, an O_TMPFILE orphan), so the leader's
// table has the open before anything can decide that the inode is unused.
// fn must not block. Call it before the first ApplyBatch.
func (f *FSM) SetOpenListener(fn func(session, fh, ino uint64)) { f.openListener = fn }

// SetLockListener installs fn, called after every committed batch with the
// inodes whose locks the batch may have released or changed (all is set
// when a session ended, which may touch any inode). The leader wakes its
// blocked lock requests with it. fn runs on the apply path: it must not
// block. Call it before the first ApplyBatch.
func (f *FSM) SetLockListener(fn func(inos []uint64, all bool)) { f.lockListener = fn }

// lockEffect tells which inode a command may change the locks of, for the
// lock listener.
func lockEffect(typ jfspb.CommandType, req proto.Message) (ino uint64, all, some bool) {
	switch r := req.(type) {
	case *jfspb.SetLkRequest:
		return r.Ino, false, true
	case *jfspb.FlockRequest:
		return r.Ino, false, true
	case *jfspb.ReleaseLockOwnerRequest:
		return r.Ino, false, true
	case *jfspb.DelegReturnRequest:
		return r.Ino, false, true
	case *jfspb.ReleaseRequest:
		return r.Ino, false, r.ReleaseFlock || len(r.LockOwners) > 0
	case *jfspb.ReleaseBatchRequest:
		for _, rr := range r.Releases {
			if rr.ReleaseFlock || len(rr.LockOwners) > 0 {
				return 0, true, true
			}
		}
		return 0, false, false
	case *jfspb.CloseSessionRequest, *jfspb.ExpireSessionRequest, *jfspb.RestoredRequest, *jfspb.UnlinkRequest, *jfspb.RenameRequest,
		*jfspb.EndLockWaitRequest:
		// Ending a session releases its locks anywhere; freeing an inode
		// drops its locks. Ending a wait changes a queue the leader's
		// wait-for graph reads.
		return 0, true, true
	}
	return 0, false, false
}

// Open opens or creates the state file at path. A new file gets the root
// directory. The lock table is rebuilt from the file. A file that was not
// closed cleanly is discarded first and the state starts empty (Discarded
// says so; durable.go). A file that was closed cleanly but is torn,
// truncated or otherwise cannot be read safely is refused with an error
// that wraps ErrDamaged, names the file and says how to recover; it never
// crashes the process. A file that is mostly free pages is compacted.
func Open(path string, opts Options) (*FSM, error) {
	f := &FSM{
		path:     path,
		opts:     opts.withDefaults(),
		advanced: make(chan struct{}),
		closed:   make(chan struct{}),
	}
	f.commands = f.commandTable()
	err := f.discardUnclean()
	if err == nil {
		err = CheckBoltFile(path)
	}
	if fi, serr := os.Stat(path); err == nil && serr == nil && fi.Size() > 0 {
		err = checkPages(path)
	}
	if err == nil {
		err = f.takeMarker()
	}
	if err == nil {
		_, _, err = CompactFile(path, f.opts.CompactMin)
	}
	if err == nil {
		err = GuardFault(path, f.openDB)
	}
	if err == nil && f.opts.SyncCommits {
		err = f.markClean()
	}
	if err != nil {
		return nil, WithHint(err, "remove it to rebuild from the log and snapshots")
	}
	return f, nil
}

func (f *FSM) boltOptions() *bolt.Options {
	return &bolt.Options{
		NoSync:     !f.opts.SyncCommits,
		NoGrowSync: !f.opts.SyncCommits,
		// As etcd does: the freelist is rebuilt on open instead of being
		// written by every commit, and kept as a map.
		NoFreelistSync: true,
		FreelistType:   bolt.FreelistMapType,
		// A snapshot holds a read transaction for as long as it streams;
		// bolt cannot remap the file meanwhile, so a commit that grows it
		// past the mapping waits. A large initial mapping (address space,
		// not memory) makes that rare.
		InitialMmapSize: 1 << 30,
	}
}

// openDB opens the bolt file, initialises it if new, and loads the applied
// index and the lock table. The caller holds dbMu for writing when reads
// may run: Restore and CompactIfWorth keep it from the old file's close to
// here, so that a read waits for the new file instead of finding none (and
// answering EIO).
func (f *FSM) openDB() error {
	db, err := bolt.Open(f.path, 0o600, f.boltOptions())
	if err != nil {
		return fmt.Errorf("fsm: open %s: %w", f.path, err)
	}
	var applied, created uint64
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range allBuckets {
			if _, err := tx.CreateBucketIfNotExists(name); err != nil {
				return err
			}
		}
		t := newTxn(f, tx, 0, 0, 0)
		switch v := t.metaGet(metaVersion); v {
		case 0:
			if err := t.initRoot(); err != nil {
				return err
			}
			t.metaPut(metaVersion, formatVersion)
		case formatVersion:
		default:
			return fmt.Errorf("fsm: %s has format version %d, this build reads %d", f.path, v, formatVersion)
		}
		applied = t.metaGet(metaApplied)
		created = t.metaGet(metaCreated)
		return t.err
	})
	if err != nil {
		db.Close()
		return fmt.Errorf("fsm: initialise %s: %w", f.path, err)
	}
	table, err := loadTable(db)
	if err != nil {
		db.Close()
		return err
	}
	f.db = db
	f.tableMu.Lock()
	f.table = table
	f.tableMu.Unlock()
	f.created, f.pendingCreated = int64(created), 0
	f.setApplied(applied)
	return nil
}

// Close syncs and closes the state file, then marks it clean (durable.go):
// the next Open trusts it. Reads after Close return EIO.
func (f *FSM) Close() error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	if f.db == nil {
		return nil
	}
	err := f.db.Sync()
	if cerr := f.db.Close(); err == nil {
		err = cerr
	}
	f.db = nil
	close(f.closed)
	if err != nil {
		return fmt.Errorf("fsm: close %s: %w", f.path, err)
	}
	return f.markClean()
}

// AppliedIndex is the index of the last applied entry.
func (f *FSM) AppliedIndex() uint64 { return f.applied.Load() }

func (f *FSM) setApplied(index uint64) {
	f.waitMu.Lock()
	f.applied.Store(index)
	close(f.advanced)
	f.advanced = make(chan struct{})
	f.waitMu.Unlock()
}

// WaitApplied returns when AppliedIndex() >= index, or the context's error,
// or ErrClosed.
func (f *FSM) WaitApplied(ctx context.Context, index uint64) error {
	for {
		f.waitMu.Lock()
		if f.applied.Load() >= index {
			f.waitMu.Unlock()
			return nil
		}
		ch := f.advanced
		f.waitMu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		case <-f.closed:
			return ErrClosed
		}
	}
}

// command is one entry of the dispatch table.
type command struct {
	name    string
	newReq  func() proto.Message
	newResp func() response
	// sessionFree commands run without a live session in the envelope
	// and bypass exactly-once bookkeeping.
	sessionFree bool
	// reevaluateEAGAIN: an EAGAIN response is not stored for exactly-once
	// (see sessions.go).
	reevaluateEAGAIN bool
	apply            func(*txn, proto.Message) response
}

// response is what apply and the reads return: a protobuf message whose
// errno is set and read through jfspb.Errno, never by field number, so a
// response type without an errno field is a compile error in handler or
// read instead of a panic in apply on every node.
type response interface {
	proto.Message
	jfspb.Errno
}

type message[T any] interface {
	*T
	proto.Message
}

type responseMessage[T any] interface {
	*T
	response
}

func handler[Q, R any, PQ message[Q], PR responseMessage[R]](name string, sessionFree bool, fn func(*txn, PQ) PR) command {
	return command{
		name:        name,
		newReq:      func() proto.Message { return PQ(new(Q)) },
		newResp:     func() response { return PR(new(R)) },
		sessionFree: sessionFree,
		apply: func(t *txn, m proto.Message) response {
			// A nil PR (storage failure) must stay a nil interface.
			if r := fn(t, m.(PQ)); r != nil {
				return r
			}
			return nil
		},
	}
}

// commandTable builds the dispatch table: one applyXxx handler per command.
func (f *FSM) commandTable() map[jfspb.CommandType]command {
	m := map[jfspb.CommandType]command{
		jfspb.CommandType_COMMAND_TYPE_REGISTER:           handler("register", true, (*txn).applyRegister),
		jfspb.CommandType_COMMAND_TYPE_CLOSE_SESSION:      handler("close_session", true, (*txn).applyCloseSession),
		jfspb.CommandType_COMMAND_TYPE_EXPIRE_SESSION:     handler("expire_session", true, (*txn).applyExpireSession),
		jfspb.CommandType_COMMAND_TYPE_SETATTR:            handler("setattr", false, (*txn).applySetAttr),
		jfspb.CommandType_COMMAND_TYPE_MKNOD:              handler("mknod", false, (*txn).applyMknod),
		jfspb.CommandType_COMMAND_TYPE_MKDIR:              handler("mkdir", false, (*txn).applyMkdir),
		jfspb.CommandType_COMMAND_TYPE_CREATE:             handler("create", false, (*txn).applyCreate),
		jfspb.CommandType_COMMAND_TYPE_UNLINK:             handler("unlink", false, (*txn).applyUnlink),
		jfspb.CommandType_COMMAND_TYPE_RMDIR:              handler("rmdir", false, (*txn).applyRmdir),
		jfspb.CommandType_COMMAND_TYPE_RENAME:             handler("rename", false, (*txn).applyRename),
		jfspb.CommandType_COMMAND_TYPE_LINK:               handler("link", false, (*txn).applyLink),
		jfspb.CommandType_COMMAND_TYPE_SYMLINK:            handler("symlink", false, (*txn).applySymlink),
		jfspb.CommandType_COMMAND_TYPE_OPEN:               handler("open", false, (*txn).applyOpen),
		jfspb.CommandType_COMMAND_TYPE_RELEASE:            handler("release", false, (*txn).applyRelease),
		jfspb.CommandType_COMMAND_TYPE_RELEASE_BATCH:      handler("release_batch", false, (*txn).applyReleaseBatch),
		jfspb.CommandType_COMMAND_TYPE_WRITE:              handler("write", false, (*txn).applyWrite),
		jfspb.CommandType_COMMAND_TYPE_SETXATTR:           handler("setxattr", false, (*txn).applySetXattr),
		jfspb.CommandType_COMMAND_TYPE_REMOVEXATTR:        handler("removexattr", false, (*txn).applyRemoveXattr),
		jfspb.CommandType_COMMAND_TYPE_SETLK:              handler("setlk", false, (*txn).applySetLk),
		jfspb.CommandType_COMMAND_TYPE_FLOCK:              handler("flock", false, (*txn).applyFlock),
		jfspb.CommandType_COMMAND_TYPE_RELEASE_LOCK_OWNER: handler("release_lock_owner", false, (*txn).applyReleaseLockOwner),
		jfspb.CommandType_COMMAND_TYPE_SET_MEMBER:         handler("set_member", true, (*txn).applySetMember),
		jfspb.CommandType_COMMAND_TYPE_FALLOCATE:          handler("fallocate", false, (*txn).applyFallocate),
		jfspb.CommandType_COMMAND_TYPE_SET_SETTINGS:       handler("set_settings", true, (*txn).applySetSettings),
		jfspb.CommandType_COMMAND_TYPE_FREE_DATA:          handler("free_data", true, (*txn).applyFreeData),
		jfspb.CommandType_COMMAND_TYPE_TOUCH_ATIME:        handler("touch_atime", false, (*txn).applyTouchAtime),
		jfspb.CommandType_COMMAND_TYPE_SESSIONS_ALIVE:     handler("sessions_alive", true, (*txn).applySessionsAlive),
		jfspb.CommandType_COMMAND_TYPE_CHECKPOINT:         handler("checkpoint", true, (*txn).applyCheckpoint),
		jfspb.CommandType_COMMAND_TYPE_MARK_CORRUPT:       handler("mark_corrupt", true, (*txn).applyMarkCorrupt),
		jfspb.CommandType_COMMAND_TYPE_FREE_ORPHANS:       handler("free_orphans", true, (*txn).applyFreeOrphans),
		jfspb.CommandType_COMMAND_TYPE_RESTORED:           handler("restored", true, (*txn).applyRestored),
		jfspb.CommandType_COMMAND_TYPE_END_LOCK_WAIT:      handler("end_lock_wait", true, (*txn).applyEndLockWait),
		jfspb.CommandType_COMMAND_TYPE_DELEG_RETURN:       handler("deleg_return", false, (*txn).applyDelegReturn),
	}
	// EAGAIN is answered again on a retry: the holder may have unlocked,
	// or a delegation been returned (deleg_busy).
	for _, typ := range []jfspb.CommandType{jfspb.CommandType_COMMAND_TYPE_SETLK, jfspb.CommandType_COMMAND_TYPE_FLOCK,
		jfspb.CommandType_COMMAND_TYPE_RELEASE_LOCK_OWNER} {
		c := m[typ]
		c.reevaluateEAGAIN = true
		m[typ] = c
	}
	return m
}

// errnoResponse returns a new response of c's type carrying only errno.
func (c command) errnoResponse(e syscall.Errno) response {
	m := c.newResp()
	setErrno(m, e)
	return m
}

func setErrno(m jfspb.Errno, e syscall.Errno) { m.SetErrno(int32(e)) }

// ApplyBatch applies entries in a bolt read-write transaction that also
// records the last applied index: either every entry of it takes effect or
// none does. A checkpoint entry ends a transaction: the entries up to it are
// committed, the checkpoint listener gets a view of the state as of its
// index, and the rest of the batch goes into a new transaction.
//
// It returns one Result per entry; entries with Index <= AppliedIndex() are
// ignored (nil Resp), as are unknown command types marked skippable. A
// non-nil error means the node must stop: an entry whose checksum does not
// match (ErrChecksum) or that does not decode (ErrCorruptEntry), an unknown
// type that is not skippable (ErrUnknownCommand), or a storage failure;
// nothing of the failing transaction is applied then (the transactions
// before it, ended by checkpoints, stay applied), and the caller must not
// apply any later entry.
func (f *FSM) ApplyBatch(entries []Entry) ([]Result, error) {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	results := make([]Result, len(entries))
	for start := 0; start < len(entries); {
		end, checkpoint := start, false
		for ; end < len(entries); end++ {
			if f.isCheckpoint(entries[end]) {
				end++
				checkpoint = true
				break
			}
		}
		if err := f.applyTx(entries[start:end], results[start:end], checkpoint); err != nil {
			return nil, err
		}
		start = end
	}
	return results, nil
}

// isCheckpoint reports whether e is a checkpoint entry. It only peeks at
// the type, without copying the body; applyTx checks and decodes the entry
// in full.
func (f *FSM) isCheckpoint(e Entry) bool {
	b := e.Data
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 1 && typ == protowire.VarintType {
			v, n := protowire.ConsumeVarint(b)
			return n > 0 && jfspb.CommandType(v) == jfspb.CommandType_COMMAND_TYPE_CHECKPOINT
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return false
}

// applyTx applies entries in one transaction and fills results. With
// checkpoint set, the last entry is a checkpoint: once the transaction is
// committed, and before the applied index moves, the checkpoint listener
// gets a view of the state as of its index.
func (f *FSM) applyTx(entries []Entry, results []Result, checkpoint bool) error {
	last := f.applied.Load()
	pending := false
	for _, e := range entries {
		if e.Index > last {
			pending = true
			break
		}
	}
	if !pending {
		return nil
	}

	f.tableMu.Lock()
	defer f.tableMu.Unlock()
	tx, err := f.db.Begin(true)
	if err != nil {
		return fmt.Errorf("fsm: begin batch: %w", err)
	}
	fail := func(err error) error {
		tx.Rollback()
		f.pendingCreated = 0
		f.pendingEnds = nil
		f.curChange, f.pendingChanges = nil, nil
		// The lock table may hold changes of the rolled back batch.
		if t, lerr := loadTable(f.db); lerr == nil {
			f.table = t
		} else {
			err = errors.Join(err, lerr)
		}
		return err
	}
	var lockInos []uint64
	lockAll := false
	for i, e := range entries {
		if e.Index <= last {
			continue
		}
		resp, req, typ, err := f.applyEntry(tx, e)
		if err != nil {
			return fail(err)
		}
		if ino, all, some := lockEffect(typ, req); some {
			lockInos = append(lockInos, ino)
			lockAll = lockAll || all
		}
		results[i].Resp = resp
		last = e.Index
	}
	t := newTxn(f, tx, last, 0, 0)
	t.metaPut(metaApplied, last)
	if t.err != nil {
		return fail(fmt.Errorf("fsm: record applied index %d: %w", last, t.err))
	}
	if changes := f.pendingChanges; len(changes) > 0 {
		f.pendingChanges = nil
		f.changeListener(changes)
	}
	if err := tx.Commit(); err != nil {
		return fail(fmt.Errorf("fsm: commit batch ending at index %d: %w", last, err))
	}
	if f.pendingCreated != 0 {
		f.created, f.pendingCreated = f.pendingCreated, 0
	}
	if checkpoint && f.checkpoint != nil && last == entries[len(entries)-1].Index {
		view, err := f.db.Begin(false)
		if err != nil {
			return fmt.Errorf("fsm: checkpoint at index %d: %w", last, err)
		}
		f.checkpoint(last, &Snapshot{tx: view})
	}
	// The listeners hear of the batch before any read can see its index
	// applied: the leader's wait-for graph is never older than what a
	// request sent after a read of the new state expects.
	if f.lockListener != nil && (len(lockInos) > 0 || lockAll) {
		f.lockListener(lockInos, lockAll)
	}
	if ends := f.pendingEnds; len(ends) > 0 {
		f.pendingEnds = nil
		if f.waitListener != nil {
			f.waitListener(ends)
		}
	}
	f.setApplied(last)
	return nil
}

// applyEntry applies one entry inside tx and returns its response, and its
// request and type for the lock listener.
func (f *FSM) applyEntry(tx *bolt.Tx, e Entry) (proto.Message, proto.Message, jfspb.CommandType, error) {
	st := newTxn(f, tx, e.Index, 0, 0)
	if err := st.checkSeal(verifyChecksum(e.Data)); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: index %d term %d: %v", ErrChecksum, e.Index, e.Term, err)
	}
	if st.err != nil {
		return nil, nil, 0, fmt.Errorf("fsm: index %d term %d: record sealing: %w", e.Index, e.Term, st.err)
	}
	var env jfspb.LogEntry
	if err := proto.Unmarshal(e.Data, &env); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: index %d term %d: envelope: %v", ErrCorruptEntry, e.Index, e.Term, err)
	}
	typ := jfspb.CommandType(env.Type)
	c, ok := f.commands[typ]
	if !ok {
		if env.Skippable {
			return nil, nil, typ, nil
		}
		return nil, nil, 0, fmt.Errorf("%w: index %d term %d: type %d is not known to this version and not skippable", ErrUnknownCommand, e.Index, e.Term, env.Type)
	}
	req := c.newReq()
	if err := proto.Unmarshal(env.Body, req); err != nil {
		return nil, nil, 0, fmt.Errorf("%w: index %d term %d: %s body: %v", ErrCorruptEntry, e.Index, e.Term, c.name, err)
	}
	t := newTxn(f, tx, e.Index, env.TimeNs, env.Session)
	t.leaderOpens = env.LeaderOpens
	t.seq = env.Seq
	if f.changeListener != nil {
		f.curChange = &Change{Index: e.Index, Session: env.Session}
	}
	if f.created == 0 && f.pendingCreated == 0 && env.TimeNs > 0 {
		// The first time-stamped entry, whatever its type, dates the file
		// system: every replica applies the same entry first.
		t.markCreated(env.TimeNs)
		f.pendingCreated = env.TimeNs
	}
	var resp proto.Message
	if c.sessionFree {
		resp = c.apply(t, req)
	} else {
		resp = t.applyOnce(c, typ, &env, req)
	}
	// Whatever the command freed is handed to the waiters in this entry.
	t.afterLockChange(req)
	if c := f.curChange; c != nil {
		f.curChange = nil
		if len(c.Inos) > 0 || len(c.Entries) > 0 {
			f.pendingChanges = append(f.pendingChanges, *c)
		}
	}
	if t.err != nil {
		return nil, nil, 0, fmt.Errorf("fsm: index %d term %d: %s: %w", e.Index, e.Term, c.name, t.err)
	}
	return resp, req, typ, nil
}

// Snapshot is a point-in-time view of the whole state.
type Snapshot struct {
	tx   *bolt.Tx
	once sync.Once
}

// Snapshot opens a view of the last committed state. It is safe to call
// concurrently with ApplyBatch, Restore and CompactIfWorth (it goes on
// reading the state it was taken from). The caller must Release it; Close
// waits for open snapshots.
func (f *FSM) Snapshot() (*Snapshot, error) {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return nil, ErrClosed
	}
	tx, err := f.db.Begin(false)
	if err != nil {
		return nil, fmt.Errorf("fsm: snapshot: %w", err)
	}
	return &Snapshot{tx: tx}, nil
}

// WriteTo streams the whole bolt file of the view to w.
func (s *Snapshot) WriteTo(w io.Writer) (int64, error) { return s.tx.WriteTo(w) }

// Release ends the view. It may be called more than once.
func (s *Snapshot) Release() { s.once.Do(func() { s.tx.Rollback() }) }

// Restore replaces the whole state with a snapshot stream written by
// Snapshot.WriteTo: the stream goes to a temporary file beside the state
// file, which is synced and checked in full (a jfs state file of this
// format whose lock table loads), renamed over the state file and reopened;
// the lock table is rebuilt from it. It does not wait for open snapshots of
// the old state. When Restore fails the FSM keeps serving: the old state if
// the new one did not open.
func (f *FSM) Restore(r io.Reader) error {
	f.applyMu.Lock()
	defer f.applyMu.Unlock()
	tmp := f.path + ".restore"
	if err := writeSynced(tmp, r); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := checkStateFile(tmp); err != nil {
		os.Remove(tmp)
		return err
	}
	f.dbMu.Lock()
	defer f.dbMu.Unlock()
	old := f.db
	if old == nil {
		os.Remove(tmp)
		return ErrClosed
	}
	// The old state stays open (its file unlinked by the rename) until the
	// snapshots that still read it are released. Raft may hold one while
	// it asks its main goroutine for the configuration, and the main
	// goroutine waits for this Restore (an InstallSnapshot): waiting for
	// the snapshot here would never end.
	if err := os.Rename(tmp, f.path); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("fsm: restore: %w", err)
	}
	var err error
	if serr := syncDir(filepath.Dir(f.path)); serr != nil {
		err = fmt.Errorf("fsm: restore: %w", serr)
	}
	if rerr := f.reopen(); rerr != nil {
		return errors.Join(err, rerr) // the old state serves on
	}
	go closeOld(old)
	return err
}

// closeOld closes a state file that Restore or CompactIfWorth replaced, once the snapshots
// that read it are released. Nothing writes to it any more, so a failure
// to close loses nothing.
func closeOld(db *bolt.DB) { _ = db.Close() }

// reopen opens the state file again after Restore or CompactIfWorth closed
// it; the caller holds dbMu.
func (f *FSM) reopen() error {
	if err := GuardFault(f.path, f.openDB); err != nil {
		return fmt.Errorf("fsm: reopen %s: %w", f.path, err)
	}
	return nil
}

func writeSynced(path string, r io.Reader) error {
	out, err := os.OpenFile(path, os.O_CREATE|os.O_TRUNC|os.O_WRONLY, 0o600)
	if err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if _, err := io.Copy(out, r); err != nil {
		out.Close()
		return fmt.Errorf("fsm: restore: read snapshot: %w", err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("fsm: restore: %w", err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("fsm: restore: %w", err)
	}
	return nil
}

// checkStateFile checks that path is a whole jfs state file of this format
// whose lock table loads, without changing it.
func checkStateFile(path string) error {
	if err := CheckBoltFile(path); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	if err := checkPages(path); err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	err := GuardFault(path, func() error {
		db, err := bolt.Open(path, 0o600, &bolt.Options{ReadOnly: true})
		if err != nil {
			return err
		}
		defer db.Close()
		err = db.View(func(tx *bolt.Tx) error {
			b := tx.Bucket(bucketMeta)
			if b == nil {
				return errors.New("no meta bucket")
			}
			v := b.Get(metaVersion)
			if len(v) != 8 || binary.BigEndian.Uint64(v) != formatVersion {
				return fmt.Errorf("format version %x, want %d", v, formatVersion)
			}
			return nil
		})
		if err != nil {
			return err
		}
		_, err = loadTable(db)
		return err
	})
	if err != nil {
		return fmt.Errorf("%w: %v", ErrBadSnapshot, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

// view runs fn in a read transaction of the current state. A page damaged
// since Open makes bolt panic (or fault) on the reader's goroutine; that
// becomes an error (and the read EIO) instead of killing the process.
func (f *FSM) view(fn func(t *txn) error) error {
	f.dbMu.RLock()
	defer f.dbMu.RUnlock()
	if f.db == nil {
		return ErrClosed
	}
	return GuardFault(f.path, func() error {
		return f.db.View(func(tx *bolt.Tx) error {
			t := newTxn(f, tx, 0, 0, 0)
			if err := fn(t); err != nil {
				return err
			}
			return t.err
		})
	})
}

// read runs fn in a read transaction; on a storage failure the response is
// a fresh one with EIO.
func read[R any, PR responseMessage[R]](f *FSM, fn func(t *txn) PR) PR {
	var resp PR
	err := f.view(func(t *txn) error {
		resp = fn(t)
		return nil
	})
	if err != nil {
		resp = PR(new(R))
		setErrno(resp, syscall.EIO)
	}
	return resp
}

// Digest hashes every bucket, key and value of the state except the
// applied index, so that replicas at the same index can be compared. It
// returns the applied index of the state it hashed.
func (f *FSM) Digest() (uint64, [32]byte, error) {
	var sum [32]byte
	var applied uint64
	err := f.view(func(t *txn) error {
		applied = t.metaGet(metaApplied)
		var err error
		sum, err = digestTx(t.tx)
		return err
	})
	if err != nil {
		return 0, sum, fmt.Errorf("fsm: digest: %w", err)
	}
	return applied, sum, nil
}
