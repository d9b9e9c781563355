package fuse

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
)

// The caller's identity. The cluster checks permissions itself (see
// fsm/access.go), so each request that needs a check carries the uid, gid
// and supplementary groups of the process that made it. FUSE passes the
// uid, gid and pid (the thread's) but not the groups; they are read from
// the Groups: line of /proc/PID/status and kept for credTTL per pid, so a
// storm of lookups from one process reads the file once a second, not per
// request. A process that changed its groups (setgroups) within credTTL is
// seen with its old ones until the entry lapses; the kernel has already
// checked with the new ones (default_permissions), so at worst the cluster
// refuses what the kernel allowed, for up to credTTL. A process gone before
// its groups were read, and requests the kernel makes on its own (pid 0),
// have none.

// credTTL is how long the groups read for a pid are used.
const credTTL = time.Second

// credCacheMax bounds the pids kept; past it, lapsed entries are dropped.
const credCacheMax = 4096

type credEntry struct {
	uid, gid uint32
	cred     *jfspb.Cred // shared by every request of the entry: never modified
	expires  time.Time
}

// credCache maps a pid to the credentials last built for it.
type credCache struct {
	mu   sync.Mutex
	pids map[uint32]credEntry
	// groups reads a pid's supplementary groups (procGroups; tests replace it).
	groups func(pid uint32) []uint32
}

func newCredCache() *credCache {
	return &credCache{pids: map[uint32]credEntry{}, groups: procGroups}
}

// cred returns the credentials of caller.
func (cc *credCache) cred(caller *fuse.Caller, now time.Time) *jfspb.Cred {
	uid, gid, pid := caller.Uid, caller.Gid, caller.Pid
	cc.mu.Lock()
	e, ok := cc.pids[pid]
	cc.mu.Unlock()
	if ok && e.uid == uid && e.gid == gid && now.Before(e.expires) {
		return e.cred
	}
	c := &jfspb.Cred{Uid: uid, Gid: gid}
	if pid != 0 {
		for _, g := range cc.groups(pid) {
			if g != gid {
				c.Groups = append(c.Groups, g)
			}
		}
	}
	cc.mu.Lock()
	if len(cc.pids) >= credCacheMax {
		for p, old := range cc.pids {
			if !now.Before(old.expires) {
				delete(cc.pids, p)
			}
		}
	}
	if len(cc.pids) < credCacheMax {
		cc.pids[pid] = credEntry{uid: uid, gid: gid, cred: c, expires: now.Add(credTTL)}
	}
	cc.mu.Unlock()
	return c
}

// procGroups reads the supplementary groups of pid from /proc; nil when
// the process is gone or the line cannot be read.
func procGroups(pid uint32) []uint32 {
	f, err := os.Open("/proc/" + strconv.FormatUint(uint64(pid), 10) + "/status")
	if err != nil {
		return nil
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		line := s.Bytes()
		if rest, ok := bytes.CutPrefix(line, []byte("Groups:")); ok {
			return parseGroups(rest)
		}
	}
	return nil
}

// parseGroups parses the numbers of a Groups: line.
func parseGroups(b []byte) []uint32 {
	var out []uint32
	for _, f := range bytes.Fields(b) {
		g, err := strconv.ParseUint(string(f), 10, 32)
		if err != nil {
			return out
		}
		out = append(out, uint32(g))
	}
	return out
}

// as returns the context of a request made by caller: its requests carry
// the caller's credentials.
func (fs *FS) as(caller *fuse.Caller) context.Context {
	return client.WithCred(context.Background(), fs.creds.cred(caller, time.Now()))
}

// An open file acts with the credentials of the process that opened it, as
// a descriptor does in the kernel: reads, writes, fallocate and locks
// through fh carry the opener's identity, whoever makes them. A daemon that
// opens its log as root and writes to it after dropping privileges, and the
// kernel's write-back of a mapping (made with no caller at all), go on
// working; the opener passed the open's check (MayOpen) for the access the
// descriptor has.

// openAs returns the context and credentials of an open by caller; keep
// the credentials with openedAs once the open succeeded.
func (fs *FS) openAs(caller *fuse.Caller) (context.Context, *jfspb.Cred) {
	c := fs.creds.cred(caller, time.Now())
	return client.WithCred(context.Background(), c), c
}

// openedAs records that fh was opened with credentials c.
func (fs *FS) openedAs(fh uint64, c *jfspb.Cred) { fs.fhCreds.Store(fh, c) }

// asOpener returns the context of a request through fh: the opener's
// credentials, or caller's for a handle the mount does not know.
func (fs *FS) asOpener(fh uint64, caller *fuse.Caller) context.Context {
	if c, ok := fs.fhCreds.Load(fh); ok {
		return client.WithCred(context.Background(), c.(*jfspb.Cred))
	}
	if caller == nil {
		// No caller (buffered data sent later) and no opener on record:
		// the mount's own identity.
		return ctx()
	}
	return fs.as(caller)
}

// closedAs forgets the credentials of fh, at its release.
func (fs *FS) closedAs(fh uint64) { fs.fhCreds.Delete(fh) }
