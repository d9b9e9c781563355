package cluster

import (
	"context"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// freeRetryPause is how long the leader waits before it tries again to free
// dead file data (left by large truncates and removals, fsm/freeing.go)
// after a FreeData proposal failed.
const freeRetryPause = 200 * time.Millisecond

// kickFree asks freeLoop to look for dead file data. It never blocks; kicks
// that come while a look is due already are merged into it.
func (n *Node) kickFree() {
	select {
	case n.freeKick <- struct{}{}:
	default:
	}
}

// freeLoop frees dead file data on the leader: while the state machine has
// some and this node is the ready leader, it proposes FreeData commands of
// fsm.FreeStep blocks, one after another, so that other commands wait
// behind at most one step. A new leader picks up where the old one
// stopped: what is left is in the replicated state.
//
// It looks only when kicked (kickFree): after each applied batch (only an
// applied command can leave dead data), after a snapshot is restored, when
// the node becomes the ready leader, and a pause after a failed step. So an
// idle node does no work here. Kicks that come while a look runs are merged
// into one more look; a look on a follower is two atomic loads, on the
// leader one bolt read transaction.
func (n *Node) freeLoop(every time.Duration) {
	defer n.wg.Done()
	for {
		select {
		case <-n.stopped:
			return
		case <-n.freeKick:
		}
		n.freeLooks.Add(1)
		retry := false
		for n.ready() && n.fsm.PendingFrees() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			resp, err := n.Propose(ctx, cmdFreeData, nil, &jfspb.FreeDataRequest{MaxBlocks: fsm.FreeStep})
			cancel()
			if err != nil {
				n.log.Warn("freeing dead file data", "error", err)
				retry = true
				break
			}
			if r, ok := resp.(*jfspb.FreeDataResponse); !ok || !r.More {
				break
			}
			select {
			case <-n.stopped:
				return
			default:
			}
		}
		if retry {
			select { // a failed step is tried again after a pause
			case <-n.stopped:
				return
			case <-time.After(every):
				n.kickFree()
			}
		}
	}
}
