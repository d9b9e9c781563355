package fsm

import (
	"encoding/binary"
	"slices"
)

// Path returns one path of ino from the root, for operators ("/" for the
// root, "" when the inode has no name left, e.g. unlinked but still open).
// A directory's path follows its parent links; a file's takes the first
// entry naming it, which costs a scan of every directory entry: this is for
// jfsctl, not for the data path.
func (f *FSM) Path(ino uint64) string {
	var path string
	f.view(func(t *txn) error {
		var parts [][]byte
		cur := ino
		for depth := 0; cur != RootIno && depth < 4096; depth++ {
			parent, name, ok := t.nameOf(cur)
			if !ok {
				return nil
			}
			parts = append(parts, name)
			cur = parent
		}
		slices.Reverse(parts)
		path = "/"
		for i, p := range parts {
			if i > 0 {
				path += "/"
			}
			path += string(p)
		}
		return nil
	})
	return path
}

// nameOf finds an entry naming ino: through the parent link of a directory,
// by scanning every entry otherwise.
func (t *txn) nameOf(ino uint64) (parent uint64, name []byte, ok bool) {
	var prefix []byte
	if n := t.inode(ino); n == nil {
		return 0, nil, false
	} else if n.Parent != 0 {
		prefix = u64(n.Parent)
	}
	t.scan(bucketDentry, prefix, func(k, v []byte) bool {
		if len(v) >= 8 && binary.BigEndian.Uint64(v) == ino {
			parent, name, ok = binary.BigEndian.Uint64(k), slices.Clone(k[8:]), true
			return false
		}
		return true
	})
	return parent, name, ok
}
