package client

import (
	"context"

	"google.golang.org/grpc"

	"github.com/jfs-dev/jfs/api/jfspb"
)

// CacheStream is a session's open invalidation stream at the leader
// (cluster/DESIGN.md "Coherent caches"). Its first event, the reset, has
// been received already: First.
type CacheStream struct {
	First  *jfspb.CacheEvent
	stream grpc.ServerStreamingClient[jfspb.CacheEvent]
	cancel context.CancelFunc
}

// Recv returns the next event; an error ends the stream.
func (s *CacheStream) Recv() (*jfspb.CacheEvent, error) { return s.stream.Recv() }

// Close ends the stream.
func (s *CacheStream) Close() { s.cancel() }

// WatchCaches opens the invalidation stream of session at the leader,
// following the leader as every request does, and returns it once its
// reset arrived. The stream lives until ctx ends or Close.
func (c *Client) WatchCaches(ctx context.Context, session uint64) (*CacheStream, error) {
	var out *CacheStream
	err := c.retry(ctx, c.cfg.AttemptTimeout, false, func(actx context.Context, cc *grpc.ClientConn) error {
		sctx, cancel := context.WithCancel(ctx)
		// The attempt's deadline bounds the wait for the reset only.
		stop := context.AfterFunc(actx, func() {
			if actx.Err() == context.DeadlineExceeded {
				cancel()
			}
		})
		st, err := jfspb.NewMetaClient(cc).CacheWatch(sctx, &jfspb.CacheWatchRequest{Session: session})
		var first *jfspb.CacheEvent
		if err == nil {
			first, err = st.Recv()
		}
		if !stop() || err != nil {
			cancel()
			if err == nil {
				err = context.DeadlineExceeded
			}
			return err
		}
		out = &CacheStream{First: first, stream: st, cancel: cancel}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// AckCaches acknowledges the events of stream up to seq. An errno answer
// (ESTALE) means the stream is not the session's current one at the
// leader: the caller opens a new one.
func (c *Client) AckCaches(ctx context.Context, session, stream, seq uint64) error {
	resp, err := read(ctx, c, jfspb.MetaClient.CacheAck, &jfspb.CacheAckRequest{Session: session, Stream: stream, Seq: seq})
	if err != nil {
		return err
	}
	return Errno(resp.Errno)
}
