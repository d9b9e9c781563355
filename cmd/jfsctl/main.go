// Command jfsctl is the operator's tool for a jfs cluster: its members,
// leader, sessions and locks.
package main

import (
	"context"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/internal/mtls"
)

func main() {
	if err := newApp(os.Stdout).Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "jfsctl:", err)
		os.Exit(1)
	}
}

func newApp(out io.Writer) *cli.App {
	jsonFlag := &cli.BoolFlag{Name: "json", Usage: "print JSON for scripts"}
	return &cli.App{
		Name:  "jfsctl",
		Usage: "inspect and operate a jfs cluster",
		Description: `jfsctl talks to the cluster's Admin service. Any node's API address will do:
requests that need the leader follow it.

  export JFS_SERVERS=10.0.0.1:7101,10.0.0.2:7101,10.0.0.3:7101
  jfsctl cluster status          # members, raft state, leader, term, indexes
  jfsctl cluster digest          # each replica's applied index and state digest
  jfsctl cluster health          # exit 0 when the cluster can take writes
  jfsctl locks ls                # every held, delegated and waiting lock, with path, host, pid
  jfsctl sessions ls             # client sessions: last heartbeat, locks held
  jfsctl sessions evict ID       # end a session now; its locks are released
  jfsctl leader transfer [ID]    # move the leadership
  jfsctl members add ID RAFT-ADDR API-ADDR
  jfsctl members remove ID
  jfsctl snapshot save FILE      # back up the whole state; inspect FILE, restore FILE
  jfsctl tls ca create --out DIR # a CA for the cluster; then tls cert create

Most commands take --json for scripts.`,
		Writer:         out,
		ExitErrHandler: func(*cli.Context, error) {},
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "servers", EnvVars: []string{"JFS_SERVERS"}, Usage: "API addresses of some or all nodes, HOST:PORT[,HOST:PORT...]"},
			&cli.DurationFlag{Name: "timeout", Value: 10 * time.Second, Usage: "give up after this long without a leader"},
		}, mtls.Flags(true)...),
		Commands: []*cli.Command{
			{
				Name:  "cluster",
				Usage: "the cluster as a whole",
				Subcommands: []*cli.Command{{
					Name:   "status",
					Usage:  "members, their addresses and raft state, leader, term, commit and applied index",
					Flags:  []cli.Flag{jsonFlag},
					Action: clusterStatus,
				}, {
					Name:   "digest",
					Usage:  "every member's applied index and a hash of its state machine: members at the same index must agree",
					Flags:  []cli.Flag{jsonFlag},
					Action: clusterDigest,
				}, healthCommand(jsonFlag)},
			},
			{
				Name:  "members",
				Usage: "add and remove nodes",
				Subcommands: []*cli.Command{
					{
						Name:      "add",
						Usage:     "add a node: it must already be running with an empty --data-dir and no --initial-cluster",
						ArgsUsage: "ID RAFT-ADDR API-ADDR",
						Flags:     []cli.Flag{&cli.BoolFlag{Name: "nonvoter", Usage: "add the node without a vote"}},
						Action:    membersAdd,
					},
					{Name: "remove", Usage: "remove a node from the cluster", ArgsUsage: "ID", Action: membersRemove},
				},
			},
			{
				Name:  "leader",
				Usage: "show or move the leader",
				Subcommands: []*cli.Command{
					{Name: "show", Usage: "print the leader's id and API address", Action: leaderShow},
					{Name: "transfer", Usage: "hand leadership to ID, or to any other voter", ArgsUsage: "[ID]", Action: leaderTransfer},
				},
			},
			{
				Name:  "sessions",
				Usage: "client sessions",
				Subcommands: []*cli.Command{
					{Name: "ls", Usage: "list sessions: id, host, mount point, pid, version, last heartbeat, locks held, the identity (TLS certificate) that registered it", Flags: []cli.Flag{jsonFlag}, Action: sessionsLs},
					{Name: "evict", Usage: "end a session now: its locks are released and its writes refused", ArgsUsage: "ID", Action: sessionsEvict},
				},
			},
			{
				Name:  "locks",
				Usage: "file locks",
				Subcommands: []*cli.Command{{
					Name:  "ls",
					Usage: "list every flock and POSIX lock, held or waiting",
					Flags: []cli.Flag{
						jsonFlag,
						&cli.Uint64Flag{Name: "inode", Usage: "only locks on this inode"},
						&cli.Uint64Flag{Name: "session", Usage: "only locks of this session"},
					},
					Action: locksLs,
				}},
			},
			snapshotCommand,
			tlsCommand,
			{
				Name:  "settings",
				Usage: "file system settings, kept in the replicated state",
				Subcommands: []*cli.Command{{
					Name:  "set",
					Usage: "set the quota and inode limit through the log (a limit not given is removed); the block size stays",
					Flags: []cli.Flag{
						&cli.Uint64Flag{Name: "capacity", Usage: "quota in bytes; 0: none (df shows the leader's disk)"},
						&cli.Uint64Flag{Name: "max-inodes", Usage: "limit on the number of inodes; 0: none"},
					},
					Action: settingsSet,
				}},
			},
		},
	}
}

