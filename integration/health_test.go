package integration

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// ---- /health, /ready and jfsctl cluster health ----

// healthBody is the JSON that /health and /ready answer (cluster.Health).
type healthBody struct {
	Node    string   `json:"node"`
	State   string   `json:"state"`
	Leader  string   `json:"leader"`
	Live    bool     `json:"live"`
	Ready   bool     `json:"ready"`
	Reasons []string `json:"reasons"`
}

// getHealth asks p's metrics listener for path and returns the status code
// and the decoded body.
func getHealth(t testing.TB, p *proc, path string) (int, healthBody) {
	t.Helper()
	resp, err := http.Get("http://" + p.metricsAddr + path)
	if err != nil {
		t.Fatalf("GET %s of %s: %v", path, p.id, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s of %s: %v", path, p.id, err)
	}
	var h healthBody
	if err := json.Unmarshal(b, &h); err != nil {
		t.Fatalf("GET %s of %s: %v\n%s", path, p.id, err, b)
	}
	return resp.StatusCode, h
}

// mustHealthStatus polls path on p until it answers code, or fails after
// 30s, and returns the last body.
func mustHealthStatus(t testing.TB, p *proc, path string, code int) healthBody {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, h := getHealth(t, p, path)
		if got == code {
			return h
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s of %s: %d after 30s, want %d; body %+v", path, p.id, got, code, h)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// clusterHealthJSON is what jfsctl cluster health --json prints.
type clusterHealthJSON struct {
	Leader        string   `json:"leader"`
	Voters        int      `json:"voters"`
	HealthyVoters int      `json:"healthy_voters"`
	Writable      bool     `json:"writable"`
	Reasons       []string `json:"reasons"`
	Members       []struct {
		ID        string `json:"id"`
		Reachable bool   `json:"reachable"`
		Healthy   bool   `json:"healthy"`
	} `json:"members"`
}

// jfsctlHealth runs jfsctl cluster health --json against servers and
// returns the decoded report and the exit code.
func jfsctlHealth(t testing.TB, servers []string) (clusterHealthJSON, int, string) {
	t.Helper()
	out, errOut, err := jfsctl(t, servers, "--timeout", "3s", "cluster", "health", "--json")
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			t.Fatalf("jfsctl cluster health: %v", err)
		}
		code = ee.ExitCode()
	}
	var h clusterHealthJSON
	if err := json.Unmarshal([]byte(out), &h); err != nil {
		t.Fatalf("jfsctl cluster health --json: %v\nstdout:\n%s\nstderr:\n%s", err, out, errOut)
	}
	return h, code, errOut
}

// TestHealthReady: every node of a running cluster is live and ready and
// jfsctl cluster health exits 0, still with one node stopped; once two of
// the three nodes stop, the last one stays live but turns not ready (no
// leader), and jfsctl cluster health exits 1.
func TestHealthReady(t *testing.T) {
	pc := startProcCluster(t, 3)
	for _, p := range pc.procs {
		h := mustHealthStatus(t, p, "/ready", http.StatusOK)
		if !h.Ready || !h.Live || h.Leader == "" || len(h.Reasons) != 0 {
			t.Fatalf("/ready of %s: 200 with %+v", p.id, h)
		}
		if code, h := getHealth(t, p, "/health"); code != http.StatusOK || !h.Live || h.Node != p.id {
			t.Fatalf("/health of %s: %d %+v", p.id, code, h)
		}
	}
	var h clusterHealthJSON
	var code int
	deadline := time.Now().Add(30 * time.Second)
	for {
		// Every node is ready, yet a member may still be announcing its
		// API address (the cluster is writable before every member is
		// reachable); poll until the report settles.
		var errOut string
		h, code, errOut = jfsctlHealth(t, pc.servers()[:1])
		if code == 0 && h.HealthyVoters == h.Voters {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jfsctl cluster health: exit %d after 30s: %+v\n%s", code, h, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !h.Writable || h.Voters != 3 || h.HealthyVoters != 3 || h.Leader == "" || len(h.Members) != 3 {
		t.Fatalf("healthy cluster reported as %+v", h)
	}

	// One node stopped: two of three voters are a majority, writes go on.
	pc.stop(pc.procs[0])
	deadline = time.Now().Add(30 * time.Second)
	for {
		// If the stopped node led, a new leader is elected first.
		var errOut string
		h, code, errOut = jfsctlHealth(t, pc.servers())
		if code == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("jfsctl cluster health with one node stopped: exit %d after 30s: %+v\n%s", code, h, errOut)
		}
		time.Sleep(100 * time.Millisecond)
	}
	if !h.Writable || h.HealthyVoters != 2 || h.Voters != 3 {
		t.Fatalf("jfsctl cluster health with one node stopped: %+v, want writable with 2 of 3 voters healthy", h)
	}

	// Two nodes stopped: the third cannot reach a majority.
	pc.stop(pc.procs[1])
	last := pc.procs[2]
	nr := mustHealthStatus(t, last, "/ready", http.StatusServiceUnavailable)
	if nr.Ready || !nr.Live || !slices.Contains(nr.Reasons, "no leader known") {
		t.Fatalf("/ready of the last node: 503 with %+v, want live, not ready, no leader known", nr)
	}
	if code, hl := getHealth(t, last, "/health"); code != http.StatusOK || !hl.Live {
		t.Fatalf("/health of the last node: %d %+v; a node without a leader is still alive", code, hl)
	}
	h, code, errOut := jfsctlHealth(t, pc.servers())
	if code != 1 || h.Writable || h.HealthyVoters != 0 || h.Voters != 3 || len(h.Reasons) == 0 {
		t.Fatalf("jfsctl cluster health with two of three nodes stopped: exit %d, %+v", code, h)
	}
	if !strings.Contains(errOut, "cannot take writes") {
		t.Fatalf("jfsctl cluster health: stderr %q does not say the cluster cannot take writes", errOut)
	}
	for _, m := range h.Members {
		if m.Reachable != (m.ID == last.id) || m.Healthy {
			t.Fatalf("member %+v: want only %s reachable and none healthy", m, last.id)
		}
	}
}

// ---- the Grafana dashboard ----

const dashboardPath = "../contrib/grafana/jfs.json"

// dashboardExprs returns every PromQL expression of the dashboard at path,
// rows' nested panels included, keyed by "panel title/refId".
func dashboardExprs(t testing.TB, path string) map[string]string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type panel struct {
		Title   string `json:"title"`
		Targets []struct {
			RefID string `json:"refId"`
			Expr  string `json:"expr"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	var d struct {
		SchemaVersion int               `json:"schemaVersion"`
		Panels        []json.RawMessage `json:"panels"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	if d.SchemaVersion < 36 {
		t.Fatalf("%s: schemaVersion %d; want a current Grafana schema", path, d.SchemaVersion)
	}
	out := map[string]string{}
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: %v", path, err)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Fatalf("%s: panel %q target %s has no expr", path, p.Title, tg.RefID)
				}
				out[p.Title+"/"+tg.RefID] = tg.Expr
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	return out
}

// promqlAggregations are PromQL's aggregation operators: they may take
// "by (...)" or "without (...)" between their name and their arguments.
var promqlAggregations = map[string]bool{
	"sum": true, "min": true, "max": true, "avg": true, "group": true, "stddev": true, "stdvar": true,
	"count": true, "count_values": true, "bottomk": true, "topk": true, "quantile": true,
	"limitk": true, "limit_ratio": true,
}

// promqlLabelLists are the keywords followed by a parenthesised list of
// label names (which are not metrics).
var promqlLabelLists = map[string]bool{
	"by": true, "without": true, "on": true, "ignoring": true, "group_left": true, "group_right": true,
}

// promqlKeywords are the other words of PromQL that are not metrics.
var promqlKeywords = map[string]bool{
	"and": true, "or": true, "unless": true, "bool": true, "offset": true, "atan2": true,
	"inf": true, "nan": true,
}

// promqlMetricNames returns the metric names expr selects, sorted and
// unique: every identifier that is not a function, an aggregation, a
// keyword, a label name (in a matcher or a by/on list), a number, a
// duration, a string or a Grafana variable. A selector by __name__ is an
// error: it hides the name from this check.
func promqlMetricNames(expr string) ([]string, error) {
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || (c|0x20 >= 'a' && c|0x20 <= 'z') }
	isIdent := func(c byte) bool { return isIdentStart(c) || (c >= '0' && c <= '9') }
	// skipTo returns the index just past the bracket closing the one at
	// i, stepping over quoted strings.
	skipTo := func(i int, open, close byte) (int, error) {
		depth := 0
		for j := i; j < len(expr); j++ {
			switch c := expr[j]; c {
			case '"', '\'', '`':
				end, err := skipString(expr, j)
				if err != nil {
					return 0, err
				}
				j = end - 1
			case open:
				depth++
			case close:
				depth--
				if depth == 0 {
					return j + 1, nil
				}
			}
		}
		return 0, fmt.Errorf("unbalanced %c at %d in %q", open, i, expr)
	}
	nextNonSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	depth := 0
	for i := 0; i < len(expr); i++ {
		switch expr[i] {
		case '"', '\'', '`':
			end, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end - 1
		case '(':
			depth++
		case ')':
			if depth--; depth < 0 {
				return nil, fmt.Errorf("unbalanced ) at %d in %q", i, expr)
			}
		}
	}
	if depth != 0 {
		return nil, fmt.Errorf("unbalanced ( in %q", expr)
	}
	seen := map[string]bool{}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '"' || c == '\'' || c == '`':
			end, err := skipString(expr, i)
			if err != nil {
				return nil, err
			}
			i = end
		case c == '{':
			end, err := skipTo(i, '{', '}')
			if err != nil {
				return nil, err
			}
			if strings.Contains(expr[i:end], "__name__") {
				return nil, fmt.Errorf("selector by __name__ in %q: name the metric instead", expr)
			}
			i = end
		case c == '[':
			end, err := skipTo(i, '[', ']')
			if err != nil {
				return nil, err
			}
			i = end
		case c == '$': // a Grafana variable: $name or ${name}
			i++
			if i < len(expr) && expr[i] == '{' {
				end, err := skipTo(i, '{', '}')
				if err != nil {
					return nil, err
				}
				i = end
			}
			for i < len(expr) && isIdent(expr[i]) {
				i++
			}
		case c >= '0' && c <= '9' || c == '.': // a number or a duration
			for i < len(expr) && (isIdent(expr[i]) || expr[i] == '.') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			next := nextNonSpace(j)
			switch {
			case promqlLabelLists[strings.ToLower(word)]:
				i = j
				if next < len(expr) && expr[next] == '(' {
					end, err := skipTo(next, '(', ')')
					if err != nil {
						return nil, err
					}
					i = end
				}
				continue
			case strings.ToLower(word) == "offset":
				i = nextNonSpace(j)
				for i < len(expr) && (isIdent(expr[i]) || expr[i] == '-') {
					i++
				}
				continue
			case promqlKeywords[strings.ToLower(word)], promqlAggregations[strings.ToLower(word)]:
			case next < len(expr) && expr[next] == '(': // a function call
			default:
				seen[word] = true
			}
			i = j
		default:
			i++
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// skipString returns the index just past the quoted string that starts at
// i.
func skipString(s string, i int) (int, error) {
	q := s[i]
	for j := i + 1; j < len(s); j++ {
		switch s[j] {
		case '\\':
			if q != '`' {
				j++
			}
		case q:
			return j + 1, nil
		}
	}
	return 0, fmt.Errorf("unterminated string at %d in %q", i, s)
}

func TestPromQLMetricNames(t *testing.T) {
	for _, tc := range []struct {
		expr string
		want []string
	}{
		{`up`, []string{"up"}},
		{`sum by (method) (rate(jfsd_requests_total{code!="OK", method=~"Get.*"}[$__rate_interval]))`, []string{"jfsd_requests_total"}},
		{`histogram_quantile(0.99, sum by (method, le) (rate(jfs_fuse_op_duration_seconds_bucket[5m])))`, []string{"jfs_fuse_op_duration_seconds_bucket"}},
		{`sum(rate(a_sum[1m])) / sum(rate(a_count[1m] offset 1h))`, []string{"a_count", "a_sum"}},
		{`max by (instance) (x - y) * on (instance) group_left (node) z`, []string{"x", "y", "z"}},
		{`sum without (le) (rate(h_bucket{le="+Inf"}[${__range}])) > bool 1e3`, []string{"h_bucket"}},
		{`topk(5, m{l="a}b[c"}) or vector(0) and n unless count(o)`, []string{"m", "n", "o"}},
		{`jfsd_raft_commitTime{quantile="0.99"} > 0.5`, []string{"jfsd_raft_commitTime"}},
	} {
		got, err := promqlMetricNames(tc.expr)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if !slices.Equal(got, tc.want) {
			t.Errorf("%s: names %q, want %q", tc.expr, got, tc.want)
		}
	}
	for _, bad := range []string{`{__name__="x"}`, `rate(x[5m]`, `x{l="a}`} {
		if _, err := promqlMetricNames(bad); err == nil {
			t.Errorf("%s: no error", bad)
		}
	}
}

// exportedSeriesNames scrapes addr and returns the name of every series it
// exports: a counter's or gauge's own name, a summary's name with _sum and
// _count, a histogram's _bucket, _sum and _count (not its bare name, which
// has no series).
func exportedSeriesNames(t testing.TB, addr string, into map[string]bool) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	defer resp.Body.Close()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("scrape %s: %v", addr, err)
	}
	for name, f := range fams {
		if len(f.GetMetric()) == 0 {
			continue
		}
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			into[name+"_bucket"], into[name+"_sum"], into[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			into[name], into[name+"_sum"], into[name+"_count"] = true, true, true
		default:
			into[name] = true
		}
	}
}

