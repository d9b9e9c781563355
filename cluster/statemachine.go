package cluster

import (
	"fmt"
	"io"
	"time"

	"github.com/hashicorp/raft"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// stateMachine adapts the node's fsm.FSM to raft.BatchingFSM.
type stateMachine Node

var _ raft.BatchingFSM = (*stateMachine)(nil)

// noopEntry stands for a raft configuration entry: raft hands those to the
// state machine too, and passing one on keeps the state machine's applied
// index equal to raft's, which the read path waits on. Type 0 is no command;
// marked skippable, the state machine records the index and moves on.
var noopEntry = mustSeal(&jfspb.LogEntry{Skippable: true})

func mustSeal(e *jfspb.LogEntry) []byte {
	b, err := fsm.Seal(e)
	if err != nil {
		panic(err)
	}
	return b
}

func (s *stateMachine) Apply(l *raft.Log) any {
	return s.ApplyBatch([]*raft.Log{l})[0]
}

// ApplyBatch applies a batch of committed entries in one bolt transaction. An
// entry the state machine cannot verify or decode stops the node: applying
// the rest of the log past it would make this replica diverge from the
// others. Raft goes on handing over entries; once apply has failed every
// later entry is answered with the error and nothing more is applied, and
// the node is failed (Node.Failed) for its owner to stop it.
func (s *stateMachine) ApplyBatch(logs []*raft.Log) []any {
	out := make([]any, len(logs))
	if err := s.applyErr.Load(); err != nil {
		for i := range out {
			out[i] = *err
		}
		return out
	}
	entries := make([]fsm.Entry, len(logs))
	for i, l := range logs {
		data := l.Data
		if l.Type != raft.LogCommand {
			data = noopEntry
		}
		entries[i] = fsm.Entry{Index: l.Index, Term: l.Term, Data: data}
	}
	start := time.Now()
	s.stateGen.Add(1) // odd: the state changes (reads.go)
	results, err := s.fsm.ApplyBatch(entries)
	s.stateGen.Add(1)
	if err == nil {
		s.caches.committed(entries[len(entries)-1].Index)
	}
	s.metrics.Load().observeApply(len(entries), time.Since(start))
	if err != nil {
		err = fmt.Errorf("node %s cannot apply the raft log, and stops: %w", s.cfg.ID, err)
		s.applyErr.Store(&err)
		(*Node)(s).fail(err)
		for i := range out {
			out[i] = err
		}
		return out
	}
	// Any command may have left dead file data (a truncate, an unlink, a
	// close, an expired session): let the leader look.
	(*Node)(s).kickFree()
	if s.logSize.add(logs, s.cfg.SnapshotThresholdBytes) {
		(*Node)(s).kickSnapshot()
	}
	marked := false
	for i, r := range results {
		out[i] = r
		_, ok := r.Resp.(*jfspb.MarkCorruptResponse)
		marked = marked || ok
	}
	if marked {
		(*Node)(s).refreshCorrupt()
	}
	return out
}

// Snapshot refuses once apply has failed: raft counts the failed entries as
// applied, and a snapshot labelled with its index would hold a state that
// lacks them.
//
// Raft calls it between applies. It first compacts the state file when
// that pays (the snapshot streams the whole file, free pages too), and
// sets the trailing logs for the log compaction after this snapshot by
// the size of the entries applied since the last one (disk.go).
func (s *stateMachine) Snapshot() (raft.FSMSnapshot, error) {
	if err := s.applyErr.Load(); err != nil {
		return nil, *err
	}
	if ok, err := s.fsm.CompactIfWorth(); err != nil {
		return nil, err
	} else if ok {
		s.log.Info("fsm.db compacted before a snapshot")
	}
	(*Node)(s).setTrailing(s.logSize.reset())
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	s.logSize.state.Store(snap.Size())
	return fsmSnapshot{snap}, nil
}

func (s *stateMachine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	if err := s.applyErr.Load(); err != nil {
		return *err
	}
	s.stateGen.Add(1)
	err := s.fsm.Restore(rc)
	s.stateGen.Add(1)
	if err != nil {
		return err
	}
	(*Node)(s).refreshCorrupt()
	(*Node)(s).kickFree()
	// Every lock queue may differ now: rebuild the wait-for graph.
	(*Node)(s).locks.changed(nil, true)
	// Anything may differ now: no grant of before holds.
	s.caches.restored()
	return nil
}

type fsmSnapshot struct{ s *fsm.Snapshot }

func (f fsmSnapshot) Persist(sink raft.SnapshotSink) error {
	if _, err := f.s.WriteTo(sink); err != nil {
		sink.Cancel()
		return fmt.Errorf("write snapshot: %w", err)
	}
	return sink.Close()
}

func (f fsmSnapshot) Release() { f.s.Release() }