func settingsSet(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("settings set: unexpected argument %q", c.Args().First())
	}
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.SetSettingsResponse, error) {
		return a.SetSettings(ctx, &jfspb.SetSettingsRequest{Settings: &jfspb.Settings{Capacity: c.Uint64("capacity"), MaxInodes: c.Uint64("max-inodes")}})
	})
	if err != nil {
		return err
	}
	if err := errnoErr("settings set", resp.Errno); err != nil {
		return err
	}
	s := resp.Settings
	fmt.Fprintf(c.App.Writer, "block size %d, capacity %d, max inodes %d\n", s.GetBlockSize(), s.GetCapacity(), s.GetMaxInodes())
	return nil
}

func newClient(c *cli.Context) (*client.Client, context.Context, context.CancelFunc, error) {
	s := c.String("servers")
	if s == "" {
		return nil, nil, nil, errors.New("no servers: pass --servers HOST:PORT[,...] or set JFS_SERVERS")
	}
	servers, err := client.ParseServers(s)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("--servers: %w", err)
	}
	tlsSrc, err := mtls.FromFlags(c)
	if err != nil {
		return nil, nil, nil, err
	}
	cl, err := client.New(client.Config{Servers: servers, RetryFor: c.Duration("timeout"), AttemptTimeout: 3 * time.Second, TLS: tlsSrc})
	if err != nil {
		return nil, nil, nil, err
	}
	ctx, cancel := context.WithTimeout(c.Context, c.Duration("timeout")+5*time.Second)
	return cl, ctx, cancel, nil
}

// admin makes one Admin call on the leader, following redirects.
func admin[R any](c *cli.Context, call func(ctx context.Context, a jfspb.AdminClient) (R, error)) (R, error) {
	var resp R
	cl, ctx, cancel, err := newClient(c)
	if err != nil {
		return resp, err
	}
	defer cancel()
	defer cl.Close()
	err = cl.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) (err error) {
		resp, err = call(ctx, a)
		return err
	})
	return resp, err
}

func wantArgs(c *cli.Context, min, max int) error {
	if n := c.Args().Len(); n < min || n > max {
		return fmt.Errorf("%s: wrong number of arguments; usage: %s %s", c.Command.FullName(), c.Command.FullName(), c.Command.ArgsUsage)
	}
	return nil
}

func printJSON(w io.Writer, m proto.Message) error {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: "  ", EmitUnpopulated: true}.Marshal(m)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}

// memberErr is errnoErr for a request about member id: ENOENT means there
// is no such member.
func memberErr(what, id string, e int32) error {
	if e == int32(syscall.ENOENT) {
		return fmt.Errorf("%s: no member %q in the cluster", what, id)
	}
	return errnoErr(what, e)
}

func errnoErr(what string, e int32) error {
	if err := client.Errno(e); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return nil
}

