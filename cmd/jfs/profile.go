package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func profileCommand() *cli.Command {
	return &cli.Command{
		Name:      "profile",
		Usage:     "summarize the access log: operations, counts and times",
		ArgsUsage: "MOUNTPOINT|LOGFILE",
		Description: `Reads an access log and shows, per operation, how many there were, their
average time and their total time, the most expensive first.

Given a mount point it reads MOUNTPOINT/.accesslog live and shows the totals
since it started every --interval, until interrupted (or --count tables). Given
a file saved from .accesslog (cat MOUNTPOINT/.accesslog > FILE) it reads the
whole file and shows its totals once; --interval 0 says so explicitly, as
with juicefs profile.

  jfs profile /mnt/jfs
  jfs profile /tmp/jfs.alog --interval 0
  jfs profile /mnt/jfs --uid 1000 --pid 12345,12346

Lines that are not access-log lines are skipped and counted.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "interval", Value: 2 * time.Second, Usage: "time between tables of a live log (0: read a file once)"},
			&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Usage: "stop after this many tables of a live log (0: never)"},
			&cli.StringFlag{Name: "uid", Usage: "only these uids (comma-separated)"},
			&cli.StringFlag{Name: "gid", Usage: "only these gids (comma-separated)"},
			&cli.StringFlag{Name: "pid", Usage: "only these pids (comma-separated)"},
		},
		Action: runProfile,
	}
}

// logEntry is one access-log line.
type logEntry struct {
	at            time.Time
	uid, gid, pid uint32
	op, args      string
	result        string // OK or the errno's text: "no such file or directory"
	dur           float64
}

// logLine matches a line in JuiceFS's format: time, caller, op, (args)
// and details, " - ", the result, <seconds>. The result is the text after
// the last " - ": a file name in the arguments may hold one.
var logLine = regexp.MustCompile(`^(\d{4}\.\d{2}\.\d{2} \d{2}:\d{2}:\d{2}\.\d{6}) \[uid:(\d+),gid:(\d+),pid:(\d+)\] (\S+) \((.*?)\).* - ([^<]+?) <(\d+(?:\.\d+)?)>$`)

// parseLogLine parses one line of the access log.
func parseLogLine(line string) (logEntry, error) {
	m := logLine.FindStringSubmatch(line)
	if m == nil {
		return logEntry{}, fmt.Errorf("not an access-log line: %q", line)
	}
	at, err := time.ParseInLocation("2006.01.02 15:04:05.000000", m[1], time.Local)
	if err != nil {
		return logEntry{}, fmt.Errorf("bad time in %q: %w", line, err)
	}
	var ids [3]uint32
	for i := range ids {
		v, err := strconv.ParseUint(m[2+i], 10, 32)
		if err != nil {
			return logEntry{}, fmt.Errorf("bad id in %q: %w", line, err)
		}
		ids[i] = uint32(v)
	}
	d, err := strconv.ParseFloat(m[8], 64)
	if err != nil {
		return logEntry{}, fmt.Errorf("bad duration in %q: %w", line, err)
	}
	return logEntry{at: at, uid: ids[0], gid: ids[1], pid: ids[2], op: m[5], args: m[6], result: m[7], dur: d}, nil
}

// idFilter keeps the entries of some ids; empty keeps all.
type idFilter map[uint32]bool

func parseIDs(flag, s string) (idFilter, error) {
	f := idFilter{}
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p == "" {
			continue
		}
		v, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("--%s %q: want comma-separated numbers", flag, s)
		}
		f[uint32(v)] = true
	}
	return f, nil
}

func (f idFilter) keeps(id uint32) bool { return len(f) == 0 || f[id] }

// opStats are the totals of one operation.
type opStats struct {
	count  int
	errors int
	total  float64 // seconds
}

// profile aggregates access-log lines. Safe for concurrent use.
type profile struct {
	uids, gids, pids idFilter

	mu        sync.Mutex
	ops       map[string]*opStats
	lines     int // access-log lines counted
	filtered  int // access-log lines left out by a filter
	malformed int
	first     time.Time
	last      time.Time
}

func newProfile() *profile { return &profile{ops: map[string]*opStats{}} }

// add takes one line; it reports whether the line was an access-log line.
func (p *profile) add(line string) bool {
	line = strings.TrimRight(line, "\r\n")
	if line == "" || line[0] == '#' {
		return true
	}
	e, err := parseLogLine(line)
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.malformed++
		return false
	}
	if !p.uids.keeps(e.uid) || !p.gids.keeps(e.gid) || !p.pids.keeps(e.pid) {
		p.filtered++
		return true
	}
	p.lines++
	if p.first.IsZero() || e.at.Before(p.first) {
		p.first = e.at
	}
	if e.at.After(p.last) {
		p.last = e.at
	}
	s := p.ops[e.op]
	if s == nil {
		s = &opStats{}
		p.ops[e.op] = s
	}
	s.count++
	s.total += e.dur
	if e.result != "OK" {
		s.errors++
	}
	return true
}

// read adds every line of r.
func (p *profile) read(r io.Reader) error {
	br := bufio.NewReaderSize(r, 1<<16)
	for {
		line, err := br.ReadString('\n')
		if line != "" {
			p.add(line)
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}

// table writes the totals, the largest total time first.
func (p *profile) table(w io.Writer) {
	p.mu.Lock()
	defer p.mu.Unlock()
	names := make([]string, 0, len(p.ops))
	var sum float64
	for n, s := range p.ops {
		names = append(names, n)
		sum += s.total
	}
	slices.SortFunc(names, func(a, b string) int {
		if d := p.ops[b].total - p.ops[a].total; d != 0 {
			if d > 0 {
				return 1
			}
			return -1
		}
		return strings.Compare(a, b)
	})
	span := ""
	if !p.first.IsZero() {
		span = fmt.Sprintf(", %s to %s", p.first.Format("15:04:05.000"), p.last.Format("15:04:05.000"))
	}
	fmt.Fprintf(w, "%d operations%s\n", p.lines, span)
	fmt.Fprintf(w, "%-12s %10s %8s %12s %12s %7s\n", "OPERATION", "COUNT", "ERRORS", "AVG(us)", "TOTAL(s)", "TIME%")
	for _, n := range names {
		s := p.ops[n]
		pct := 0.0
		if sum > 0 {
			pct = s.total / sum * 100
		}
		fmt.Fprintf(w, "%-12s %10d %8d %12.1f %12.6f %7.1f\n", n, s.count, s.errors, s.total/float64(s.count)*1e6, s.total, pct)
	}
	if p.filtered > 0 {
		fmt.Fprintf(w, "%d lines left out by --uid/--gid/--pid\n", p.filtered)
	}
	if p.malformed > 0 {
		fmt.Fprintf(w, "%d malformed lines skipped\n", p.malformed)
	}
}

func runProfile(c *cli.Context) error {
	if c.Args().Len() != 1 {
		return errors.New("want exactly one argument, a mount point or a saved access log (see jfs profile --help)")
	}
	path := c.Args().First()
	p := newProfile()
	var err error
	if p.uids, err = parseIDs("uid", c.String("uid")); err != nil {
		return err
	}
	if p.gids, err = parseIDs("gid", c.String("gid")); err != nil {
		return err
	}
	if p.pids, err = parseIDs("pid", c.String("pid")); err != nil {
		return err
	}
	interval := c.Duration("interval")
	if interval < 0 {
		return fmt.Errorf("--interval %v: must not be negative", interval)
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	w := c.App.Writer
	if !fi.IsDir() {
		// A saved log: read it all and show its totals.
		f, err := os.Open(path)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := p.read(f); err != nil {
			return fmt.Errorf("%s: %w", path, err)
		}
		if p.lines == 0 && p.malformed > 0 {
			p.table(w)
			return fmt.Errorf("%s is not an access log: none of its %d lines is an access-log line", path, p.malformed)
		}
		p.table(w)
		return nil
	}
	// A mount point: read its .accesslog live.
	if interval == 0 {
		return errors.New("--interval 0 reads a saved log file; a live log needs an interval")
	}
	logPath := filepath.Join(path, ".accesslog")
	f, err := os.Open(logPath)
	if errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("%s is not a jfs mount point (it has no .accesslog)", path)
	}
	if err != nil {
		return err
	}
	// f is not closed: a read of .accesslog waits for the next line, and
	// Close would wait for that read. The process exits instead.
	readErr := make(chan error, 1)
	go func() { readErr <- p.read(f) }()
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	tty := writerIsTerminal(w)
	t := time.NewTicker(interval)
	defer t.Stop()
	start := time.Now()
	for n := 0; c.Int("count") == 0 || n < c.Int("count"); n++ {
		select {
		case <-t.C:
		case <-sigs:
			return nil
		case err := <-readErr:
			p.table(w)
			return err
		}
		if tty {
			fmt.Fprint(w, "\033[H\033[2J")
		} else if n > 0 {
			fmt.Fprintln(w)
		}
		fmt.Fprintf(w, "%s: %s since %s\n", logPath, time.Since(start).Round(time.Second), start.Format("15:04:05"))
		p.table(w)
	}
	return nil
}

func writerIsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
