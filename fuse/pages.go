package fuse

import (
	"sync"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Page caches across opens (coherent mode). Close-to-open asks that an
// open sees every write closed before it, anywhere; dropping the kernel's
// pages at every open gives that, and costs a read of the whole file from
// the cluster at every open. Instead an open keeps the pages
// (FOPEN_KEEP_CACHE) when the file's data version, taken from the open's
// answer, is the one this mount saw at its last open of the file: nothing
// changed the file since, so the pages, which hold data no older than that
// open's, are the file's data. The version is (size, mtime, ctime): every
// change of a file's data stamps ctime with its log entry's time (and
// ctime cannot be set through the kernel's requests, which send FATTR_CTIME
// only with a write-back cache, which jfs does not use). An open that finds
// another version drops the pages as before and records the new version.
//
// Pages read while the file is open on this mount may be newer than the
// version recorded at the open (another mount wrote meanwhile); then the
// cluster's version has moved on too, and the next open drops them. This
// mount's own writes move the version as well, so the open after them
// drops pages it did not need to: a miss, never a stale read. A lock grant
// still drops the pages (locks.go). The record is forgotten with the
// kernel's inode (FORGET), whose pages go with it.
type dataVersions struct {
	m sync.Map // ino -> dataVersion
}

type dataVersion struct {
	size           uint64
	mtimeNs, ctime int64
}

// unchanged records a's data version for ino and reports whether it is
// the one recorded at the previous open. A missing attribute says no.
func (d *dataVersions) unchanged(ino uint64, a *jfspb.Attr) bool {
	if a == nil {
		d.m.Delete(ino)
		return false
	}
	v := dataVersion{size: a.GetSize(), mtimeNs: a.GetMtimeNs(), ctime: a.GetCtimeNs()}
	old, ok := d.m.Swap(ino, v)
	return ok && old.(dataVersion) == v
}

// forget drops the record of ino: the kernel evicted the inode.
func (d *dataVersions) forget(ino uint64) { d.m.Delete(ino) }

// Forget is the kernel's eviction of an inode (FORGET, and each one of a
// BATCH_FORGET): its pages are gone, and so is what this mount knew of
// them. Node ids are the cluster's inode numbers, so nothing else is kept.
func (fs *FS) Forget(nodeid, nlookup uint64) {
	fs.pages.forget(nodeid)
}