// nodeView is one node's own answer to ClusterStatus.
type nodeView struct {
	ID           string `json:"id"`
	RaftAddr     string `json:"raft_addr"`
	APIAddr      string `json:"api_addr"`
	Suffrage     string `json:"suffrage"`
	State        string `json:"state"`
	Term         uint64 `json:"term"`
	CommitIndex  uint64 `json:"commit_index"`
	AppliedIndex uint64 `json:"applied_index"`
	// Corrupt says why the cluster found this member's state different
	// from the others'; it serves nothing until rebuilt.
	Corrupt string `json:"corrupt,omitempty"`
	Error   string `json:"error,omitempty"`
}

type statusView struct {
	LeaderID   string     `json:"leader_id"`
	LeaderAddr string     `json:"leader_addr"`
	Term       uint64     `json:"term"`
	Members    []nodeView `json:"members"`
}

// clusterStatus asks the leader for the membership, then every member for
// its own raft state.
func clusterStatus(c *cli.Context) error {
	cl, ctx, cancel, err := newClient(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	var st *jfspb.ClusterStatusResponse
	err = cl.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) error {
		var err error
		st, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
		if err == nil && st.State != "Leader" {
			// Any node answers; prefer the leader's view of the members.
			if st.LeaderAddr != "" && st.LeaderAddr != cl.Leader() {
				var lst *jfspb.ClusterStatusResponse
				if cl.AdminAt(ctx, st.LeaderAddr, func(ctx context.Context, a jfspb.AdminClient) error {
					lst, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
					return err
				}) == nil {
					st = lst
				}
			}
		}
		return err
	})
	if err != nil {
		return err
	}
	view := statusView{LeaderID: st.LeaderId, LeaderAddr: st.LeaderAddr, Term: st.Term}
	for _, m := range st.Members {
		nv := nodeView{ID: m.Id, RaftAddr: m.Address, APIAddr: m.ApiAddr, Suffrage: m.Suffrage, Corrupt: m.Corrupt}
		if m.ApiAddr == "" {
			nv.Error = "API address not known yet"
		} else {
			err := cl.AdminAt(ctx, m.ApiAddr, func(ctx context.Context, a jfspb.AdminClient) error {
				own, err := a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
				if err == nil {
					nv.State, nv.Term, nv.CommitIndex, nv.AppliedIndex = own.State, own.Term, own.CommitIndex, own.AppliedIndex
				}
				return err
			})
			if err != nil {
				nv.State, nv.Error = "unreachable", err.Error()
			}
		}
		view.Members = append(view.Members, nv)
	}
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(view)
	}
	leader := "none"
	if view.LeaderID != "" {
		leader = fmt.Sprintf("%s (%s)", view.LeaderID, view.LeaderAddr)
	}
	fmt.Fprintf(w, "leader %s, term %d\n\n", leader, view.Term)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tRAFT ADDRESS\tAPI ADDRESS\tSUFFRAGE\tSTATE\tTERM\tCOMMIT\tAPPLIED")
	for _, m := range view.Members {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\n", m.ID, m.RaftAddr, m.APIAddr, m.Suffrage, m.State, m.Term, m.CommitIndex, m.AppliedIndex)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, m := range view.Members {
		if m.Corrupt != "" {
			fmt.Fprintf(w, "\n%s is CORRUPT (%s): it serves nothing and does not vote. Rebuild it: jfsctl members remove %s,\n"+
				"stop it, clear its data directory, start it without --initial-cluster, jfsctl members add %s ...\n", m.ID, m.Corrupt, m.ID, m.ID)
		}
	}
	return nil
}

// digestView is one member's answer to Digest.
type digestView struct {
	ID           string `json:"id"`
	APIAddr      string `json:"api_addr"`
	AppliedIndex uint64 `json:"applied_index"`
	Digest       string `json:"digest"`
	Error        string `json:"error,omitempty"`
}

