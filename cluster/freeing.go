package cluster

import (
	"context"
	"time"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// freeCheckInterval is how often the leader looks for dead file data left
// by large truncates and removals (fsm/freeing.go).
const freeCheckInterval = 200 * time.Millisecond

// freeLoop frees dead file data on the leader: while the state machine has
// some and this node is the ready leader, it proposes FreeData commands of
// fsm.FreeStep blocks, one after another, so that other commands wait
// behind at most one step. A new leader picks up where the old one
// stopped: what is left is in the replicated state.
func (n *Node) freeLoop(every time.Duration) {
	defer n.wg.Done()
	tick := time.NewTicker(every)
	defer tick.Stop()
	for {
		select {
		case <-n.stopped:
			return
		case <-tick.C:
		}
		for n.ready() && n.fsm.PendingFrees() {
			ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
			resp, err := n.Propose(ctx, cmdFreeData, nil, &jfspb.FreeDataRequest{MaxBlocks: fsm.FreeStep})
			cancel()
			if err != nil {
				n.log.Warn("freeing dead file data", "error", err)
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
	}
}
