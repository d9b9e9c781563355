package client

import (
	"context"
	"time"

	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// Lock delegation, the client's calls (fuse/delegated.go uses them).

// DelegReturnAs gives the delegation of r.Ino back under session (the one
// it was delegated to), exactly once, with the locks the mount holds.
func (c *Client) DelegReturnAs(ctx context.Context, session uint64, r *jfspb.DelegReturnRequest) (*jfspb.DelegReturnResponse, error) {
	return writeAs(ctx, c, session, c.cfg.AttemptTimeout, jfspb.MetaClient.DelegReturn, r, func(r *jfspb.DelegReturnRequest, h *jfspb.Header) { r.Header = h })
}

// DelegReport answers a report request of the leader.
func (c *Client) DelegReport(ctx context.Context, r *jfspb.DelegReportRequest) error {
	_, err := read(ctx, c, jfspb.MetaClient.DelegReport, r)
	return err
}

// DelegRecalls listens to the leader's recalls of the delegations of the
// client's current session until ctx ends: fn is called with each, in
// order (a recall has ReportID 0). connected is called each time a stream
// to a leader opens, with its session: a mount may then send again what a
// lost stream may have lost. The stream follows the leader; a lost one is
// opened again, with a pause that grows from MinBackoff to MaxBackoff while
// no stream opens.
func (c *Client) DelegRecalls(ctx context.Context, connected func(session uint64), fn func(session uint64, m *jfspb.DelegRecall)) {
	backoff := c.cfg.MinBackoff
	for ctx.Err() == nil {
		sid := c.Session()
		opened := false
		if sid != 0 {
			c.retry(ctx, 0, true, func(ctx context.Context, cc *grpc.ClientConn) error {
				st, err := jfspb.NewMetaClient(cc).DelegRecalls(ctx, &jfspb.DelegRecallsRequest{Session: sid})
				if err != nil {
					return err
				}
				if _, err := st.Recv(); err != nil { // the leader's first message: open
					return err
				}
				opened = true
				if connected != nil {
					connected(sid)
				}
				for {
					m, err := st.Recv()
					if err != nil {
						return nil // lost: opened again below
					}
					fn(sid, m)
				}
			})
		}
		if opened {
			backoff = c.cfg.MinBackoff
		}
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, c.cfg.MaxBackoff)
	}
}
