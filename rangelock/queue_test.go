package rangelock

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// queueModel drives a Table and per-inode wait queues the way the state
// machine does: every change that may free a range is followed by Grant on
// the inodes it touched.
type queueModel struct {
	so     scriptOwners
	tb     *Table
	queues map[uint64][]Waiter
	nextID uint64
}

// grant runs Grant on ino and names the woken waiters.
func (m *queueModel) grant(ino uint64) string {
	q := m.queues[ino]
	pos := m.tb.Grant(ino, q)
	if len(pos) == 0 {
		return ""
	}
	var woke []string
	for _, i := range pos {
		woke = append(woke, fmt.Sprintf("%s#%d", m.so.name(q[i].Owner), q[i].ID))
	}
	var rest []Waiter
	for i, w := range q {
		if !slices.Contains(pos, i) {
			rest = append(rest, w)
		}
	}
	m.queues[ino] = rest
	return "\nwoke: " + strings.Join(woke, " ")
}

// TestQueueScripts runs testdata/queue/*.txt. Commands:
//
//	wait INO O TYPE START LEN    blocking F_SETLKW: granted, or queued #ID
//	fwait INO O TYPE             blocking flock (read LOCK_SH, write LOCK_EX)
//	set INO O TYPE START LEN     F_SETLK, then Grant on INO
//	flock INO O TYPE             flock(2) without blocking, then Grant on INO
//	release INO O                ReleasePosix, then Grant on INO
//	cancel INO ID                the waiter ID leaves the queue, then Grant on INO
//	session S                    ReleaseSession and drop S's waiters, then Grant everywhere
//	queue INO                    the queue, one waiter a line
func TestQueueScripts(t *testing.T) {
	mustRunScripts(t, "queue", func() func(string) (string, error) {
		m := &queueModel{tb: NewTable(), queues: map[uint64][]Waiter{}}
		return func(line string) (string, error) {
			l, err := parseLockLine(m.so, line, "cancel")
			if err != nil {
				return "", err
			}
			f, ino, o, typ, rng, granted := l.f, l.ino, l.o, l.typ, l.rng, m.so.granted
			switch {
			case (f[0] == "wait" && len(f) == 6) || (f[0] == "fwait" && len(f) == 4):
				w := Waiter{Owner: o, Flock: f[0] == "fwait", Type: typ, Range: Whole, Pid: pidOf(o)}
				if !w.Flock {
					if w.Range, err = rng(); err != nil {
						return "", err
					}
				}
				wait, err := m.tb.MustQueue(ino, w, m.queues[ino])
				if err != nil {
					return "", err
				}
				if !wait {
					if w.Flock {
						_, err = m.tb.Flock(ino, o, typ)
					} else {
						_, err = m.tb.Set(ino, o, typ, w.Range, w.Pid)
					}
					return "granted" + m.grant(ino), err
				}
				if w.Flock {
					// A conversion that waits has dropped the old flock, as
					// on Linux.
					m.tb.Flock(ino, o, Unlock)
				}
				m.nextID++
				w.ID = m.nextID
				m.queues[ino] = append(m.queues[ino], w)
				return fmt.Sprintf("queued #%d", w.ID) + m.grant(ino), nil
			case f[0] == "set" && len(f) == 6:
				r, err := rng()
				if err != nil {
					return "", err
				}
				c, err := m.tb.Set(ino, o, typ, r, pidOf(o))
				return granted(c) + m.grant(ino), err
			case f[0] == "flock" && len(f) == 4:
				c, err := m.tb.Flock(ino, o, typ)
				return granted(c) + m.grant(ino), err
			case f[0] == "release" && len(f) == 3:
				return fmt.Sprint("released: ", m.tb.ReleasePosix(ino, o)) + m.grant(ino), nil
			case f[0] == "cancel" && len(f) == 3:
				id, err := strconv.ParseUint(f[2], 10, 64)
				if err != nil {
					return "", err
				}
				q := m.queues[ino]
				i := slices.IndexFunc(q, func(w Waiter) bool { return w.ID == id })
				if i < 0 {
					return "not queued", nil
				}
				m.queues[ino] = slices.Delete(q, i, i+1)
				return "cancelled" + m.grant(ino), nil
			case f[0] == "session" && len(f) == 2:
				m.tb.ReleaseSession(ino)
				var inos []uint64
				for i, q := range m.queues {
					m.queues[i] = slices.DeleteFunc(q, func(w Waiter) bool { return w.Owner.Session == ino })
					inos = append(inos, i)
				}
				slices.Sort(inos)
				out := "ended"
				for _, i := range inos {
					out += m.grant(i)
				}
				return out, nil
			case f[0] == "queue" && len(f) == 2:
				var out []string
				for _, w := range m.queues[ino] {
					s := fmt.Sprintf("#%d %s %s", w.ID, m.so.name(w.Owner), w.Type)
					if w.Flock {
						s += " flock"
					} else {
						s += " " + w.Range.String()
					}
					out = append(out, s)
				}
				if len(out) == 0 {
					return "empty", nil
				}
				return strings.Join(out, "\n"), nil
			}
			return "", fmt.Errorf("unknown command %q", line)
		}
	})
}
