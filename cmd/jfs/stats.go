package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
)

func statsCommand() *cli.Command {
	return &cli.Command{
		Name:      "stats",
		Usage:     "show a mount's operations per second, live",
		ArgsUsage: "MOUNTPOINT",
		Description: `Prints one line per --interval with what the mount at MOUNTPOINT did in that
interval, read from MOUNTPOINT/.stats (the mount's Prometheus metrics):

  fuse ops/s, lat   FUSE operations served and their average latency (ms)
  meta ops/s, lat   requests sent to the cluster and their average latency (ms)
  merged/s          getattr and lookup requests that shared an identical
                    request's RPC instead of sending their own
  lock ops/s        lock requests (flock, fcntl)

With -l 1 the getattr and lookup requests are shown apart. Stops after --count
lines (0: until interrupted).`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "interval", Value: time.Second, Usage: "time between lines"},
			&cli.IntFlag{Name: "count", Aliases: []string{"c"}, Usage: "stop after this many lines (0: never)"},
			&cli.IntFlag{Name: "verbosity", Aliases: []string{"l"}, Usage: "1: show getattr and lookup apart"},
		},
		Action: runStats,
	}
}

// statsFlagsWithValue are the flags of stats and profile that take a value,
// for moving flags given after the argument (see flagsFirst).
var statsFlagsWithValue = []string{"interval", "count", "c", "verbosity", "l", "uid", "gid", "pid"}

// flagsFirst moves the flags of "jfs stats" and "jfs profile" given after
// the argument ("jfs stats /mnt/jfs -l 1", as juicefs allows) before it,
// where the flag parser looks for them.
func flagsFirst(args []string) []string {
	if len(args) < 3 || (args[1] != "stats" && args[1] != "profile") {
		return args
	}
	takesValue := map[string]bool{}
	for _, f := range statsFlagsWithValue {
		takesValue["-"+f], takesValue["--"+f] = true, true
	}
	var flags, rest []string
	tail := args[2:]
	for i := 0; i < len(tail); i++ {
		a := tail[i]
		switch {
		case a == "--":
			rest = append(rest, tail[i:]...)
			i = len(tail)
		case strings.HasPrefix(a, "-") && len(a) > 1:
			flags = append(flags, a)
			if takesValue[a] && i+1 < len(tail) {
				flags = append(flags, tail[i+1])
				i++
			}
		default:
			rest = append(rest, a)
		}
	}
	out := append([]string{args[0], args[1]}, flags...)
	return append(out, rest...)
}

// metricSample is one line of the text format: name, labels, value.
type metricSample struct {
	name   string
	labels map[string]string
	value  float64
}

// parseMetrics reads Prometheus's text format.
func parseMetrics(r io.Reader) ([]metricSample, error) {
	var out []metricSample
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		s, err := parseSample(line)
		if err != nil {
			return nil, fmt.Errorf("line %d: %w", n, err)
		}
		out = append(out, s)
	}
	return out, sc.Err()
}

func parseSample(line string) (metricSample, error) {
	s := metricSample{labels: map[string]string{}}
	rest := line
	if i := strings.IndexByte(line, '{'); i >= 0 {
		j := strings.LastIndexByte(line, '}')
		if j < i {
			return s, fmt.Errorf("unbalanced braces: %q", line)
		}
		s.name = line[:i]
		for _, kv := range splitLabels(line[i+1 : j]) {
			k, v, ok := strings.Cut(kv, "=")
			if !ok {
				return s, fmt.Errorf("bad label %q", kv)
			}
			uq, err := strconv.Unquote(v)
			if err != nil {
				return s, fmt.Errorf("bad label value %s: %w", v, err)
			}
			s.labels[k] = uq
		}
		rest = strings.TrimSpace(line[j+1:])
	} else {
		name, r, ok := strings.Cut(line, " ")
		if !ok {
			return s, fmt.Errorf("no value: %q", line)
		}
		s.name, rest = name, strings.TrimSpace(r)
	}
	val, _, _ := strings.Cut(rest, " ") // a timestamp may follow
	v, err := strconv.ParseFloat(val, 64)
	if err != nil {
		return s, fmt.Errorf("bad value in %q: %w", line, err)
	}
	s.value = v
	return s, nil
}

