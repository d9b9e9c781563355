package integration

import (
	"io"
	"net/http"
	"strings"
	"testing"
)

// --pprof serves Go's profiles on the metrics listener of jfsd and of
// jfs mount; without it they are not served.
func TestPprofFlag(t *testing.T) {
	pc := startProcCluster(t, 3)
	with := pc.procs[2]
	pc.stop(with)
	with.args = append(with.args, "--pprof")
	pc.start(with)
	pc.mustAllUp()
	mWith := startMount(t, pc, "--pprof")
	mWithout := startMount(t, pc)

	get := func(addr, path string) (int, string) {
		t.Helper()
		resp, err := http.Get("http://" + addr + path)
		if err != nil {
			t.Fatalf("GET %s%s: %v", addr, path, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	for _, c := range []struct {
		what, addr string
		on         bool
	}{
		{"jfsd --pprof", with.metricsAddr, true},
		{"jfsd", pc.procs[0].metricsAddr, false},
		{"jfs mount --pprof", mWith.metricsAddr, true},
		{"jfs mount", mWithout.metricsAddr, false},
	} {
		code, body := get(c.addr, "/debug/pprof/")
		if c.on && (code != http.StatusOK || !strings.Contains(body, "goroutine")) {
			t.Errorf("%s: /debug/pprof/ answered %d:\n%.300s", c.what, code, body)
		}
		if !c.on && code != http.StatusNotFound {
			t.Errorf("%s: /debug/pprof/ answered %d, want 404 without --pprof", c.what, code)
		}
		if c.on {
			// A real profile: goroutine dump in the text form.
			if code, body := get(c.addr, "/debug/pprof/goroutine?debug=1"); code != http.StatusOK || !strings.Contains(body, "goroutine profile:") {
				t.Errorf("%s: goroutine profile answered %d:\n%.300s", c.what, code, body)
			}
		}
		if code, _ := get(c.addr, "/metrics"); code != http.StatusOK {
			t.Errorf("%s: /metrics answered %d", c.what, code)
		}
	}
}
