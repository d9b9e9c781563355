package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// FSInfo says what file system a directory is on, from the mount table.
type FSInfo struct {
	MountPoint string `json:"mount_point"`
	Type       string `json:"type"` // as in the mount table: ext4, tmpfs, fuse.jfs ...
	Source     string `json:"source"`
	// JFS: the directory is on a jfs mount.
	JFS bool `json:"jfs"`
	// Stats is a jfs mount's .stats file.
	Stats string `json:"stats,omitempty"`
}

// JFSMountType is the type a jfs mount has in the mount table: jfs mount
// names its FUSE file system "jfs" (fuse/mount.go), and the kernel shows
// FUSE types as fuse.NAME. Other FUSE file systems have .stats files too
// (JuiceFS's is fuse.juicefs), so the type, not the file, says jfs.
const JFSMountType = "fuse.jfs"

// DetectFS finds the mount that holds dir in /proc/self/mountinfo.
func DetectFS(dir string) (FSInfo, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return FSInfo{}, err
	}
	if real, err := filepath.EvalSymlinks(abs); err == nil {
		abs = real
	}
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return FSInfo{}, err
	}
	info := findMount(b, abs)
	if info.MountPoint == "" {
		return info, fmt.Errorf("no mount holds %s", abs)
	}
	return classify(info, func(p string) bool {
		_, err := os.Lstat(p)
		return err == nil
	}), nil
}

// classify sets JFS from the mount's type and, for a jfs mount, Stats
// when exists says its .stats is there.
func classify(info FSInfo, exists func(path string) bool) FSInfo {
	info.JFS = info.Type == JFSMountType
	if p := filepath.Join(info.MountPoint, ".stats"); info.JFS && exists(p) {
		info.Stats = p
	}
	return info
}

// findMount returns the mount of mountinfo whose mount point is the
// longest prefix of path (the last such line: a later mount covers an
// earlier one).
func findMount(mountinfo []byte, path string) FSInfo {
	var best FSInfo
	sc := bufio.NewScanner(bytes.NewReader(mountinfo))
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		// id parent major:minor root mountpoint options [optional...] - type source superoptions
		f := strings.Fields(sc.Text())
		sep := -1
		for i := 6; i < len(f); i++ {
			if f[i] == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+2 >= len(f) {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if !within(path, mp) || len(mp) < len(best.MountPoint) {
			continue
		}
		best = FSInfo{MountPoint: mp, Type: f[sep+1], Source: unescapeMountinfo(f[sep+2])}
	}
	return best
}

// within reports whether path is dir or inside it.
func within(path, dir string) bool {
	if dir == "/" || path == dir {
		return true
	}
	return strings.HasPrefix(path, dir+"/")
}

// unescapeMountinfo undoes the octal escapes (\040 for a space) of
// /proc/self/mountinfo.
func unescapeMountinfo(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// clusterSample is what the bench reads from the nodes' metrics: the sums
// over every node given.
type clusterSample struct {
	readRequests float64 // jfsd_reads_total: reads that reached a leader
	fsmReads     float64 // jfsd_fsm_reads_total: distinct state-machine reads
	applied      float64 // the largest jfsd_fsm_applied_index: log entries
}

// scrapeCluster reads the metrics of every node in addrs.
func scrapeCluster(ctx context.Context, addrs []string) (clusterSample, error) {
	var s clusterSample
	for _, a := range addrs {
		m, err := scrape(ctx, a)
		if err != nil {
			return s, err
		}
		s.readRequests += m["jfsd_reads_total"]
		s.fsmReads += m["jfsd_fsm_reads_total"]
		s.applied = max(s.applied, m["jfsd_fsm_applied_index"])
	}
	return s, nil
}

// scrape fetches addr's Prometheus metrics and sums the samples of each
// metric over its labels.
func scrape(ctx context.Context, addr string) (map[string]float64, error) {
	url := addr
	if !strings.Contains(url, "://") {
		url = "http://" + url
	}
	if !strings.Contains(strings.TrimPrefix(strings.TrimPrefix(url, "http://"), "https://"), "/") {
		url += "/metrics"
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cluster metrics: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("cluster metrics %s: %s", url, resp.Status)
	}
	return parseMetrics(resp.Body)
}

// parseMetrics reads the Prometheus text format: "name{labels} value".
func parseMetrics(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' {
			continue
		}
		name, rest := line, ""
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name, rest = line[:i], line[i:]
		}
		if strings.HasPrefix(rest, "{") {
			j := strings.LastIndexByte(rest, '}')
			if j < 0 {
				continue
			}
			rest = rest[j+1:]
		}
		f := strings.Fields(rest)
		if len(f) == 0 {
			continue
		}
		v, err := strconv.ParseFloat(f[0], 64)
		if err != nil {
			continue
		}
		out[name] += v
	}
	return out, sc.Err()
}