// clusterDigest asks any node for the membership, then every member for the
// digest of its own state machine.
func clusterDigest(c *cli.Context) error {
	cl, ctx, cancel, err := newClient(c)
	if err != nil {
		return err
	}
	defer cancel()
	defer cl.Close()
	var st *jfspb.ClusterStatusResponse
	err = cl.Admin(ctx, func(ctx context.Context, a jfspb.AdminClient) (err error) {
		st, err = a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
		return err
	})
	if err != nil {
		return err
	}
	var views []digestView
	for _, m := range st.Members {
		v := digestView{ID: m.Id, APIAddr: m.ApiAddr}
		if m.ApiAddr == "" {
			v.Error = "API address not known yet"
		} else {
			err := cl.AdminAt(ctx, m.ApiAddr, func(ctx context.Context, a jfspb.AdminClient) error {
				d, err := a.Digest(ctx, &jfspb.DigestRequest{})
				if err == nil {
					if err = errnoErr("digest", d.Errno); err == nil {
						v.AppliedIndex, v.Digest = d.AppliedIndex, hex.EncodeToString(d.Digest)
					}
				}
				return err
			})
			if err != nil {
				v.Error = err.Error()
			}
		}
		views = append(views, v)
	}
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(views)
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPI ADDRESS\tAPPLIED\tDIGEST")
	for _, v := range views {
		if v.Error != "" {
			fmt.Fprintf(tw, "%s\t%s\t-\tunreachable: %s\n", v.ID, v.APIAddr, v.Error)
			continue
		}
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\n", v.ID, v.APIAddr, v.AppliedIndex, v.Digest)
	}
	return tw.Flush()
}

func membersAdd(c *cli.Context) error {
	if err := wantArgs(c, 3, 3); err != nil {
		return err
	}
	a := c.Args()
	req := &jfspb.AddMemberRequest{Id: a.Get(0), Address: a.Get(1), ApiAddr: a.Get(2), Nonvoter: c.Bool("nonvoter")}
	if _, err := client.ParseServers(req.Address + "," + req.ApiAddr); err != nil {
		return err
	}
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.AddMemberResponse, error) {
		return a.AddMember(ctx, req)
	})
	if err != nil {
		return err
	}
	if err := errnoErr("members add "+req.Id, resp.Errno); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "added %s (raft %s, api %s)\n", req.Id, req.Address, req.ApiAddr)
	return nil
}

func membersRemove(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	id := c.Args().First()
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.RemoveMemberResponse, error) {
		return a.RemoveMember(ctx, &jfspb.RemoveMemberRequest{Id: id})
	})
	if err != nil {
		return err
	}
	if err := memberErr("members remove", id, resp.Errno); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "removed %s\n", id)
	return nil
}

func leaderShow(c *cli.Context) error {
	st, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.ClusterStatusResponse, error) {
		return a.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
	})
	if err != nil {
		return err
	}
	if st.LeaderId == "" {
		return errors.New("no leader at the moment")
	}
	fmt.Fprintf(c.App.Writer, "%s %s term %d\n", st.LeaderId, st.LeaderAddr, st.Term)
	return nil
}

func leaderTransfer(c *cli.Context) error {
	if err := wantArgs(c, 0, 1); err != nil {
		return err
	}
	id := c.Args().First()
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.TransferLeaderResponse, error) {
		return a.TransferLeader(ctx, &jfspb.TransferLeaderRequest{Id: id})
	})
	if err != nil {
		return err
	}
	if err := memberErr("leader transfer", id, resp.Errno); err != nil {
		return err
	}
	// Report who leads now, as seen once the transfer is done.
	time.Sleep(100 * time.Millisecond)
	return leaderShow(c)
}

