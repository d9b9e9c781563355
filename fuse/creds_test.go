package fuse

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func TestParseGroups(t *testing.T) {
	for in, want := range map[string][]uint32{
		"":               nil,
		"\t":             nil,
		"\t0 4 27 1000 ": {0, 4, 27, 1000},
		" 4294967294":    {4294967294},
		" 12 x 13":       {12},
	} {
		if got := parseGroups([]byte(in)); !slices.Equal(got, want) {
			t.Errorf("parseGroups(%q) = %v, want %v", in, got, want)
		}
	}
}

func TestProcGroupsOfSelf(t *testing.T) {
	want, err := os.Getgroups()
	if err != nil {
		t.Skip(err)
	}
	got := procGroups(uint32(os.Getpid()))
	if len(got) != len(want) {
		t.Fatalf("groups of this process from /proc: %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != uint32(want[i]) {
			t.Fatalf("groups of this process from /proc: %v, want %v", got, want)
		}
	}
}

// TestCredCache: the groups of a pid are read once per credTTL; a request
// of the pid with other ids, or after the TTL, reads them again.
func TestCredCache(t *testing.T) {
	cc := newCredCache()
	reads := 0
	cc.groups = func(pid uint32) []uint32 {
		reads++
		return []uint32{7, 1000, 9}
	}
	now := time.Unix(1000, 0)
	caller := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1000}, Pid: 42}
	c := cc.cred(caller, now)
	if c.Uid != 1000 || c.Gid != 1000 || !slices.Equal(c.Groups, []uint32{7, 9}) {
		t.Fatalf("cred %v", c)
	}
	if c2 := cc.cred(caller, now.Add(credTTL/2)); c2 != c || reads != 1 {
		t.Fatalf("second request within the TTL: %d reads, same cred %v", reads, c2 == c)
	}
	other := &fuse.Caller{Owner: fuse.Owner{Uid: 0, Gid: 0}, Pid: 42}
	if c3 := cc.cred(other, now.Add(credTTL/2)); c3.Uid != 0 || reads != 2 {
		t.Fatalf("the pid with other ids: uid %d after %d reads", c3.Uid, reads)
	}
	cc.cred(other, now.Add(2*credTTL))
	if reads != 3 {
		t.Fatalf("after the TTL: %d reads, want 3", reads)
	}
	kernel := &fuse.Caller{}
	if c4 := cc.cred(kernel, now); len(c4.Groups) != 0 || reads != 3 {
		t.Fatalf("pid 0: groups %v after %d reads", c4.Groups, reads)
	}
}

// BenchmarkCredCache is the cost the credentials add to each request of a
// process whose groups are cached.
func BenchmarkCredCache(b *testing.B) {
	cc := newCredCache()
	caller := &fuse.Caller{Owner: fuse.Owner{Uid: 1000, Gid: 1000}, Pid: uint32(os.Getpid())}
	for b.Loop() {
		cc.cred(caller, time.Now())
	}
}

// BenchmarkProcGroups is the cost of reading a process's groups, once per
// process and credTTL.
func BenchmarkProcGroups(b *testing.B) {
	pid := uint32(os.Getpid())
	for b.Loop() {
		procGroups(pid)
	}
}
