package cluster

import (
	"testing"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// TestStartDeadline: a new leader expires a session ttl after it was last
// recorded alive, gives a live client at least the grace to find it, and
// never waits past ttl+grace after the last record, however recently it
// took office; the time the cluster had no leader is not held against the
// session.
func TestStartDeadline(t *testing.T) {
	const ttl, grace = 30 * time.Second, 2 * time.Second
	t0 := time.Unix(1000, 0)
	alive := &jfspb.Session{CreatedNs: t0.Add(-time.Hour).UnixNano(), AliveNs: t0.UnixNano()}
	for _, tc := range []struct {
		name   string
		s      *jfspb.Session
		now    time.Time
		outage time.Duration
		want   time.Time
	}{
		{"recorded recently: ttl after the record", alive, t0.Add(time.Second), 0, t0.Add(ttl)},
		{"record almost lapsed: the grace", alive, t0.Add(ttl - time.Second), 0, t0.Add(ttl - time.Second + grace)},
		{"record lapsed: ttl+grace after it, not later", alive, t0.Add(ttl + time.Second), 0, t0.Add(ttl + grace)},
		{"long lapsed with leaders in office: ttl+grace after the record, at once", alive, t0.Add(time.Hour), 0, t0.Add(ttl + grace)},
		{"never recorded: from the registration", &jfspb.Session{CreatedNs: t0.UnixNano()}, t0, 0, t0.Add(ttl)},
		{"after an hour without a leader: a whole ttl from now", alive, t0.Add(time.Hour + time.Second), time.Hour, t0.Add(time.Hour + ttl)},
		{"after a short outage: ttl after the record, shifted by the outage", alive, t0.Add(ttl), 3 * time.Second, t0.Add(ttl + 3*time.Second)},
		{"negative outage counts as none", alive, t0.Add(time.Second), -time.Minute, t0.Add(ttl)},
	} {
		if got := startDeadline(tc.s, ttl, grace, tc.now, tc.outage); !got.Equal(tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, got.Sub(t0), tc.want.Sub(t0))
		}
	}
}