// splitLabels splits `a="x",b="y,z"` at the commas outside quotes.
func splitLabels(s string) []string {
	var out []string
	start, quoted := 0, false
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '\\':
			i++
		case '"':
			quoted = !quoted
		case ',':
			if !quoted {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	if strings.TrimSpace(s[start:]) != "" {
		out = append(out, s[start:])
	}
	return out
}

// statsSnap is what one reading of .stats says, summed as stats shows it.
type statsSnap struct {
	at                       time.Time
	fuseOps, fuseDur         float64 // count and seconds
	metaOps, metaDur         float64
	merged, lockOps          float64
	getattrMeta, lookupMeta  float64
	getattrMerge, lookupMerg float64
}

var lockMethods = map[string]bool{"GetLk": true, "SetLk": true, "SetLkw": true}

func summarize(samples []metricSample) statsSnap {
	var s statsSnap
	for _, m := range samples {
		method := m.labels["method"]
		switch m.name {
		case "jfs_fuse_ops_total":
			s.fuseOps += m.value
			if lockMethods[method] {
				s.lockOps += m.value
			}
		case "jfs_fuse_op_duration_seconds_sum":
			s.fuseDur += m.value
		case "jfs_meta_ops_total":
			s.metaOps += m.value
			switch method {
			case "getattr":
				s.getattrMeta += m.value
			case "lookup":
				s.lookupMeta += m.value
			}
		case "jfs_meta_ops_durations_histogram_seconds_sum":
			s.metaDur += m.value
		case "jfs_meta_ops_merged_total":
			s.merged += m.value
			switch method {
			case "getattr":
				s.getattrMerge += m.value
			case "lookup":
				s.lookupMerg += m.value
			}
		}
	}
	return s
}

// readStats reads and checks MOUNTPOINT/.stats.
func readStats(mnt string) (statsSnap, error) {
	b, err := os.ReadFile(filepath.Join(mnt, ".stats"))
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return statsSnap{}, fmt.Errorf("%s is not a jfs mount point (it has no .stats)", mnt)
		}
		return statsSnap{}, fmt.Errorf("%s/.stats: %w", mnt, err)
	}
	samples, err := parseMetrics(bytes.NewReader(b))
	if err != nil {
		return statsSnap{}, fmt.Errorf("%s/.stats is not in Prometheus's text format: %w", mnt, err)
	}
	found := false
	for _, s := range samples {
		if s.name == "jfs_meta_ops_total" {
			found = true
			break
		}
	}
	if !found {
		return statsSnap{}, fmt.Errorf("%s is not a jfs mount point (its .stats has no jfs_meta_ops_total)", mnt)
	}
	s := summarize(samples)
	s.at = time.Now()
	return s, nil
}

func statsHeader(verbose bool) string {
	h := "time     |   fuse ops/s  lat(ms) |   meta ops/s  lat(ms) | merged/s | lock ops/s"
	if verbose {
		h += " | getattr/s lookup/s | getattr merged/s lookup merged/s"
	}
	return h
}

func statsLine(prev, cur statsSnap, verbose bool) string {
	secs := cur.at.Sub(prev.at).Seconds()
	if secs <= 0 {
		secs = 1
	}
	rate := func(a, b float64) float64 { return (b - a) / secs }
	lat := func(n0, n1, d0, d1 float64) float64 {
		if n1 <= n0 {
			return 0
		}
		return (d1 - d0) / (n1 - n0) * 1000
	}
	line := fmt.Sprintf("%s | %12.1f %8.3f | %12.1f %8.3f | %8.1f | %10.1f",
		cur.at.Format("15:04:05"),
		rate(prev.fuseOps, cur.fuseOps), lat(prev.fuseOps, cur.fuseOps, prev.fuseDur, cur.fuseDur),
		rate(prev.metaOps, cur.metaOps), lat(prev.metaOps, cur.metaOps, prev.metaDur, cur.metaDur),
		rate(prev.merged, cur.merged), rate(prev.lockOps, cur.lockOps))
	if verbose {
		line += fmt.Sprintf(" | %9.1f %8.1f | %16.1f %15.1f",
			rate(prev.getattrMeta, cur.getattrMeta), rate(prev.lookupMeta, cur.lookupMeta),
			rate(prev.getattrMerge, cur.getattrMerge), rate(prev.lookupMerg, cur.lookupMerg))
	}
	return line
}

func runStats(c *cli.Context) error {
	if c.Args().Len() != 1 {
		return errors.New("want exactly one argument, the mount point (see jfs stats --help)")
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	interval := c.Duration("interval")
	if interval <= 0 {
		return fmt.Errorf("--interval %v: must be positive", interval)
	}
	count := c.Int("count")
	verbose := c.Int("verbosity") > 0
	prev, err := readStats(mnt)
	if err != nil {
		return err
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	w := c.App.Writer
	fmt.Fprintln(w, statsHeader(verbose))
	t := time.NewTicker(interval)
	defer t.Stop()
	for n := 0; count == 0 || n < count; n++ {
		select {
		case <-t.C:
		case <-sigs:
			return nil
		}
		cur, err := readStats(mnt)
		if err != nil {
			return err
		}
		fmt.Fprintln(w, statsLine(prev, cur, verbose))
		prev = cur
	}
	return nil
}
