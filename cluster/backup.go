package cluster

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"time"

	"github.com/hashicorp/raft"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// Backup and restore (DESIGN.md, "Backup and restore"). SnapshotSave
// streams the leader's state in the backup file format of fsm/backupfile.go;
// SnapshotRestore takes such a file, verifies all of it, and makes it the
// state of every node with raft's user restore.

// BackupChunk is the most bytes of a backup file one message carries.
const BackupChunk = 1 << 20

// chunkSender sends what is written to it as SnapshotChunk messages of at
// most BackupChunk bytes.
type chunkSender struct {
	send func(*jfspb.SnapshotChunk) error
}

func (c chunkSender) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		k := min(len(p), BackupChunk)
		// The message owns its bytes: gRPC may hold them after Send.
		if err := c.send(&jfspb.SnapshotChunk{Data: append([]byte(nil), p[:k]...)}); err != nil {
			return n, err
		}
		n += k
		p = p[k:]
	}
	return n, nil
}

// SnapshotSave streams a backup of the whole state from the leader. The
// backup holds every write that completed before the call (the read path's
// rule): the leader confirms its leadership and waits until it has applied
// its commit index, then streams a consistent view while it goes on
// applying.
func (s *Server) SnapshotSave(_ *jfspb.SnapshotSaveRequest, stream jfspb.Admin_SnapshotSaveServer) error {
	n := s.n
	if !n.ready() {
		return s.toStatus(ErrNotLeader)
	}
	if err := n.ReadIndex(stream.Context()); err != nil {
		return s.toStatus(err)
	}
	snap, err := n.fsm.Snapshot()
	if err != nil {
		return s.toStatus(err)
	}
	defer snap.Release()
	w := bufio.NewWriterSize(chunkSender{send: stream.Send}, BackupChunk)
	h, _, err := snap.WriteBackup(w, n.raft.CurrentTerm())
	if err == nil {
		err = w.Flush()
	}
	if err != nil {
		return s.toStatus(fmt.Errorf("stream backup: %w", err))
	}
	n.log.Info("backup saved", "index", h.Index, "bytes", h.Size, "inodes", h.Inodes)
	return nil
}

// SnapshotRestore receives a backup file, verifies it whole (length,
// checksum, and that its state opens as a jfs state file that agrees with
// the header) before anything changes, and restores it (Node.restoreBackup).
// A bad file is refused with InvalidArgument and a message that says what
// is wrong; the cluster is unchanged.
func (s *Server) SnapshotRestore(stream jfspb.Admin_SnapshotRestoreServer) error {
	n := s.n
	if !n.ready() {
		return s.toStatus(ErrNotLeader)
	}
	if !n.restoreMu.TryLock() {
		return status.Error(codes.FailedPrecondition, "a restore is already running")
	}
	defer n.restoreMu.Unlock()
	dir := n.cfg.DataDir
	if dir == "" {
		dir = os.TempDir()
	}
	f, err := os.CreateTemp(dir, "restore-*.jfsbak")
	if err != nil {
		return s.toStatus(fmt.Errorf("restore: %w", err))
	}
	defer os.Remove(f.Name())
	if err := receiveBackup(stream, f); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return s.toStatus(fmt.Errorf("restore: %w", err))
	}
	state := filepath.Join(dir, filepath.Base(f.Name())+".state")
	h, _, err := fsm.OpenBackup(f.Name(), state)
	if errors.Is(err, fsm.ErrBadBackup) {
		n.log.Warn("backup refused", "error", err)
		return status.Error(codes.InvalidArgument, "restore refused, nothing changed: "+err.Error())
	}
	if err != nil {
		return s.toStatus(fmt.Errorf("restore: %w", err))
	}
	defer os.Remove(state)
	ended, err := n.restoreBackup(stream.Context(), h, state)
	if err != nil {
		return s.toStatus(err)
	}
	return stream.SendAndClose(&jfspb.SnapshotRestoreResponse{Index: h.Index, Term: h.Term, Size: h.Size, Inodes: h.Inodes, SessionsEnded: ended})
}

