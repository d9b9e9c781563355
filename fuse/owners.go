package fuse

import (
	"slices"
	"sync"
)

// Record-lock owners. FUSE carries no flag that tells an OFD lock
// (F_OFD_SETLK, owned by the open file description) from a classic POSIX
// lock (F_SETLK, owned by the process): the kernel sends the same SETLK with
// lock owner fuse_lock_owner_id(file) for the first and
// fuse_lock_owner_id(current->files) for the second. The kernel's close
// tells them apart:
//
//   - every close(2) sends FLUSH with the closing process's owner (files),
//     and releases that process's POSIX locks on the inode;
//   - nothing is sent for the OFD locks at close: they go with the open file
//     description, whose last close sends RELEASE of its fh, and RELEASE
//     carries the file's owner only when the file had a flock.
//
// So the mount remembers, per fh, the owners that took record locks through
// it since their last FLUSH of the inode. An owner seen in FLUSH is a
// process: its locks on the inode are dropped and it is forgotten for every
// fh of the inode. Whatever is left at the RELEASE of fh cannot be a process
// owner (a process that locked through fh closed its descriptor of fh, with
// a FLUSH, before the last close of fh), so it is the file's own OFD owner,
// and its locks are dropped with the release.
//
// The same record tells the wait-for graph which owners may be OFD owners: a
// process has one POSIX owner per mount, so a pid seen locking through two
// owners has at least one OFD owner, and neither may be merged into the
// process (see maybeOFD).

// An OFD owner id is the address of the kernel's struct file, which the
// kernel commonly reuses at once after a close, while RELEASE is sent in
// the background. After close(fd); open(); F_OFD_SETLK, owner X has locked
// through the new fh2 before RELEASE of the old fh1 arrives. So RELEASE of
// fh drops owner X only when X's last lock went through fh (ownerUse.lastFh).
// And a release naming X that is on its way to the cluster (sent in the
// background, see release.go) must reach it before a later lock request of
// X does, or the release would drop the new lock: a lock request of X waits
// for such a release first (releaseOf).

// lockOwners is the mount's record of lock owners. Safe for concurrent use.
type lockOwners struct {
	mu        sync.Mutex
	keys      map[plockKey]*ownerUse         // (ino, owner) that may hold locks on ino
	byFh      map[uint64]map[uint64]struct{} // fh -> owners that locked through it since their FLUSH
	byPid     map[uint32]map[uint64]int      // pid -> owner -> number of its keys locked with pid
	releasing map[plockKey]*releaseFlight    // (ino, owner) named by a release not yet answered
}

// ownerUse is what is known of one (ino, owner).
type ownerUse struct {
	fhs    map[uint64]struct{} // the open files it locked through
	lastFh uint64              // the open file of its latest lock request
	pids   []uint32            // the pids it locked with
}

// releaseFlight is the releases in flight that name one (ino, owner).
type releaseFlight struct {
	n    int           // how many
	done chan struct{} // closed when the last one is answered
}

func newLockOwners() *lockOwners {
	return &lockOwners{keys: map[plockKey]*ownerUse{}, byFh: map[uint64]map[uint64]struct{}{},
		byPid: map[uint32]map[uint64]int{}, releasing: map[plockKey]*releaseFlight{}}
}

// releaseOf returns a channel closed once no release naming owner on ino
// is in flight any more; nil when none is now. A lock request of owner
// waits for it before it is sent.
func (lo *lockOwners) releaseOf(ino, owner uint64) <-chan struct{} {
	lo.mu.Lock()
	defer lo.mu.Unlock()
	if f := lo.releasing[plockKey{ino, owner}]; f != nil {
		return f.done
	}
	return nil
}

// sending marks owners of ino as named by a release on its way, until the
// returned finish is called (once, when the release was answered or
// dropped). Called with lo.mu held.
func (lo *lockOwners) sending(ino uint64, owners []uint64) (finish func()) {
	if len(owners) == 0 {
		return func() {}
	}
	for _, o := range owners {
		k := plockKey{ino, o}
		f := lo.releasing[k]
		if f == nil {
			f = &releaseFlight{done: make(chan struct{})}
			lo.releasing[k] = f
		}
		f.n++
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			lo.mu.Lock()
			defer lo.mu.Unlock()
			for _, o := range owners {
				k := plockKey{ino, o}
				if f := lo.releasing[k]; f != nil {
					if f.n--; f.n == 0 {
						close(f.done)
						delete(lo.releasing, k)
					}
				}
			}
		})
	}
}

