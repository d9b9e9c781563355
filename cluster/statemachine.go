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
// entry the state machine cannot decode stops the node: applying the rest of
// the log past it would make this replica diverge from the others.
func (s *stateMachine) ApplyBatch(logs []*raft.Log) []any {
	entries := make([]fsm.Entry, len(logs))
	for i, l := range logs {
		data := l.Data
		if l.Type != raft.LogCommand {
			data = noopEntry
		}
		entries[i] = fsm.Entry{Index: l.Index, Term: l.Term, Data: data}
	}
	start := time.Now()
	results, err := s.fsm.ApplyBatch(entries)
	s.metrics.Load().observeApply(len(entries), time.Since(start))
	if err != nil {
		s.log.Error("cannot apply the raft log; stopping", "error", err)
		panic(fmt.Sprintf("jfsd %s: cannot apply the raft log: %v", s.cfg.ID, err))
	}
	out := make([]any, len(results))
	for i, r := range results {
		out[i] = r
	}
	return out
}

func (s *stateMachine) Snapshot() (raft.FSMSnapshot, error) {
	snap, err := s.fsm.Snapshot()
	if err != nil {
		return nil, err
	}
	return fsmSnapshot{snap}, nil
}

func (s *stateMachine) Restore(rc io.ReadCloser) error {
	defer rc.Close()
	return s.fsm.Restore(rc)
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
