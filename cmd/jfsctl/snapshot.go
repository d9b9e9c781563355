package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/fsm"
)

// snapshotCommand is `jfsctl snapshot save|inspect|restore FILE`: backups of
// the whole state, in the format of fsm/backupfile.go.
var snapshotCommand = &cli.Command{
	Name:  "snapshot",
	Usage: "back up and restore the whole file system",
	Subcommands: []*cli.Command{
		{Name: "save", Usage: "stream a consistent backup of the whole state from the leader to FILE", ArgsUsage: "FILE", Action: snapshotSave},
		{Name: "inspect", Usage: "verify FILE and print its index, term, size, inode count and checksum", ArgsUsage: "FILE", Action: snapshotInspect},
		{Name: "restore", Usage: "replace the whole state of the cluster with FILE: every session ends, mounts see the restored tree", ArgsUsage: "FILE", Action: snapshotRestore},
	},
}

// snapshotSave writes the backup to a temporary file beside FILE, verifies
// it, and only then renames it to FILE: a failed save leaves no partial file
// under that name.
func snapshotSave(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	path := c.Args().First()
	cl, _, cancel, err := newClient(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".part-*")
	if err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	defer os.Remove(tmp.Name())
	err = cl.AdminStream(c.Context, func(ctx context.Context, a jfspb.AdminClient) error {
		if _, err := tmp.Seek(0, io.SeekStart); err != nil {
			return err
		}
		if err := tmp.Truncate(0); err != nil {
			return err
		}
		stream, err := a.SnapshotSave(ctx, &jfspb.SnapshotSaveRequest{})
		if err != nil {
			return err
		}
		for {
			chunk, err := stream.Recv()
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			if _, err := tmp.Write(chunk.Data); err != nil {
				return err
			}
		}
	})
	if err == nil {
		err = tmp.Sync()
	}
	if err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot save: %w", err)
	}
	fi, err := tmp.Stat()
	if err != nil {
		tmp.Close()
		return fmt.Errorf("snapshot save: %w", err)
	}
	h, sum, err := fsm.VerifyBackup(tmp, fi.Size())
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("snapshot save: the received backup does not verify: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("snapshot save: %w", err)
	}
	fmt.Fprintf(c.App.Writer, "saved %s: index %d, term %d, %d bytes of state, %d inodes, sha256 %x\n", path, h.Index, h.Term, h.Size, h.Inodes, sum)
	return nil
}

// snapshotInspect verifies the whole file, the state inside it included,
// and prints its header and checksum.
func snapshotInspect(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	path := c.Args().First()
	dir, err := os.MkdirTemp("", "jfsctl-inspect-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	h, sum, err := fsm.OpenBackup(path, filepath.Join(dir, "state"))
	if err != nil {
		return fmt.Errorf("snapshot inspect %s: %w", path, err)
	}
	fmt.Fprintf(c.App.Writer, "file      %s\nformat    %d\nindex     %d\nterm      %d\nsize      %d\ninodes    %d\nchecksum  sha256:%x\n",
		path, fsm.BackupVersion, h.Index, h.Term, h.Size, h.Inodes, sum)
	return nil
}

// snapshotRestore verifies FILE here first, so that a damaged file is
// refused without being sent, then streams it to the leader, which verifies
// it again before it changes anything.
func snapshotRestore(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	path := c.Args().First()
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("snapshot restore: %w", err)
	}
	if _, _, err := fsm.VerifyBackup(f, fi.Size()); err != nil {
		return fmt.Errorf("snapshot restore %s: refused, nothing changed: %w", path, err)
	}
	cl, _, cancel, err := newClient(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	var resp *jfspb.SnapshotRestoreResponse
	err = cl.AdminStream(c.Context, func(ctx context.Context, a jfspb.AdminClient) error {
		resp, err = sendBackup(ctx, a, io.NewSectionReader(f, 0, fi.Size()))
		return err
	})
	if err != nil {
		return fmt.Errorf("snapshot restore %s: %w", path, err)
	}
	if err := errnoErr("snapshot restore", resp.Errno); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "restored %s: index %d, term %d, %d bytes of state, %d inodes; %d sessions of the backup ended\n",
		path, resp.Index, resp.Term, resp.Size, resp.Inodes, resp.SessionsEnded)
	return nil
}

// backupChunk is the most bytes one message carries (cluster.BackupChunk).
const backupChunk = 1 << 20

// sendBackup streams r to the leader's SnapshotRestore in chunks of at most
// backupChunk bytes.
func sendBackup(ctx context.Context, a jfspb.AdminClient, r io.Reader) (*jfspb.SnapshotRestoreResponse, error) {
	stream, err := a.SnapshotRestore(ctx)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, backupChunk)
	for {
		n, rerr := io.ReadFull(r, buf)
		if n > 0 {
			if err := stream.Send(&jfspb.SnapshotChunk{Data: buf[:n]}); err != nil {
				// The server ended the stream; its status says why.
				if _, rerr := stream.CloseAndRecv(); rerr != nil {
					return nil, rerr
				}
				return nil, err
			}
		}
		if errors.Is(rerr, io.EOF) || errors.Is(rerr, io.ErrUnexpectedEOF) {
			break
		}
		if rerr != nil {
			return nil, rerr
		}
	}
	return stream.CloseAndRecv()
}
