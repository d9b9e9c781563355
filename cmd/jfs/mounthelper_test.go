package main

import (
	"slices"
	"strings"
	"testing"
)

func TestParseHelperArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want []string // the jfs mount command line
	}{
		{[]string{"h:1,h:2", "/mnt/jfs"},
			[]string{"jfs", "mount", "--background", "--servers", "h:1,h:2", "/mnt/jfs"}},
		{[]string{"h:1", "/mnt/jfs", "-o", "rw,_netdev,attr-cache=2s,noatime,read-merging=false,x-systemd.automount,defaults", "-t", "jfs"},
			[]string{"jfs", "mount", "--background", "--servers", "h:1", "--attr-cache=2s", "--noatime", "--read-merging=false", "/mnt/jfs"}},
		{[]string{"-nv", "-oentry-cache=0", "-tfuse.jfs", "h:1", "/m", "-o", `log-file="/var/log/a,b.log"`},
			[]string{"jfs", "mount", "--background", "--servers", "h:1", "--entry-cache=0", "--log-file=/var/log/a,b.log", "/m"}},
		{[]string{"h:1", "/m", "-s", "-o", "frobnicate,metrics="},
			[]string{"jfs", "mount", "--background", "--servers", "h:1", "--metrics=", "/m"}},
	} {
		ha, err := parseHelperArgs(newApp(), tc.args)
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !slices.Equal(ha.jfsArgs, tc.want) {
			t.Errorf("%q:\n got %q\nwant %q", tc.args, ha.jfsArgs, tc.want)
		}
	}
}

func TestParseHelperArgsFlags(t *testing.T) {
	ha, err := parseHelperArgs(newApp(), []string{"h:1", "/m", "-sfnv", "-o", "unknown"})
	if err != nil || !ha.sloppy || !ha.fake || !ha.verbose {
		t.Errorf("-sfnv: %+v %v, want sloppy, fake and verbose", ha, err)
	}
	ha, err = parseHelperArgs(newApp(), []string{"h:1", "/m"})
	if err != nil || ha.sloppy || ha.fake || ha.verbose {
		t.Errorf("no flags: %+v %v", ha, err)
	}
}

func TestParseHelperArgsRefuses(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string // in the error
	}{
		{[]string{"h:1", "/m", "-o", "frobnicate"}, `unknown option "frobnicate"`},
		{[]string{"h:1", "/m", "-o", "attr-cache"}, "attr-cache needs a value"},
		{[]string{"h:1", "/m", "-o", "noatime=maybe"}, "noatime=maybe"},
		{[]string{"h:1", "/m", "-o", "ro"}, "read-only"},
		{[]string{"h:1", "/m", "-o", "servers=h:2"}, "servers are the device"},
		{[]string{"h:1", "/m", "-o", "background"}, "always serves in the background"},
		{[]string{"h:1", "/m", "-o", `log-file="x`}, "unbalanced"},
		{[]string{"h:1", "/m", "-t", "ext4"}, "-t ext4"},
		{[]string{"h:1", "/m", "-N", "/proc/1/ns/mnt"}, "namespace"},
		{[]string{"h:1", "/m", "-x"}, "unknown flag -x"},
		{[]string{"h:1", "/m", "-o"}, "-o needs a value"},
		{[]string{"/m"}, "want two arguments"},
		{[]string{"h:1", "/m", "extra"}, "want two arguments"},
	} {
		_, err := parseHelperArgs(newApp(), tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: error %v, want it to mention %q", tc.args, err, tc.want)
		}
	}
}
