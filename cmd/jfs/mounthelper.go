package main

// jfs as mount(8)'s external helper. "make install" links /sbin/mount.jfs to
// jfs; mount -t jfs SPEC DIR -o OPTIONS (or an /etc/fstab line of type jfs)
// then runs
//
//	/sbin/mount.jfs SPEC DIR [-sfnv] [-N namespace] [-o options] [-t type]
//
// (mount(8), "EXTERNAL HELPERS"). SPEC is the servers list, each option is a
// flag of jfs mount, and the helper runs "jfs mount -d": it returns once the
// file system is mounted, leaving the mount process serving it.

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"
)

// mountHelperName is the name under which jfs acts as mount(8)'s helper.
const mountHelperName = "mount.jfs"

// Exit codes of a mount helper, as mount(8) defines them.
const (
	exitUsage   = 1  // incorrect invocation
	exitFailure = 32 // mount failure
)

// genericMountOptions are options that mount(8) and fstab use for every file
// system and that have no meaning for jfs: the helper accepts and ignores
// them. Options starting with "x-" (x-systemd.*, x-mount.* ...) and
// "comment=" are ignored too.
var genericMountOptions = map[string]bool{
	"defaults": true, "rw": true, "auto": true, "noauto": true, "_netdev": true, "nofail": true,
	"user": true, "nouser": true, "users": true, "owner": true, "group": true,
	"suid": true, "nosuid": true, "dev": true, "nodev": true, "exec": true, "noexec": true,
	"async": true, "relatime": true, "loud": true, "silent": true,
}

// helperFlagsNotOptions are jfs mount flags that cannot be given as -o
// options, with the reason.
var helperFlagsNotOptions = map[string]string{
	"servers":    "the servers are the device: mount -t jfs HOST:PORT,... DIR",
	"background": "mount.jfs always serves in the background",
}

// helperArgs is what mount(8) asked the helper for.
type helperArgs struct {
	spec, dir string
	sloppy    bool // -s: ignore unknown options instead of failing
	fake      bool // -f: do everything but mount
	verbose   bool // -v
	// jfsArgs is the jfs mount command line that does the mount.
	jfsArgs []string
	// ignored lists the options that were ignored, for -v.
	ignored []string
}

// runMountHelper serves mount(8): it translates its arguments into a
// "jfs mount -d" command line and runs it with app. It returns the exit
// code; a failure's reason goes to stderr, where mount(8) shows it.
func runMountHelper(app *cli.App, args []string) int {
	ha, err := parseHelperArgs(app, args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "%s: %v\n", mountHelperName, err)
		return exitUsage
	}
	if ha.verbose {
		if len(ha.ignored) > 0 {
			fmt.Fprintf(os.Stderr, "%s: ignoring %s\n", mountHelperName, strings.Join(ha.ignored, ","))
		}
		fmt.Fprintf(os.Stderr, "%s: running %s\n", mountHelperName, strings.Join(ha.jfsArgs, " "))
	}
	if ha.fake {
		return 0
	}
	if !ha.verbose {
		app.Writer = io.Discard // the mount process's pid
	}
	commandLine = ha.jfsArgs
	if err := app.Run(commandLine); err != nil {
		fmt.Fprintf(os.Stderr, "%s: %s on %s: %v\n", mountHelperName, ha.spec, ha.dir, err)
		return exitFailure
	}
	return 0
}

