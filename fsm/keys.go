package fsm

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"syscall"

	bolt "go.etcd.io/bbolt"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// The bolt layout; DESIGN.md explains it. Every integer in a key is
// big-endian so that bolt's byte order is numeric order.
var (
	bucketMeta       = []byte("meta")       // name -> u64
	bucketInode      = []byte("inode")      // ino -> inode record
	bucketDentry     = []byte("dentry")     // parent ino, name -> ino, cookie
	bucketCookie     = []byte("cookie")     // parent ino, cookie -> ino, name
	bucketSymlink    = []byte("symlink")    // ino -> target
	bucketBlock      = []byte("block")      // ino, block number -> data
	bucketXattr      = []byte("xattr")      // ino, name -> value
	bucketSession    = []byte("session")    // session -> jfspb.Session
	bucketClient     = []byte("client")     // client id -> session
	bucketResult     = []byte("result")     // session, seq -> command type, response
	bucketOpen       = []byte("open")       // ino, session -> open count
	bucketSessOpen   = []byte("sessopen")   // session, ino -> (empty)
	bucketFlock      = []byte("flock")      // ino, session, fh -> type, pid, since
	bucketPlock      = []byte("plock")      // ino -> every POSIX lock, in list order
	bucketSustained  = []byte("sustained")  // ino -> (empty), or linkableTmpfile: unlinked, still open
	bucketMember     = []byte("member")     // node id -> jfspb.Member (addresses)
	bucketFreeing    = []byte("freeing")    // ino, first block -> end block: dead blocks to free
	bucketOpened     = []byte("opened")     // ino -> index of its last logged open as an existing inode (leaderOpens)
	bucketLockWait   = []byte("lockwait")   // ino, id -> queued lock request (lockwait.go)
	bucketWaitKey    = []byte("waitkey")    // session, seq -> ino, id of its queued request
	bucketDeleg      = []byte("deleg")      // ino -> session its locks are delegated to (deleg.go)
	bucketDelegSess  = []byte("delegsess")  // session, ino -> (empty): the same, by session
	bucketDelegFence = []byte("delegfence") // ino -> until ns: an evicted holder may still answer locally

	allBuckets = [][]byte{
		bucketMeta, bucketInode, bucketDentry, bucketCookie, bucketSymlink,
		bucketBlock, bucketXattr, bucketSession, bucketClient, bucketResult,
		bucketOpen, bucketSessOpen, bucketFlock, bucketPlock, bucketSustained,
		bucketMember, bucketFreeing, bucketOpened, bucketLockWait, bucketWaitKey,
		bucketDeleg, bucketDelegSess, bucketDelegFence,
	}

	metaVersion    = []byte("version")
	metaApplied    = []byte("applied")
	metaNextIno    = []byte("nextino")
	metaUsedBytes  = []byte("usedbytes")
	metaUsedInodes = []byte("usedinodes")
	metaCreated    = []byte("created")
)

func u64(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }

func key2(a, b uint64) []byte {
	k := make([]byte, 16)
	binary.BigEndian.PutUint64(k, a)
	binary.BigEndian.PutUint64(k[8:], b)
	return k
}

func key3(a, b, c uint64) []byte {
	return binary.BigEndian.AppendUint64(key2(a, b), c)
}

func keyName(ino uint64, name []byte) []byte {
	k := make([]byte, 8, 8+len(name))
	binary.BigEndian.PutUint64(k, ino)
	return append(k, name...)
}

// txn is one bolt transaction seen through the layout. In apply it also
// carries the entry's index, timestamp and session. Storage errors (which
// bolt reports only for misuse or a failing disk) are kept in err, the
// first one winning, and stop the node.
type txn struct {
	f       *FSM
	tx      *bolt.Tx
	index   uint64
	now     int64
	session uint64
	// leaderOpens: the entry's leader keeps open files in memory
	// (LogEntry.leader_opens); see openFile and orphan.
	leaderOpens bool
	// freeHint is the FreeHint of the removal being applied, if any.
	freeHint *jfspb.FreeHint
	seq      uint64 // the entry's seq, in apply
	err      error
}

func newTxn(f *FSM, tx *bolt.Tx, index uint64, now int64, session uint64) *txn {
	return &txn{f: f, tx: tx, index: index, now: now, session: session}
}

