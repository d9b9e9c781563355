package integration

import (
	"bytes"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// sqlite3 runs the sqlite3 shell on db with sql on its standard input.
// SQLite waits for a busy database by
// polling with non-blocking locks and sleeping, which is not fair: with four
// writers one may wait long, so the busy timeout is generous.
func sqlite3(db, sql string) (string, error) {
	cmd := exec.Command("sqlite3", "-bail", "-cmd", ".timeout 120000", db)
	cmd.Stdin = strings.NewReader(sql)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		return out.String(), fmt.Errorf("sqlite3 %s: %v: %s", db, err, errb.String())
	}
	return strings.TrimSpace(out.String()), nil
}

// TestMountSQLite: processes on two mounts increment one counter in a
// SQLite database in rollback-journal mode; SQLite's fcntl locks and the
// journal must keep every increment and the database intact.
//
// The work is sized to what it proves: two writers per mount, each with
// enough transactions that they contend across mounts many times (a lost
// update shows as a short count), not a throughput run. Every transaction
// is a few dozen lock, write and fsync round trips through the cluster, and
// SQLite waits for a busy database by sleeping, so on a loaded machine it
// takes minutes per thousand; the test reports its time and does not judge
// it.
func TestMountSQLite(t *testing.T) {
	if _, err := exec.LookPath("sqlite3"); err != nil {
		t.Skip("sqlite3 is not installed (.ci/run installs it)")
	}
	pc := startProcCluster(t, 3)
	a := startMount(t, pc)
	b := startMount(t, pc)
	const workers, increments = 4, 40
	if _, err := sqlite3(a.path("db"), "PRAGMA journal_mode=DELETE;\nCREATE TABLE counter(n INTEGER);\nINSERT INTO counter VALUES(0);\n"); err != nil {
		t.Fatal(err)
	}
	script := strings.Repeat("BEGIN IMMEDIATE;\nUPDATE counter SET n = n + 1;\nCOMMIT;\n", increments)
	start := time.Now()
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for i := range workers {
		m := a
		if i%2 == 1 {
			m = b
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if _, err := sqlite3(m.path("db"), script); err != nil {
				errs <- fmt.Errorf("worker %d: %w", i, err)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	t.Logf("%d transactions from %d processes on two mounts in %v", workers*increments, workers, time.Since(start))
	for _, m := range []*jfsMount{a, b} {
		got, err := sqlite3(m.path("db"), "SELECT n FROM counter;\nPRAGMA integrity_check;\nPRAGMA journal_mode;\n")
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%d\nok\ndelete", workers*increments); got != want {
			t.Errorf("through %s: %q, want %q", m.dir, got, want)
		}
	}
}
