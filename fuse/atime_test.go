package fuse

import (
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestAtimeDue(t *testing.T) {
	const now, hour = int64(1_800_000_000e9), int64(3600e9)
	for _, tc := range []struct {
		name                string
		atime, mtime, ctime int64
		want                bool
	}{
		{"new file", now - hour, now - hour, now - hour, true},
		{"written since", now - 2*hour, now - hour, now - hour, true},
		{"changed since", now - 2*hour, now - 3*hour, now - hour, true},
		{"read since", now - hour, now - 2*hour, now - 2*hour, false},
		{"day old", now - 24*hour, now - 48*hour, now - 48*hour, true},
		{"almost a day old", now - 24*hour + 1, now - 48*hour, now - 48*hour, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := &jfspb.Attr{AtimeNs: tc.atime, MtimeNs: tc.mtime, CtimeNs: tc.ctime}
			if got := atimeDue(a, now); got != tc.want {
				t.Errorf("atimeDue = %v, want %v", got, tc.want)
			}
		})
	}
}