func (t *txn) b(name []byte) *bolt.Bucket { return t.tx.Bucket(name) }

func (t *txn) fail(err error) {
	if err != nil && t.err == nil {
		t.err = err
	}
}

// put stores v under k. A nil v is stored as an empty value: bolt keeps
// the slice it is given until the commit, and its Get answers nil for a
// key put with a nil value in the same transaction, but a non-nil empty
// slice once the transaction is committed. A presence check (has, a Get
// compared with nil) would then depend on whether the put and the check
// fell into one transaction, which is how raft batched the entries on each
// node: replicas would diverge.
func (t *txn) put(bucket, k, v []byte) {
	if v == nil {
		v = []byte{}
	}
	t.noteChange(bucket, k)
	t.fail(t.b(bucket).Put(k, v))
}

func (t *txn) del(bucket, k []byte) {
	t.noteChange(bucket, k)
	t.fail(t.b(bucket).Delete(k))
}

// noteChange records, for the change listener, that the entry being
// applied writes an inode record or a directory entry. Every write of
// those buckets goes through put and del, so no command can change what a
// mount caches without it being noted here.
func (t *txn) noteChange(bucket, k []byte) {
	c := t.f.curChange
	if c == nil {
		return
	}
	switch {
	case bytes.Equal(bucket, bucketInode) && len(k) == 8:
		c.Inos = append(c.Inos, binary.BigEndian.Uint64(k))
	case bytes.Equal(bucket, bucketDentry) && len(k) > 8:
		c.Entries = append(c.Entries, EntryKey{Parent: binary.BigEndian.Uint64(k), Name: string(k[8:])})
	}
}

// get returns a copy of the value of k, or nil.
func (t *txn) get(bucket, k []byte) []byte {
	v := t.b(bucket).Get(k)
	if v == nil {
		return nil
	}
	return bytes.Clone(v)
}

func (t *txn) has(bucket, k []byte) bool { return t.b(bucket).Get(k) != nil }

// hasPrefix reports whether any key starts with p.
func (t *txn) hasPrefix(bucket, p []byte) bool {
	k, _ := t.b(bucket).Cursor().Seek(p)
	return k != nil && bytes.HasPrefix(k, p)
}

// scan calls fn for every key with prefix p, in order, with copies of key
// and value, until fn returns false. fn must not change the bucket.
func (t *txn) scan(bucket, p []byte, fn func(k, v []byte) bool) {
	t.scanFrom(bucket, p, p, fn)
}

// scanFrom is scan starting at key start (which has prefix p).
func (t *txn) scanFrom(bucket, p, start []byte, fn func(k, v []byte) bool) {
	c := t.b(bucket).Cursor()
	for k, v := c.Seek(start); k != nil && bytes.HasPrefix(k, p); k, v = c.Next() {
		if !fn(bytes.Clone(k), bytes.Clone(v)) {
			return
		}
	}
}

// deletePrefix deletes every key that starts with p and returns how many.
func (t *txn) deletePrefix(bucket, p []byte) int {
	var keys [][]byte
	t.scan(bucket, p, func(k, _ []byte) bool {
		keys = append(keys, k)
		return true
	})
	for _, k := range keys {
		t.del(bucket, k)
	}
	return len(keys)
}

func (t *txn) metaGet(name []byte) uint64 {
	v := t.b(bucketMeta).Get(name)
	if len(v) != 8 {
		return 0
	}
	return binary.BigEndian.Uint64(v)
}

func (t *txn) metaPut(name []byte, v uint64) { t.put(bucketMeta, name, u64(v)) }

// metaAdd adds delta (which may be negative) to a counter, never below 0.
func (t *txn) metaAdd(name []byte, delta int64) {
	v := t.metaGet(name)
	if delta < 0 && uint64(-delta) > v {
		v = 0
	} else {
		v = uint64(int64(v) + delta)
	}
	t.metaPut(name, v)
}

// eno converts an errno for a response field.
func eno(e syscall.Errno) int32 { return int32(e) }

func errCorruptRecord(kind string, id uint64) error {
	return fmt.Errorf("fsm: corrupt %s record %d", kind, id)
}