// TestDashboardMetricsExported: every metric the Grafana dashboard queries
// is exported by a running node or mount after ordinary use.
func TestDashboardMetricsExported(t *testing.T) {
	exprs := dashboardExprs(t, dashboardPath)
	if len(exprs) < 10 {
		t.Fatalf("%s: only %d queries", dashboardPath, len(exprs))
	}
	pc := startProcCluster(t, 3)
	m := startMount(t, pc)
	// Ordinary use: create, write, read back, look up a missing name.
	mustWriteFile(t, m.path("f"), []byte("dashboard"))
	if got := mustReadPath(t, m.path("f")); string(got) != "dashboard" {
		t.Fatalf("read back %q", got)
	}
	if _, err := os.Stat(m.path("missing")); !isNotExist(err) {
		t.Fatalf("stat of a missing file: %v", err)
	}
	exported := map[string]bool{}
	for _, p := range pc.procs {
		exportedSeriesNames(t, p.metricsAddr, exported)
	}
	exportedSeriesNames(t, m.metricsAddr, exported)

	var missing []string
	queried := 0
	keys := make([]string, 0, len(exprs))
	for k := range exprs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		names, err := promqlMetricNames(exprs[k])
		if err != nil {
			t.Fatalf("%s: %v", k, err)
		}
		if len(names) == 0 {
			t.Errorf("%s: %q queries no metric", k, exprs[k])
		}
		for _, n := range names {
			queried++
			if !exported[n] {
				missing = append(missing, fmt.Sprintf("%s (panel %s)", n, k))
			}
		}
	}
	if len(missing) > 0 {
		t.Fatalf("the dashboard queries metrics no node or mount exports:\n  %s", strings.Join(missing, "\n  "))
	}
	t.Logf("%d queries, %d metric references, all exported", len(exprs), queried)
}