func sessionsLs(c *cli.Context) error {
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.ListSessionsResponse, error) {
		return a.ListSessions(ctx, &jfspb.ListSessionsRequest{})
	})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, resp)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tHOST\tMOUNT POINT\tPID\tVERSION\tLAST HEARTBEAT\tLOCKS\tOPEN FILES\tSINCE\tIDENTITY")
	for _, s := range resp.Sessions {
		beat := "-"
		if s.LastHeartbeatNs != 0 {
			beat = time.Since(time.Unix(0, s.LastHeartbeatNs)).Round(100*time.Millisecond).String() + " ago"
		}
		identity := s.Identity
		if identity == "" {
			identity = "-" // registered without TLS
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d\t%s\t%s\t%d\t%d\t%s\t%s\n", s.Id, s.Host, s.MountPoint, s.Pid, s.Version, beat,
			s.LocksHeld, s.OpenFiles, stamp(s.CreatedNs), identity)
	}
	return tw.Flush()
}

func sessionsEvict(c *cli.Context) error {
	if err := wantArgs(c, 1, 1); err != nil {
		return err
	}
	id, err := strconv.ParseUint(c.Args().First(), 10, 64)
	if err != nil || id == 0 {
		return fmt.Errorf("sessions evict: %q is not a session id", c.Args().First())
	}
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.EvictSessionResponse, error) {
		return a.EvictSession(ctx, &jfspb.EvictSessionRequest{Session: id, Reason: "evicted by jfsctl"})
	})
	if err != nil {
		return err
	}
	if resp.Errno == int32(syscall.ENOENT) {
		return fmt.Errorf("sessions evict: no session %d", id)
	}
	if err := errnoErr("sessions evict", resp.Errno); err != nil {
		return err
	}
	fmt.Fprintf(c.App.Writer, "evicted session %d\n", id)
	return nil
}

func stamp(ns int64) string {
	if ns == 0 {
		return "-"
	}
	return time.Unix(0, ns).UTC().Format("2006-01-02T15:04:05.000Z")
}

func locksLs(c *cli.Context) error {
	resp, err := admin(c, func(ctx context.Context, a jfspb.AdminClient) (*jfspb.ListLocksResponse, error) {
		return a.ListLocks(ctx, &jfspb.ListLocksRequest{Ino: c.Uint64("inode"), Session: c.Uint64("session")})
	})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(c.App.Writer, resp)
	}
	tw := tabwriter.NewWriter(c.App.Writer, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "INODE\tPATH\tKIND\tTYPE\tRANGE\tSTATE\tSESSION\tHOST\tPID\tSINCE")
	for _, l := range resp.Locks {
		rng := "whole file"
		if l.Kind == jfspb.LockKind_LOCK_KIND_POSIX {
			if l.Len == 0 {
				rng = fmt.Sprintf("%d-EOF", l.Start)
			} else {
				rng = fmt.Sprintf("%d-%d", l.Start, l.Start+l.Len-1)
			}
		}
		state := "held"
		switch {
		case l.Waiting:
			state = "waiting"
		case l.Delegated && l.DelegationUnknown:
			// The inode's locks are delegated to the session's mount,
			// which did not say which it holds in time.
			state, rng = "delegated (locks unknown)", "-"
		case l.Delegated && l.Type == jfspb.LockType_LOCK_TYPE_UNLOCK:
			state, rng = "delegated (no lock held)", "-"
		case l.Delegated:
			state = "held (delegated)"
		}
		path := l.Path
		if path == "" {
			path = "(unlinked)"
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%s\t%s\t%s\t%d\t%s\t%d\t%s\n", l.Ino, path, kindName(l.Kind), typeName(l.Type), rng,
			state, l.Owner.GetSession(), l.Host, l.Pid, stamp(l.SinceNs))
	}
	return tw.Flush()
}

func kindName(k jfspb.LockKind) string {
	switch k {
	case jfspb.LockKind_LOCK_KIND_FLOCK:
		return "flock"
	case jfspb.LockKind_LOCK_KIND_POSIX:
		return "posix"
	}
	return "?"
}

func typeName(t jfspb.LockType) string {
	switch t {
	case jfspb.LockType_LOCK_TYPE_READ:
		return "read"
	case jfspb.LockType_LOCK_TYPE_WRITE:
		return "write"
	}
	return "unlock"
}
