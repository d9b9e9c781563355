package cluster

import (
	"slices"
	"testing"
)

func TestCompareDigests(t *testing.T) {
	a, b, c := [32]byte{1}, [32]byte{2}, [32]byte{3}
	for _, tc := range []struct {
		name    string
		members []string
		sums    map[string][32]byte
		agreed  bool
		differ  []string
	}{
		{"all agree", []string{"n1", "n2", "n3"}, map[string][32]byte{"n1": a, "n2": a, "n3": a}, true, nil},
		{"one follower differs", []string{"n1", "n2", "n3"}, map[string][32]byte{"n1": a, "n2": b, "n3": a}, true, []string{"n2"}},
		{"the leader n1 differs", []string{"n1", "n2", "n3"}, map[string][32]byte{"n1": b, "n2": a, "n3": a}, true, []string{"n1"}},
		{"one did not answer, two agree", []string{"n1", "n2", "n3"}, map[string][32]byte{"n1": a, "n3": a}, true, nil},
		{"one did not answer, two differ", []string{"n1", "n2", "n3"}, map[string][32]byte{"n1": a, "n3": b}, false, nil},
		{"all differ", []string{"n1", "n2", "n3"}, map[string][32]byte{"n1": a, "n2": b, "n3": c}, false, nil},
		{"two of four is no majority", []string{"n1", "n2", "n3", "n4"}, map[string][32]byte{"n1": a, "n2": a, "n3": b, "n4": b}, false, nil},
		{"five members, two differ", []string{"n1", "n2", "n3", "n4", "n5"}, map[string][32]byte{"n1": a, "n2": b, "n3": a, "n4": c, "n5": a}, true, []string{"n2", "n4"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := compareDigests(tc.members, tc.sums)
			if v.agreed != tc.agreed || !slices.Equal(v.differ, tc.differ) {
				t.Fatalf("got agreed=%v differ=%v, want agreed=%v differ=%v", v.agreed, v.differ, tc.agreed, tc.differ)
			}
			if v.agreed && v.majority != a {
				t.Fatalf("majority %x, want %x", v.majority[:1], a[:1])
			}
		})
	}
}
