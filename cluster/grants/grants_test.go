package grants

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var rewrite = flag.Bool("rewrite", false, "rewrite the expected output of testdata/*.txt")

// TestScripts runs the scenarios of testdata/*.txt. Each block is a
// command, a line "----" and the expected output, and ends at a blank
// line. Commands:
//
//	open S                   a new stream for session S (prints its reset)
//	ack S SEQ                S acknowledged up to SEQ
//	closed S                 S's stream ended
//	gone S                   S surely lapsed
//	wild S...                a new leader's coherent sessions
//	endwild                  a new leader's wait is over
//	grant-ino NAME S INO     S asks, before its read, to cache INO
//	grant-entry NAME S P N   S asks to cache entry N in directory P
//	confirm NAME             after the read: does the grant hold?
//	change ID W inos=I,.. entries=P/N,..   entry ID by session W
//	commit ID                entries up to ID are visible
//	state                    marks, holders and pending changes of interest
//	blocks S inos=I,..       must a read by S of the inodes wait?
//
// Commands that complete changes print "done: IDs".
func TestScripts(t *testing.T) {
	files, _ := filepath.Glob("testdata/*.txt")
	if len(files) == 0 {
		t.Fatal("no scripts")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) { runScript(t, f) })
	}
}

func runScript(t *testing.T, path string) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	tb := New(3) // a small fan-out so that scripts can reach it
	toks := map[string]Token{}
	var out strings.Builder
	blocks := strings.Split(strings.TrimSpace(string(b)), "\n\n")
	for _, blk := range blocks {
		lines := strings.Split(blk, "\n")
		var cmdLines []string
		want := ""
		for i, l := range lines {
			if l == "----" {
				want = strings.Join(lines[i+1:], "\n")
				break
			}
			cmdLines = append(cmdLines, l)
		}
		got := ""
		for _, cmd := range cmdLines {
			if strings.HasPrefix(cmd, "#") {
				continue
			}
			got += runCmd(t, tb, toks, cmd)
		}
		got = strings.TrimRight(got, "\n")
		if !*rewrite && got != want {
			t.Errorf("%s:\n%s\ngot:\n%s\nwant:\n%s", path, strings.Join(cmdLines, "\n"), got, want)
		}
		fmt.Fprintf(&out, "%s\n----\n%s\n\n", strings.Join(cmdLines, "\n"), got)
	}
	if *rewrite {
		if err := os.WriteFile(path, []byte(strings.TrimRight(out.String(), "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func num(t *testing.T, s string) uint64 {
	t.Helper()
	v, err := strconv.ParseUint(s, 10, 64)
	if err != nil {
		t.Fatalf("bad number %q", s)
	}
	return v
}

func done(ids []uint64) string {
	if len(ids) == 0 {
		return ""
	}
	return fmt.Sprintf("done: %v\n", ids)
}

func runCmd(t *testing.T, tb *Table, toks map[string]Token, cmd string) string {
	f := strings.Fields(cmd)
	switch f[0] {
	case "open":
		e := tb.OpenStream(num(t, f[1]))
		return fmt.Sprintf("reset seq=%d\n", e.Seq)
	case "closed":
		tb.StreamClosed(num(t, f[1]))
		return ""
	case "ack":
		return done(tb.Ack(num(t, f[1]), num(t, f[2])))
	case "gone":
		return done(tb.Gone(num(t, f[1])))
	case "wild":
		for _, s := range f[1:] {
			tb.Wild(num(t, s))
		}
		return ""
	case "endwild":
		return done(tb.EndWild())
	case "grant-ino":
		tok := tb.GrantIno(num(t, f[2]), num(t, f[3]))
		toks[f[1]] = tok
		if !tok.Valid() {
			return "refused\n"
		}
		return ""
	case "grant-entry":
		tok := tb.GrantEntry(num(t, f[2]), Entry{num(t, f[3]), f[4]})
		toks[f[1]] = tok
		if !tok.Valid() {
			return "refused\n"
		}
		return ""
	case "confirm":
		if tb.Confirm(toks[f[1]]) {
			return "grant\n"
		}
		return "no grant\n"
	case "change":
		var inos []uint64
		var ents []Entry
		for _, a := range f[3:] {
			k, v, _ := strings.Cut(a, "=")
			for _, x := range strings.Split(v, ",") {
				if x == "" {
					continue
				}
				switch k {
				case "inos":
					inos = append(inos, num(t, x))
				case "entries":
					p, n, _ := strings.Cut(x, "/")
					ents = append(ents, Entry{num(t, p), n})
				}
			}
		}
		var s strings.Builder
		for _, e := range tb.Change(num(t, f[1]), num(t, f[2]), inos, ents) {
			fmt.Fprintf(&s, "event s=%d seq=%d inos=%v entries=%v\n", e.Session, e.Seq, e.Inos, e.Entries)
		}
		return s.String()
	case "blocks":
		var inos []uint64
		for _, a := range f[2:] {
			k, v, _ := strings.Cut(a, "=")
			if k == "inos" {
				for _, x := range strings.Split(v, ",") {
					inos = append(inos, num(t, x))
				}
			}
		}
		return fmt.Sprintf("blocks %s: %v\n", f[1], tb.Blocks(num(t, f[1]), inos, nil))
	case "commit":
		return done(tb.Committed(num(t, f[1])))
	case "state":
		var s strings.Builder
		for _, a := range f[1:] {
			k, v, _ := strings.Cut(a, "=")
			switch k {
			case "ino":
				i := num(t, v)
				fmt.Fprintf(&s, "ino %d: marked=%v holders=%d\n", i, tb.InoMarked(i), tb.Holders(i))
			case "entry":
				p, n, _ := strings.Cut(v, "/")
				e := Entry{num(t, p), n}
				fmt.Fprintf(&s, "entry %s: marked=%v holders=%d\n", v, tb.EntryMarked(e), tb.EntryHolders(e))
			case "dir":
				fmt.Fprintf(&s, "dir %s: entry grants=%d\n", v, tb.DirGrants(num(t, v)))
			case "change":
				fmt.Fprintf(&s, "change %s: pending=%v\n", v, tb.Pending(num(t, v)))
			}
		}
		fmt.Fprintf(&s, "waiting for %v\n", tb.Waiting())
		return s.String()
	}
	t.Fatalf("unknown command %q", cmd)
	return ""
}