// receiveBackup copies the chunks of stream to w. A chunk past BackupChunk
// is refused.
func receiveBackup(stream jfspb.Admin_SnapshotRestoreServer, w io.Writer) error {
	for {
		c, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		if len(c.Data) > BackupChunk {
			return status.Errorf(codes.InvalidArgument, "restore refused, nothing changed: a chunk of %d bytes (at most %d)", len(c.Data), BackupChunk)
		}
		if _, err := w.Write(c.Data); err != nil {
			return status.Errorf(codes.Internal, "restore: %v", err)
		}
	}
}

// restoreBackup makes the verified state file at statePath, described by h,
// the state of every node, and returns how many sessions of it ended.
//
// The leader first applies Restored to the file (fsm.PrepareRestore): every
// session of the backup ends, and the member table becomes this cluster's;
// so the state every node installs is final, and a leader change halfway
// leaves no session of the backup alive. While the restore runs the leader
// is not ready: reads, heartbeats and the integrity check wait or are
// redirected (clients retry), blocked lock requests fail with ESTALE, and
// the session timers stop. raft.Restore installs the state on this node
// under a new index S past every index used so far, and sends it to the
// followers as a snapshot; it returns once a majority has it. Every state
// machine then holds the state's own applied index, which is below S, so
// every later entry is applied on every node, also after a restart
// (DESIGN.md). A last proposal moves the applied index past S, which the
// read path waits for.
func (n *Node) restoreBackup(ctx context.Context, h fsm.BackupHeader, statePath string) (uint32, error) {
	term := n.readyTerm.Load()
	if term == 0 || !n.ready() {
		return 0, ErrNotLeader
	}
	applied, ended, err := fsm.PrepareRestore(statePath, n.fsm.Members(), time.Now().UnixNano())
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	in, err := os.Open(statePath)
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}
	defer in.Close()
	fi, err := in.Stat()
	if err != nil {
		return 0, fmt.Errorf("restore: %w", err)
	}

	n.readyTerm.Store(0)
	n.sessions.stop()
	n.opens.stop()
	stopped := time.Now()
	n.locks.endAll(syscall.ESTALE)
	// Ready again when done, if this node still leads in the same term; if
	// not, the next leader starts its own timers (watchLeadership).
	defer func() {
		if n.raft.State() == raft.Leader && n.raft.CurrentTerm() == term {
			n.readyTerm.Store(term)
			// No heartbeat was taken meanwhile: that time is not
			// held against a session registered since.
			n.sessions.start(time.Since(stopped))
			n.opens.start(n.raft.LastIndex()) // every session of the backup has ended
			n.requestCheck()
		}
	}()

	n.log.Warn("restoring a backup: the whole state is replaced", "index", h.Index, "bytes", fi.Size(), "inodes", h.Inodes, "sessions_ended", ended)
	meta := &raft.SnapshotMeta{Version: raft.SnapshotVersionMax, Index: applied, Term: h.Term, Size: fi.Size()}
	if err := n.raft.Restore(meta, in, n.cfg.ApplyTimeout); err != nil {
		return 0, fmt.Errorf("restore: %w", raftErr(err))
	}
	// The state machine's applied index is the state's, below raft's; the
	// next command moves it past, and reads wait for that.
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), n.cfg.ApplyTimeout)
	defer cancel()
	if _, err := n.Propose(ctx, cmdSetMember, nil, &jfspb.SetMemberRequest{Member: n.self()}); err != nil {
		n.log.Warn("backup restored; announcing the leader after it failed", "error", err)
	}
	n.log.Warn("backup restored", "index", h.Index, "sessions_ended", ended)
	return ended, nil
}

// endAll answers every waiting lock RPC with errno: the whole state was
// replaced and the waiters' sessions are gone.
func (lw *lockWaits) endAll(errno syscall.Errno) {
	lw.endRPCs(waitResult{errno: errno})
}
