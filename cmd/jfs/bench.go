package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

	"github.com/jfs-dev/jfs/bench"
)

func benchCommand() *cli.Command {
	return &cli.Command{
		Name:      "bench",
		Usage:     "measure a file system with many processes on the same files and locks",
		ArgsUsage: "WORKLOAD... DIR",
		Description: `Runs each WORKLOAD in a new directory inside DIR with --procs worker processes
(this program, started again), then prints operations per second and the median
and 99th-percentile latency of each operation. DIR may be on any file system, so
the same command measures a jfs mount, a local disk or another network file
system. Workloads:

  stat-storm    every process stats the same file
  lookup-storm  every process stats the same path four directories deep
  lock-pairs    fcntl lock+unlock, then flock lock+unlock, each process on its own file
  lock-handoff  the processes take turns on one lock with F_SETLKW; the latency is
                from the previous holder's unlock to the next holder's return
  meta          create, stat and unlink empty files, each process in its own directory
  smallfile     create, write 4 KiB and close files, then read them back and verify
  all           every workload above

On a jfs mount (type fuse.jfs in the mount table) it also reports what each operation cost
the cluster, from the nodes' Prometheus metrics given with --cluster-metrics (their
jfsd --metrics-addr): read requests that reached the leader, state-machine reads
after batching, and log entries written, per operation. Without them these
columns say n/a. Background work such as other clients counts too.

On a jfs mount CPU/OP (cpu_us_per_op in --json) is the CPU time, per operation,
of the process serving the mount (process_cpu_seconds_total in its .stats, so
the right process is measured wherever it runs) plus that of the nodes given
with --cluster-metrics (the same metric in their metrics); the JSON splits it
into mount_us_per_op and nodes_us_per_op. What could not be read is named under
the table. Idle work of those processes (heartbeats, timers) counts too. A
mount made by "jfsd dev --mount" runs in the nodes' process: its figure is
then the whole cluster's.

A progress line goes to stderr when it is a terminal; --json prints only JSON on
stdout.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "json", Usage: "print the results as JSON"},
			&cli.IntFlag{Name: "procs", Aliases: []string{"p"}, Value: 4, Usage: "worker processes"},
			&cli.DurationFlag{Name: "duration", Aliases: []string{"d"}, Value: 5 * time.Second, Usage: "how long each workload runs"},
			&cli.IntFlag{Name: "max-files", Value: 100000, Usage: "at most this many files per process in meta and smallfile"},
			&cli.StringFlag{Name: "cluster-metrics", Usage: "metrics addresses of the cluster's nodes, HOST:PORT[,HOST:PORT...]"},
		},
		Action: runBench,
	}
}

func runBench(c *cli.Context) error {
	if os.Getenv(bench.WorkerEnv) == "1" {
		// This process is a worker of a "jfs bench" parent.
		if code := bench.WorkerMain(os.Stdin, os.Stdout); code != 0 {
			os.Exit(code)
		}
		return nil
	}
	if c.Args().Len() < 2 {
		return errors.New("want one or more workloads and a directory (see jfs bench --help)")
	}
	args := c.Args().Slice()
	dir := args[len(args)-1]
	var workloads []string
	for _, w := range args[:len(args)-1] {
		if w == "all" {
			workloads = append(workloads, bench.Workloads...)
			continue
		}
		workloads = append(workloads, w)
	}
	if c.Int("procs") < 1 || c.Int("procs") > 4096 {
		return fmt.Errorf("--procs %d: want 1 to 4096", c.Int("procs"))
	}
	if c.Duration("duration") <= 0 {
		return fmt.Errorf("--duration %v: must be positive", c.Duration("duration"))
	}
	var metrics []string
	for _, a := range strings.Split(c.String("cluster-metrics"), ",") {
		if a = strings.TrimSpace(a); a != "" {
			metrics = append(metrics, a)
		}
	}
	exe, err := os.Executable()
	if err != nil {
		return err
	}
	cfg := bench.Config{
		Dir: dir, Workloads: workloads, Procs: c.Int("procs"), Duration: c.Duration("duration"),
		MaxFiles: c.Int("max-files"), ClusterMetrics: metrics,
		Command: func() *exec.Cmd {
			cmd := exec.Command(exe, "bench")
			cmd.Env = append(os.Environ(), bench.WorkerEnv+"=1")
			return cmd
		},
	}
	if isTerminal(os.Stderr) {
		cfg.Progress, cfg.Live = os.Stderr, true
	}
	// Ctrl-C stops the workers and removes what the run made.
	ctx, stop := signal.NotifyContext(c.Context, os.Interrupt, syscall.SIGTERM)
	defer stop()
	rep, err := bench.Run(ctx, cfg)
	if rep != nil && len(rep.Results) > 0 || err == nil {
		var werr error
		if c.Bool("json") {
			werr = rep.WriteJSON(c.App.Writer)
		} else {
			werr = rep.WriteTable(c.App.Writer)
		}
		if err == nil {
			err = werr
		}
	}
	return err
}

func isTerminal(f *os.File) bool {
	_, err := unix.IoctlGetTermios(int(f.Fd()), unix.TCGETS)
	return err == nil
}
