package main

import (
	"bytes"
	"math"
	"os"
	"strings"
	"testing"
	"time"
)

func TestParseLogLine(t *testing.T) {
	e, err := parseLogLine("2024.01.15 10:23:45.123456 [uid:1000,gid:100,pid:12345] lookup (1,a b): - no such file or directory <0.001234>")
	if err != nil {
		t.Fatal(err)
	}
	want := logEntry{at: time.Date(2024, 1, 15, 10, 23, 45, 123456000, time.Local), uid: 1000, gid: 100, pid: 12345,
		op: "lookup", args: "1,a b", result: "no such file or directory", dur: 0.001234}
	if e != want {
		t.Errorf("got %+v\nwant %+v", e, want)
	}
	e, err = parseLogLine("2024.01.15 10:23:45.123456 [uid:0,gid:0,pid:1] getattr (2): (2,[-rw-r--r--:0100644,1,0,0,1,2,3,4]) - OK <1.500000>")
	if err != nil || e.op != "getattr" || e.args != "2" || e.result != "OK" || e.dur != 1.5 {
		t.Errorf("with details: %+v %v", e, err)
	}
	// A name with " - " in it: the result is after the last one.
	e, err = parseLogLine("2024.01.15 10:23:45.123456 [uid:0,gid:0,pid:1] unlink (1,a - b) - OK <0.000100>")
	if err != nil || e.op != "unlink" || e.args != "1,a - b" || e.result != "OK" {
		t.Errorf("name with a dash: %+v %v", e, err)
	}
	for _, bad := range []string{
		"",
		"hello",
		"2024.01.15 10:23:45 [uid:0,gid:0,pid:1] getattr (2): - OK <0.1>",
		"2024.01.15 10:23:45.123456 [uid:0,gid:0,pid:1] getattr (2): - OK",
		"2024.01.15 10:23:45.123456 [uid:x,gid:0,pid:1] getattr (2): - OK <0.1>",
		"2024.01.15 10:23:45.123456 [uid:0,gid:0,pid:1] getattr (2): OK <0.1>",
	} {
		if _, err := parseLogLine(bad); err == nil {
			t.Errorf("parsed %q", bad)
		}
	}
}

func TestProfileRecordedLog(t *testing.T) {
	f, err := os.Open("testdata/access.log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p := newProfile()
	if err := p.read(f); err != nil {
		t.Fatal(err)
	}
	if p.lines != 8 || p.malformed != 2 {
		t.Errorf("%d lines, %d malformed; want 8 and 2", p.lines, p.malformed)
	}
	for op, want := range map[string]opStats{
		"getattr": {count: 3, total: 0.006},
		"lookup":  {count: 2, errors: 1, total: 0.0012},
		"open":    {count: 1, total: 0.004},
		"read":    {count: 1, total: 0.01},
		"release": {count: 1, total: 0.0001},
	} {
		got := p.ops[op]
		if got == nil || got.count != want.count || got.errors != want.errors || math.Abs(got.total-want.total) > 1e-9 {
			t.Errorf("%s: %+v, want %+v", op, got, want)
		}
	}
	var b bytes.Buffer
	p.table(&b)
	out := b.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	// Sorted by total time: read, getattr, open, lookup, release.
	var order []string
	for _, l := range lines[2:] {
		if f := strings.Fields(l); len(f) == 6 {
			order = append(order, f[0])
		}
	}
	if got := strings.Join(order, ","); got != "read,getattr,open,lookup,release" {
		t.Errorf("order %s\n%s", got, out)
	}
	if !strings.Contains(out, "getattr               3        0       2000.0     0.006000") {
		t.Errorf("getattr row missing:\n%s", out)
	}
	if !strings.Contains(out, "2 malformed lines skipped") {
		t.Errorf("no malformed count:\n%s", out)
	}
}

func TestProfileFilter(t *testing.T) {
	p := newProfile()
	var err error
	if p.pids, err = parseIDs("pid", "12345,999"); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile("testdata/access.log")
	p.read(bytes.NewReader(b))
	if p.lines != 4 || p.filtered != 4 {
		t.Errorf("%d lines kept, %d left out; want 4 and 4", p.lines, p.filtered)
	}
	if _, err := parseIDs("uid", "1,x"); err == nil {
		t.Error("parsed a bad uid list")
	}
}

func TestFlagsFirst(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"jfs stats /mnt -l 1", "jfs stats -l 1 /mnt"},
		{"jfs profile /tmp/x.alog --interval 0", "jfs profile --interval 0 /tmp/x.alog"},
		{"jfs profile --interval=0 /tmp/x.alog", "jfs profile --interval=0 /tmp/x.alog"},
		{"jfs mount /mnt -d", "jfs mount /mnt -d"},
	} {
		if got := strings.Join(flagsFirst(strings.Fields(tc.in)), " "); got != tc.want {
			t.Errorf("flagsFirst(%s) = %s, want %s", tc.in, got, tc.want)
		}
	}
}

func TestParseMetrics(t *testing.T) {
	text := `# HELP jfs_fuse_ops_total FUSE operations served, by method.
# TYPE jfs_fuse_ops_total counter
jfs_fuse_ops_total{method="GetAttr"} 10
jfs_fuse_ops_total{method="SetLkw"} 2
jfs_fuse_op_duration_seconds_sum{method="GetAttr"} 0.5
jfs_meta_ops_total{method="getattr"} 4
jfs_meta_ops_merged_total{method="getattr"} 6
weird{a="x,y",b="q\"z"} 1.5e3 1700000000
`
	s, err := parseMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(s) != 6 || s[5].labels["a"] != "x,y" || s[5].labels["b"] != `q"z` || s[5].value != 1500 {
		t.Fatalf("parsed %+v", s)
	}
	sum := summarize(s)
	if sum.fuseOps != 12 || sum.lockOps != 2 || sum.metaOps != 4 || sum.merged != 6 || sum.getattrMerge != 6 {
		t.Errorf("summary %+v", sum)
	}
	if _, err := parseMetrics(strings.NewReader("x{ 1\n")); err == nil {
		t.Error("parsed garbage")
	}
	prev := statsSnap{at: time.Unix(0, 0)}
	cur := sum
	cur.at = time.Unix(2, 0)
	if line := statsLine(prev, cur, false); !strings.Contains(line, "6.0") {
		t.Errorf("line %q", line)
	}
}