// TestDashboardShape: the dashboard is one Grafana can import and use with
// any Prometheus data source: a datasource variable DS_PROMETHEUS that
// every panel and query uses, unique panel ids, panels inside the 24
// columns of the grid.
func TestDashboardShape(t *testing.T) {
	b, err := os.ReadFile(dashboardPath)
	if err != nil {
		t.Fatal(err)
	}
	type ds struct {
		Type string `json:"type"`
		UID  string `json:"uid"`
	}
	type panel struct {
		ID         int    `json:"id"`
		Type       string `json:"type"`
		Title      string `json:"title"`
		Datasource *ds    `json:"datasource"`
		GridPos    struct {
			H, W, X, Y int
		} `json:"gridPos"`
		Targets []struct {
			RefID      string `json:"refId"`
			Datasource *ds    `json:"datasource"`
		} `json:"targets"`
		Panels []json.RawMessage `json:"panels"`
	}
	type variable struct {
		Name  string `json:"name"`
		Type  string `json:"type"`
		Query string `json:"query"`
	}
	var d struct {
		UID        string            `json:"uid"`
		Title      string            `json:"title"`
		Panels     []json.RawMessage `json:"panels"`
		Templating struct {
			List []variable `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("%s: %v", dashboardPath, err)
	}
	if d.UID == "" || d.Title == "" {
		t.Fatalf("%s: uid %q, title %q", dashboardPath, d.UID, d.Title)
	}
	if !slices.Contains(d.Templating.List, variable{Name: "DS_PROMETHEUS", Type: "datasource", Query: "prometheus"}) {
		t.Fatalf("%s: no datasource variable DS_PROMETHEUS of type prometheus", dashboardPath)
	}
	want := ds{Type: "prometheus", UID: "${DS_PROMETHEUS}"}
	ids := map[int]string{}
	var walk func([]json.RawMessage)
	walk = func(ps []json.RawMessage) {
		for _, raw := range ps {
			var p panel
			if err := json.Unmarshal(raw, &p); err != nil {
				t.Fatalf("%s: %v", dashboardPath, err)
			}
			if other, dup := ids[p.ID]; dup || p.ID == 0 {
				t.Errorf("panel %q: id %d (also %q)", p.Title, p.ID, other)
			}
			ids[p.ID] = p.Title
			if g := p.GridPos; g.W <= 0 || g.H <= 0 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
				t.Errorf("panel %q: gridPos %+v outside the grid", p.Title, g)
			}
			if p.Type != "row" {
				if p.Datasource == nil || *p.Datasource != want {
					t.Errorf("panel %q: datasource %+v, want %+v", p.Title, p.Datasource, want)
				}
				if len(p.Targets) == 0 {
					t.Errorf("panel %q has no query", p.Title)
				}
			}
			for _, tg := range p.Targets {
				if tg.Datasource == nil || *tg.Datasource != want {
					t.Errorf("panel %q query %s: datasource %+v, want %+v", p.Title, tg.RefID, tg.Datasource, want)
				}
			}
			walk(p.Panels)
		}
	}
	walk(d.Panels)
}
