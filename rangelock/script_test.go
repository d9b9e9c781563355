package rangelock

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The script tests read testdata/graph/*.txt and testdata/locks/*.txt, in
// the style of etcd-io/raft's interaction tests: each block is a command
// line, a "----" line and the expected output, up to a blank line. Lines
// starting with "#" are comments. With -rewrite the expected output is
// replaced with what the code does.

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/graph and testdata/locks scripts")

type scriptBlock struct {
	comments []string // lines before the command
	cmd      string
	want     string
}

func mustParseScript(t *testing.T, path string) []scriptBlock {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	var blocks []scriptBlock
	var cur scriptBlock
	for i := 0; i < len(lines); i++ {
		line := lines[i]
		switch {
		case strings.HasPrefix(line, "#") || strings.TrimSpace(line) == "":
			cur.comments = append(cur.comments, line)
		default:
			cur.cmd = line
			if i+1 >= len(lines) || lines[i+1] != "----" {
				t.Fatalf("%s:%d: command %q not followed by ----", path, i+1, line)
			}
			i += 2
			var want []string
			for ; i < len(lines) && lines[i] != ""; i++ {
				want = append(want, lines[i])
			}
			cur.want = strings.Join(want, "\n")
			blocks = append(blocks, cur)
			cur = scriptBlock{}
			if i < len(lines) {
				i-- // the blank line is a separator; keep it as a comment line
			}
		}
	}
	if len(cur.comments) > 0 {
		blocks = append(blocks, cur) // trailing comments
	}
	return blocks
}

// mustRunScripts runs every script in dir with a fresh run function each.
func mustRunScripts(t *testing.T, dir string, newRun func() func(cmd string) (string, error)) {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no scripts in testdata/%s", dir)
	}
	for _, path := range files {
		t.Run(filepath.Base(path), func(t *testing.T) {
			run := newRun()
			var out strings.Builder
			for _, b := range mustParseScript(t, path) {
				for _, c := range b.comments {
					out.WriteString(c + "\n")
				}
				if b.cmd == "" {
					continue
				}
				got, err := run(b.cmd)
				if err != nil {
					got = "error: " + err.Error()
				}
				got = strings.TrimRight(got, "\n")
				if got == "" {
					got = "ok"
				}
				if !*rewrite && got != b.want {
					t.Errorf("%s: %s\ngot:\n%s\nwant:\n%s", path, b.cmd, got, b.want)
				}
				fmt.Fprintf(&out, "%s\n----\n%s\n", b.cmd, got)
			}
			if *rewrite {
				if err := os.WriteFile(path, []byte(out.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// scriptOwners names owners: a lowercase name is owner (1, n) with n
// ordered as the names are, and "S/ID" is owner (S, ID).
type scriptOwners struct{}

func (scriptOwners) parse(s string) (Owner, error) {
	if sess, id, ok := strings.Cut(s, "/"); ok {
		a, err1 := strconv.ParseUint(sess, 10, 64)
		b, err2 := strconv.ParseUint(id, 10, 64)
		if err1 != nil || err2 != nil {
			return Owner{}, fmt.Errorf("bad owner %q", s)
		}
		return Owner{a, b}, nil
	}
	if len(s) == 0 || len(s) > 12 {
		return Owner{}, fmt.Errorf("bad owner %q", s)
	}
	var id uint64
	for i := range 12 {
		id *= 27
		if i < len(s) {
			if s[i] < 'a' || s[i] > 'z' {
				return Owner{}, fmt.Errorf("bad owner %q", s)
			}
			id += uint64(s[i]-'a') + 1
		}
	}
	return Owner{1, id}, nil
}

func (scriptOwners) name(o Owner) string {
	if o.Session == 1 && o.ID > 0 {
		var b []byte
		for id := o.ID; len(b) < 12; id /= 27 {
			b = append(b, byte(id%27))
		}
		slices.Reverse(b)
		var s strings.Builder
		for _, c := range b {
			if c == 0 {
				break
			}
			s.WriteByte('a' + c - 1)
		}
		if s.Len() > 0 {
			return s.String()
		}
	}
	return o.String()
}

func (so scriptOwners) names(os []Owner) string {
	s := make([]string, len(os))
	for i, o := range os {
		s[i] = so.name(o)
	}
	return strings.Join(s, " ")
}

// parseWait parses "WAITER -> B1 B2 ...".
func (so scriptOwners) parseWait(args []string) (Owner, []Owner, error) {
	if len(args) < 2 || args[1] != "->" {
		return Owner{}, nil, fmt.Errorf("want WAITER -> BLOCKERS, got %q", strings.Join(args, " "))
	}
	w, err := so.parse(args[0])
	if err != nil {
		return Owner{}, nil, err
	}
	var bs []Owner
	for _, a := range args[2:] {
		b, err := so.parse(a)
		if err != nil {
			return Owner{}, nil, err
		}
		bs = append(bs, b)
	}
	return w, bs, nil
}

// TestGraphScripts runs testdata/graph/*.txt. Commands:
//
//	wait ID W -> B...   WouldCycle, then Add unless it closes a cycle
//	add ID W -> B...    Add without the check
//	check W -> B...     WouldCycle only
//	remove ID           Remove
//	cycles              Cycles
//	waits W             WaitsOf
func TestGraphScripts(t *testing.T) {
	var so scriptOwners
	cycle := func(c []Owner) string {
		if c == nil {
			return "no cycle"
		}
		return "cycle: " + so.names(c)
	}
	mustRunScripts(t, "graph", func() func(string) (string, error) {
		g := NewGraph()
		return func(line string) (string, error) {
			f := strings.Fields(line)
			switch {
			case (f[0] == "wait" || f[0] == "add") && len(f) >= 4:
				id, err := strconv.ParseUint(f[1], 10, 64)
				if err != nil {
					return "", err
				}
				w, bs, err := so.parseWait(f[2:])
				if err != nil {
					return "", err
				}
				if f[0] == "wait" {
					if c := g.WouldCycle(w, bs); c != nil {
						return "refused, " + cycle(c), nil
					}
				}
				return "", g.Add(id, w, bs)
			case f[0] == "check" && len(f) >= 3:
				w, bs, err := so.parseWait(f[1:])
				if err != nil {
					return "", err
				}
				return cycle(g.WouldCycle(w, bs)), nil
			case f[0] == "remove" && len(f) == 2:
				id, err := strconv.ParseUint(f[1], 10, 64)
				if err != nil {
					return "", err
				}
				if !g.Remove(id) {
					return "not found", nil
				}
				return "removed", nil
			case f[0] == "cycles" && len(f) == 1:
				cs := g.Cycles()
				if len(cs) == 0 {
					return "none", nil
				}
				var out []string
				for _, c := range cs {
					out = append(out, so.names(c))
				}
				return strings.Join(out, "\n"), nil
			case f[0] == "waits" && len(f) == 2:
				o, err := so.parse(f[1])
				if err != nil {
					return "", err
				}
				return fmt.Sprint(g.WaitsOf(o)), nil
			}
			return "", fmt.Errorf("unknown command %q", line)
		}
	})
}

// TestLockScripts runs testdata/locks/*.txt against a Table. Commands:
//
//	set INO O TYPE START LEN     F_SETLK (TYPE read, write or unlock)
//	test INO O TYPE START LEN    F_GETLK
//	release INO O                ReleasePosix
//	flock INO O TYPE             flock(2) (read LOCK_SH, write LOCK_EX, unlock)
//	session S                    ReleaseSession
//	locks INO                    Locks, one a line
//	flocks INO                   Flocks, one a line
func TestLockScripts(t *testing.T) {
	var so scriptOwners
	mustRunScripts(t, "locks", func() func(string) (string, error) {
		tb := NewTable()
		return func(line string) (string, error) {
			l, err := parseLockLine(so, line)
			if err != nil {
				return "", err
			}
			f, ino, o, typ, rng, granted := l.f, l.ino, l.o, l.typ, l.rng, so.granted
			switch {
			case f[0] == "set" && len(f) == 6:
				r, err := rng()
				if err != nil {
					return "", err
				}
				c, err := tb.Set(ino, o, typ, r, pidOf(o))
				return granted(c), err
			case f[0] == "test" && len(f) == 6:
				r, err := rng()
				if err != nil {
					return "", err
				}
				l, found, err := tb.Test(ino, o, typ, r)
				if err != nil || !found {
					return "unlocked", err
				}
				return fmt.Sprintf("%s %s %s", so.name(l.Owner), l.Type, l.Range), nil
			case f[0] == "release" && len(f) == 3:
				return fmt.Sprint("released: ", tb.ReleasePosix(ino, o)), nil
			case f[0] == "flock" && len(f) == 4:
				c, err := tb.Flock(ino, o, typ)
				return granted(c), err
			case f[0] == "session" && len(f) == 2:
				return fmt.Sprint("inodes: ", tb.ReleaseSession(ino)), nil
			case f[0] == "locks" && len(f) == 2:
				var out []string
				for _, l := range tb.Locks(ino) {
					out = append(out, fmt.Sprintf("%s %s %s", so.name(l.Owner), l.Type, l.Range))
				}
				if len(out) == 0 {
					return "none", nil
				}
				return strings.Join(out, "\n"), nil
			case f[0] == "flocks" && len(f) == 2:
				var out []string
				for _, fl := range tb.Flocks(ino) {
					out = append(out, fmt.Sprintf("%s %s", so.name(fl.Owner), fl.Type))
				}
				if len(out) == 0 {
					return "none", nil
				}
				return strings.Join(out, "\n"), nil
			}
			return "", fmt.Errorf("unknown command %q", line)
		}
	})
}

// scriptTypes names the lock types of the lock and queue scripts.
var scriptTypes = map[string]Type{"unlock": Unlock, "read": Read, "write": Write}

// lockLine is a line of the lock and queue scripts: VERB INO [O [TYPE
// [START LEN]]], its fields parsed where present.
type lockLine struct {
	f   []string
	ino uint64
	o   Owner
	typ Type // 255 when absent
}

// parseLockLine parses line; the third field is an owner unless the verb
// is one of notOwner.
func parseLockLine(so scriptOwners, line string, notOwner ...string) (lockLine, error) {
	l := lockLine{f: strings.Fields(line), typ: Type(255)}
	ino, err := l.arg(1)
	if err != nil {
		return l, err
	}
	l.ino = uint64(ino)
	if len(l.f) > 2 && !slices.Contains(notOwner, l.f[0]) {
		if l.o, err = so.parse(l.f[2]); err != nil {
			return l, err
		}
	}
	if len(l.f) > 3 {
		var ok bool
		if l.typ, ok = scriptTypes[l.f[3]]; !ok {
			return l, fmt.Errorf("bad type %q", l.f[3])
		}
	}
	return l, nil
}

// arg is the number in field i.
func (l lockLine) arg(i int) (int64, error) {
	if i >= len(l.f) {
		return 0, fmt.Errorf("missing argument %d", i)
	}
	return strconv.ParseInt(l.f[i], 10, 64)
}

// rng is the range of fields 4 and 5 (START LEN).
func (l lockLine) rng() (Range, error) {
	start, err := l.arg(4)
	if err != nil {
		return Range{}, err
	}
	length, err := l.arg(5)
	if err != nil {
		return Range{}, err
	}
	return NewRange(start, length)
}

// granted is the answer to a lock request: granted, or its conflicts.
func (so scriptOwners) granted(c []Owner) string {
	if len(c) == 0 {
		return "granted"
	}
	return "conflict: " + so.names(c)
}
