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
		if !retry && n.ready() && !n.freeOrphans() {
			retry = true
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

// freeOrphans frees the orphans (inodes without a name, fsm/orphans.go)
// that the leader's memory shows no handle of, in FreeOrphans commands of
// up to fsm.MaxFreeOrphans. It frees nothing until every live session has
// reported its open files to this leader (openTable.pinUnused): before
// that an orphan may be open on a mount this leader has not heard from.
// The orphans are pinned while their command is in flight, so an open of
// one waits and then finds it gone. It reports false when a proposal
// failed.
func (n *Node) freeOrphans() bool {
	for {
		orphans := n.fsm.Orphans(fsm.MaxFreeOrphans)
		if len(orphans) == 0 {
			return true
		}
		var live []uint64
		for _, s := range n.fsm.Sessions() {
			live = append(live, s.Id)
		}
		free := n.opens.pinUnused(live, orphans)
		if len(free) == 0 {
			return true // all open, or the table is not complete yet
		}
		ctx, cancel := context.WithTimeout(context.Background(), n.cfg.ApplyTimeout)
		_, err := n.Propose(ctx, cmdFreeOrphans, nil, &jfspb.FreeOrphansRequest{Inos: free})
		cancel()
		if err != nil {
			// The entry may still be applied: an open of a pinned inode
			// must not be checked before it is, or is known dropped.
			// A barrier waits for every entry before it; failing, this
			// node no longer leads and its opens fail their reads.
			n.raft.Barrier(n.cfg.ApplyTimeout).Error()
			n.opens.unpin(free)
			n.log.Warn("freeing orphans", "inodes", len(free), "error", err)
			return false
		}
		n.opens.unpin(free)
		if len(free) < len(orphans) || len(orphans) < fsm.MaxFreeOrphans {
			return true
		}
	}
}
