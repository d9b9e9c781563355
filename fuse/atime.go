package fuse

import (
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Access times under Linux's relatime rule.
//
// The kernel marks FUSE inodes S_NOATIME and leaves atime to the file
// system. A read answers the file's attributes with its data, and only when
// they say that relatime wants the atime moved (atimeDue) does the mount
// send a TouchAtime, which the cluster applies under the same rule with its
// own clock. A read right after a touched one therefore costs no log entry;
// a file costs one after each change and once a day while it is read.
// Touches of one inode do not overlap: a read that finds one in flight does
// not send its own.

// atimeDayNs is relatime's longest interval between atime updates.
const atimeDayNs = int64(24 * time.Hour)

// atimeDue reports whether a read at now (Unix ns) must update a's atime:
// the atime is not later than the mtime or the ctime, or is at least a day
// old. It is the state machine's rule (fsm.relatimeDue).
func atimeDue(a *jfspb.Attr, now int64) bool {
	at := a.GetAtimeNs()
	return at <= a.GetMtimeNs() || at <= a.GetCtimeNs() || now-at >= atimeDayNs
}

// touchAtime records a read of ino whose attributes, as the read saw them,
// are a (nil: unknown, nothing is done; nothing either with NoAtime). It returns when the cluster has
// applied the touch, so that a stat after the read shows it; the kernel
// drops its cached atime after each read. A failure is logged and does not
// fail the read.
func (fs *FS) touchAtime(ino uint64, a *jfspb.Attr) {
	if a == nil || fs.opts.NoAtime || !atimeDue(a, time.Now().UnixNano()) {
		return
	}
	if _, busy := fs.touching.LoadOrStore(ino, struct{}{}); busy {
		return
	}
	defer fs.touching.Delete(ino)
	start := time.Now()
	r, err := fs.c.TouchAtime(ctx(), &jfspb.TouchAtimeRequest{Ino: ino})
	fs.opts.Metrics.observeMeta("touchatime", time.Since(start))
	switch {
	case err != nil:
		fs.status("touchatime", err, 0) // logs it
	case r.GetErrno() != 0:
		fs.log.Debug("atime not updated", "ino", ino, "errno", r.GetErrno())
	}
}