// locking records that owner, in process pid, asks for a lock (not an
// unlock) on ino through fh. It is called before the request is sent, so a
// lock granted with its answer lost is still released at close. It reports
// whether owner may be an OFD owner: pid has locked on this mount through
// another owner that still may hold locks, or owner locked for another pid
// (an open file shared by a parent and its child).
func (lo *lockOwners) locking(ino, fh, owner uint64, pid uint32) (maybeOFD bool) {
	lo.mu.Lock()
	defer lo.mu.Unlock()
	k := plockKey{ino, owner}
	u := lo.keys[k]
	if u == nil {
		u = &ownerUse{fhs: map[uint64]struct{}{}}
		lo.keys[k] = u
	}
	u.fhs[fh] = struct{}{}
	u.lastFh = fh
	if lo.byFh[fh] == nil {
		lo.byFh[fh] = map[uint64]struct{}{}
	}
	lo.byFh[fh][owner] = struct{}{}
	if pid != 0 && !slices.Contains(u.pids, pid) {
		u.pids = append(u.pids, pid)
		if lo.byPid[pid] == nil {
			lo.byPid[pid] = map[uint64]int{}
		}
		lo.byPid[pid][owner]++
	}
	if len(u.pids) > 1 {
		return true
	}
	for _, p := range u.pids {
		if len(lo.byPid[p]) > 1 {
			return true
		}
	}
	return false
}

// flushed is FLUSH of ino by owner, a process: it reports whether owner may
// hold locks on ino taken through this mount, and forgets it for ino.
func (lo *lockOwners) flushed(ino, owner uint64) bool {
	lo.mu.Lock()
	defer lo.mu.Unlock()
	return lo.forget(plockKey{ino, owner})
}

// released is the RELEASE of fh, an open file of ino: it returns the owners
// that locked through fh and were not seen in a FLUSH since, and whose
// latest lock request went through fh: the open file's own OFD owners,
// whose locks on ino go with it. They are forgotten. An owner whose latest
// lock went through another fh (its id reused by the kernel for a newer
// open file) is kept, with only fh forgotten. The returned owners, and
// flockOwner when not 0 (the owner a release of a flock names), count as
// named by a release in flight until finish is called.
func (lo *lockOwners) released(ino, fh, flockOwner uint64) (owners []uint64, finish func()) {
	lo.mu.Lock()
	defer lo.mu.Unlock()
	var out []uint64
	for owner := range lo.byFh[fh] {
		k := plockKey{ino, owner}
		if u := lo.keys[k]; u != nil && u.lastFh != fh {
			delete(u.fhs, fh)
			continue
		}
		out = append(out, owner)
	}
	slices.Sort(out)
	for _, owner := range out {
		lo.forget(plockKey{ino, owner})
	}
	delete(lo.byFh, fh)
	named := out
	if flockOwner != 0 && !slices.Contains(out, flockOwner) {
		named = append(slices.Clone(out), flockOwner)
	}
	return out, lo.sending(ino, named)
}

// forget drops k from every index, reporting whether it was known. Called
// with lo.mu held.
func (lo *lockOwners) forget(k plockKey) bool {
	u := lo.keys[k]
	if u == nil {
		return false
	}
	delete(lo.keys, k)
	for fh := range u.fhs {
		if owners := lo.byFh[fh]; owners != nil {
			delete(owners, k.owner)
			if len(owners) == 0 {
				delete(lo.byFh, fh)
			}
		}
	}
	for _, pid := range u.pids {
		owners := lo.byPid[pid]
		if owners[k.owner]--; owners[k.owner] <= 0 {
			delete(owners, k.owner)
		}
		if len(owners) == 0 {
			delete(lo.byPid, pid)
		}
	}
	return true
}