// parseHelperArgs reads mount(8)'s arguments: SPEC and DIR, then the flags
// -s -f -n -v (alone or together, as -sfnv), -N NS, -o OPTIONS and -t TYPE,
// in any order. Each option of OPTIONS is KEY=VALUE for a flag of jfs mount
// that takes a value, KEY or KEY=true|false for a flag that is on or off.
func parseHelperArgs(app *cli.App, args []string) (*helperArgs, error) {
	ha := &helperArgs{}
	var positional, options []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if len(a) < 2 || a[0] != '-' {
			positional = append(positional, a)
			continue
		}
		switch a[1] {
		case 'o', 't', 'N':
			val := a[2:]
			if val == "" {
				if i+1 == len(args) {
					return nil, fmt.Errorf("%s needs a value", a)
				}
				i++
				val = args[i]
			}
			switch a[1] {
			case 'o':
				opts, err := splitOptions(val)
				if err != nil {
					return nil, err
				}
				options = append(options, opts...)
			case 't':
				if val != "jfs" && val != "fuse.jfs" {
					return nil, fmt.Errorf("-t %s: this helper mounts jfs only", val)
				}
			case 'N':
				return nil, fmt.Errorf("-N %s: mounting in another namespace is not supported", val)
			}
			continue
		}
		for _, f := range a[1:] {
			switch f {
			case 's':
				ha.sloppy = true
			case 'f':
				ha.fake = true
			case 'n': // there is no /etc/mtab to write
			case 'v':
				ha.verbose = true
			default:
				return nil, fmt.Errorf("unknown flag -%c in %s (want SPEC DIR [-sfnv] [-o options] [-t jfs])", f, a)
			}
		}
	}
	if len(positional) != 2 {
		return nil, fmt.Errorf("want two arguments, the servers (HOST:PORT,...) and the mount point, got %d (%s)",
			len(positional), strings.Join(positional, " "))
	}
	ha.spec, ha.dir = positional[0], positional[1]

	flags, err := mountFlagKinds(app)
	if err != nil {
		return nil, err
	}
	ha.jfsArgs = []string{"jfs", "mount", "--background", "--servers", ha.spec}
	for _, o := range options {
		key, val, hasVal := strings.Cut(o, "=")
		if genericMountOptions[key] || strings.HasPrefix(key, "x-") || key == "comment" {
			ha.ignored = append(ha.ignored, o)
			continue
		}
		if why, ok := helperFlagsNotOptions[key]; ok {
			return nil, fmt.Errorf("option %s: %s", key, why)
		}
		isBool, known := flags[key]
		switch {
		case key == "ro":
			return nil, errors.New("option ro: jfs has no read-only mounts")
		case !known && ha.sloppy:
			fmt.Fprintf(os.Stderr, "%s: ignoring unknown option %s (-s)\n", mountHelperName, o)
			continue
		case !known:
			return nil, fmt.Errorf("unknown option %q (the options are the flags of jfs mount, see jfs mount --help)", o)
		case isBool && hasVal:
			if _, err := strconv.ParseBool(val); err != nil {
				return nil, fmt.Errorf("option %s: want %s, %s=true or %s=false", o, key, key, key)
			}
			ha.jfsArgs = append(ha.jfsArgs, "--"+key+"="+val)
		case isBool:
			ha.jfsArgs = append(ha.jfsArgs, "--"+key)
		case !hasVal:
			return nil, fmt.Errorf("option %s needs a value: %s=VALUE", key, key)
		default:
			ha.jfsArgs = append(ha.jfsArgs, "--"+key+"="+val)
		}
	}
	ha.jfsArgs = append(ha.jfsArgs, ha.dir)
	return ha, nil
}

// mountFlagKinds maps the name of every flag of app's mount command to
// whether it is a boolean flag.
func mountFlagKinds(app *cli.App) (map[string]bool, error) {
	for _, cmd := range app.Commands {
		if cmd.Name != "mount" {
			continue
		}
		kinds := map[string]bool{}
		for _, f := range cmd.Flags {
			_, isBool := f.(*cli.BoolFlag)
			kinds[f.Names()[0]] = isBool
		}
		return kinds, nil
	}
	return nil, errors.New("jfs has no mount command")
}

// splitOptions splits a comma-separated option list. A value may be quoted
// with double quotes to hold commas: tls-ca="/etc/a,b.pem".
func splitOptions(s string) ([]string, error) {
	var opts []string
	var cur strings.Builder
	quoted := false
	for _, r := range s {
		switch {
		case r == '"':
			quoted = !quoted
		case r == ',' && !quoted:
			if cur.Len() > 0 {
				opts = append(opts, cur.String())
			}
			cur.Reset()
		default:
			cur.WriteRune(r)
		}
	}
	if quoted {
		return nil, fmt.Errorf("-o %s: unbalanced double quote", s)
	}
	if cur.Len() > 0 {
		opts = append(opts, cur.String())
	}
	return opts, nil
}
