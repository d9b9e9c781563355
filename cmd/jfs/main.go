// Command jfs is the client of a jfs cluster: "jfs mount" mounts the file
// system with FUSE, "jfs umount" unmounts it, "jfs stats" and "jfs profile"
// show what a mount does.
package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/urfave/cli/v2"
)

// Version is the client version, reported in the mount's session.
var Version = "0.1.0-dev"

// commandLine is the command line the app runs: os.Args, or for mount.jfs
// the jfs mount command it translates to. "jfs mount -d" starts it again.
var commandLine []string

func main() {
	if filepath.Base(os.Args[0]) == mountHelperName {
		os.Exit(runMountHelper(newApp(), os.Args[1:]))
	}
	commandLine = flagsFirst(os.Args)
	if err := newApp().Run(commandLine); err != nil {
		fmt.Fprintln(os.Stderr, "jfs:", err)
		os.Exit(1)
	}
}

func newApp() *cli.App {
	return &cli.App{
		Name:    "jfs",
		Usage:   "mount a jfs file system",
		Version: Version,
		Description: `jfs mounts a jfs cluster as a POSIX file system with FUSE. Every change is
committed in the cluster before the call that made it returns, locks (flock and
fcntl) are shared by every mount of the cluster, and the kernel caches names and
attributes only for the configured times.

  export JFS_SERVERS=10.0.0.1:7101,10.0.0.2:7101,10.0.0.3:7101
  jfs mount /mnt/jfs            # serves until unmounted or interrupted
  jfs mount -d /mnt/jfs         # the same, in the background
  jfs umount /mnt/jfs
  jfs stats /mnt/jfs            # operations per second, live
  jfs profile /mnt/jfs          # the access log, summarized live`,
		Commands:       []*cli.Command{mountCommand(), umountCommand(), benchCommand(), statsCommand(), profileCommand()},
		ExitErrHandler: func(*cli.Context, error) {},
	}
}

func umountCommand() *cli.Command {
	return &cli.Command{
		Name:      "umount",
		Aliases:   []string{"unmount"},
		Usage:     "unmount a jfs file system",
		ArgsUsage: "MOUNTPOINT",
		Description: `Unmounts MOUNTPOINT; the mount process then closes its session and exits.
An unmount fails while files are open on the mount unless --lazy is given, which
detaches it now and lets it go when the last file closes.`,
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "lazy", Aliases: []string{"l"}, Usage: "detach now even if the file system is busy"},
		},
		Action: runUmount,
	}
}

func runUmount(c *cli.Context) error {
	if c.Args().Len() != 1 {
		return errors.New("want exactly one argument, the mount point (see jfs umount --help)")
	}
	mnt, err := filepath.Abs(c.Args().First())
	if err != nil {
		return err
	}
	flags := 0
	if c.Bool("lazy") {
		flags = unmountDetach
	}
	err = unmount(mnt, flags)
	if err == nil {
		return nil
	}
	// Without the privilege to unmount, fusermount3 can, for the user who
	// mounted.
	args := []string{"-u", mnt}
	if c.Bool("lazy") {
		args = []string{"-u", "-z", mnt}
	}
	out, ferr := exec.Command("fusermount3", args...).CombinedOutput()
	if ferr == nil {
		return nil
	}
	return fmt.Errorf("unmount %s: %w (fusermount3: %v: %s)", mnt, err, ferr, out)
}
