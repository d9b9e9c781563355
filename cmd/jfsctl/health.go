package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/jfs-dev/jfs/api/jfspb"
	"github.com/jfs-dev/jfs/client"
	"github.com/jfs-dev/jfs/internal/mtls"
)

// defaultMaxLag is jfsd's default --ready-max-lag, so that jfsctl and
// /ready agree unless told otherwise.
const defaultMaxLag = 1000

func healthCommand(jsonFlag cli.Flag) *cli.Command {
	return &cli.Command{
		Name:  "health",
		Usage: "ask every member whether it is reachable, knows the leader, is not corrupt and keeps up; exit 1 when the cluster cannot take writes",
		Description: `Asks each address of --servers, and every member the answers name, for its raft
state, leader, commit and applied index. A member is healthy when it answers, knows
a leader, is not marked corrupt and has applied the log to within --max-lag entries
of its commit index (or of the leader's, when that is higher). The cluster can take writes when a healthy leader is known and
a majority of the voters is healthy: then jfsctl exits 0, otherwise 1 with the
reasons on stderr.`,
		Flags: []cli.Flag{
			jsonFlag,
			&cli.Uint64Flag{Name: "max-lag", Value: defaultMaxLag, Usage: "a member with more committed log entries than this left to apply is not healthy"},
		},
		Action: clusterHealthCmd,
	}
}

// memberHealth is one member as jfsctl cluster health reports it.
type memberHealth struct {
	ID       string `json:"id"`
	APIAddr  string `json:"api_addr"`
	Suffrage string `json:"suffrage"`
	// Reachable: the member answered ClusterStatus; the fields below are
	// its answer.
	Reachable    bool   `json:"reachable"`
	State        string `json:"state,omitempty"`
	Leader       string `json:"leader,omitempty"`
	Term         uint64 `json:"term,omitempty"`
	CommitIndex  uint64 `json:"commit_index,omitempty"`
	AppliedIndex uint64 `json:"applied_index,omitempty"`
	Lag          uint64 `json:"lag"`
	Corrupt      string `json:"corrupt,omitempty"`
	Healthy      bool   `json:"healthy"`
	// Problems says why the member is not healthy.
	Problems []string `json:"problems"`
}

// clusterHealth is the whole report.
type clusterHealth struct {
	Leader        string         `json:"leader"`
	Voters        int            `json:"voters"`
	HealthyVoters int            `json:"healthy_voters"`
	Writable      bool           `json:"writable"`
	Reasons       []string       `json:"reasons"`
	Members       []memberHealth `json:"members"`
}

// statusAnswer is one node's ClusterStatus answer, or why there is none.
type statusAnswer struct {
	st  *jfspb.ClusterStatusResponse
	err error
}

func clusterHealthCmd(c *cli.Context) error {
	if c.Args().Len() > 0 {
		return fmt.Errorf("cluster health: unexpected argument %q", c.Args().First())
	}
	s := c.String("servers")
	if s == "" {
		return errors.New("no servers: pass --servers HOST:PORT[,...] or set JFS_SERVERS")
	}
	servers, err := client.ParseServers(s)
	if err != nil {
		return fmt.Errorf("--servers: %w", err)
	}
	attempt := 3 * time.Second // per member: a down member must not hold up the report
	if t := c.Duration("timeout"); t > 0 && t < attempt {
		attempt = t
	}
	tlsSrc, err := mtls.FromFlags(c)
	if err != nil {
		return err
	}
	cl, err := client.New(client.Config{Servers: servers, RetryFor: attempt, AttemptTimeout: attempt, TLS: tlsSrc})
	if err != nil {
		return err
	}
	defer cl.Close()
	ask := func(addrs []string) map[string]statusAnswer {
		out := make(map[string]statusAnswer, len(addrs))
		var mu sync.Mutex
		var wg sync.WaitGroup
		for _, addr := range addrs {
			wg.Go(func() {
				var a statusAnswer
				a.err = cl.AdminAt(c.Context, addr, func(ctx context.Context, ac jfspb.AdminClient) (err error) {
					a.st, err = ac.ClusterStatus(ctx, &jfspb.ClusterStatusRequest{})
					return err
				})
				mu.Lock()
				out[addr] = a
				mu.Unlock()
			})
		}
		wg.Wait()
		return out
	}
	answers := ask(servers)
	view := chooseView(answers)
	if view != nil {
		var more []string
		for _, m := range view.Members {
			if _, asked := answers[m.ApiAddr]; m.ApiAddr != "" && !asked {
				more = append(more, m.ApiAddr)
			}
		}
		for addr, a := range ask(more) {
			answers[addr] = a
		}
	}
	h := judgeCluster(view, answers, servers, c.Uint64("max-lag"))
	if err := printHealth(c, h); err != nil {
		return err
	}
	if !h.Writable {
		return fmt.Errorf("the cluster cannot take writes: %s", strings.Join(h.Reasons, "; "))
	}
	return nil
}

// chooseView picks the answer whose member list to trust: a leader's of
// the highest term, else the reachable node's of the highest term and
// commit index; nil when no node answered.
func chooseView(answers map[string]statusAnswer) *jfspb.ClusterStatusResponse {
	var best *jfspb.ClusterStatusResponse
	rank := func(st *jfspb.ClusterStatusResponse) [3]uint64 {
		leader := uint64(0)
		if st.State == "Leader" {
			leader = 1
		}
		return [3]uint64{leader, st.Term, st.CommitIndex}
	}
	for _, a := range answers {
		if a.err != nil || a.st == nil {
			continue
		}
		if best == nil {
			best = a.st
			continue
		}
		r, b := rank(a.st), rank(best)
		if r[0] > b[0] || (r[0] == b[0] && (r[1] > b[1] || (r[1] == b[1] && (r[2] > b[2] || (r[2] == b[2] && a.st.NodeId < best.NodeId))))) {
			best = a.st
		}
	}
	return best
}

// judgeCluster decides, from the member list of view and every member's
// own answer (by API address), which members are healthy and whether the
// cluster can take writes: a healthy member leads, and a majority of the
// voters is healthy. A member's lag is counted from the higher of its own
// commit index and, when view is the leader's, the leader's. servers are
// the addresses asked first, reported as the members when no node
// answered. It is pure.
func judgeCluster(view *jfspb.ClusterStatusResponse, answers map[string]statusAnswer, servers []string, maxLag uint64) clusterHealth {
	h := clusterHealth{Reasons: []string{}, Members: []memberHealth{}}
	if view == nil {
		for _, addr := range servers {
			m := memberHealth{APIAddr: addr, Problems: []string{"unreachable"}}
			if a := answers[addr]; a.err != nil {
				m.Problems = []string{"unreachable: " + a.err.Error()}
			}
			h.Members = append(h.Members, m)
		}
		h.Reasons = append(h.Reasons, "no node answered")
		return h
	}
	var leaderCommit uint64
	if view.State == "Leader" {
		leaderCommit = view.CommitIndex
	}
	var leaderTerm uint64
	for _, vm := range view.Members {
		m := memberHealth{ID: vm.Id, APIAddr: vm.ApiAddr, Suffrage: vm.Suffrage, Corrupt: vm.Corrupt, Problems: []string{}}
		a, asked := answers[vm.ApiAddr]
		switch {
		case vm.ApiAddr == "":
			m.Problems = append(m.Problems, "unreachable: API address not known yet")
		case !asked || a.st == nil:
			why := "unreachable"
			if a.err != nil {
				why += ": " + a.err.Error()
			}
			m.Problems = append(m.Problems, why)
		case a.st.NodeId != vm.Id:
			m.Problems = append(m.Problems, fmt.Sprintf("unreachable: %s answers as node %q", vm.ApiAddr, a.st.NodeId))
		default:
			st := a.st
			m.Reachable = true
			m.State, m.Leader, m.Term, m.CommitIndex, m.AppliedIndex = st.State, st.LeaderId, st.Term, st.CommitIndex, st.AppliedIndex
			for _, own := range st.Members {
				if own.Id == vm.Id && own.Corrupt != "" && m.Corrupt == "" {
					m.Corrupt = own.Corrupt
				}
			}
			// A follower's commit index trails the leader's while its log
			// does: measure against the leader's when it is known.
			if ref := max(st.CommitIndex, leaderCommit); ref > st.AppliedIndex {
				m.Lag = ref - st.AppliedIndex
			}
			if st.State == "Shutdown" {
				m.Problems = append(m.Problems, "raft is shut down")
			}
			if st.LeaderId == "" {
				m.Problems = append(m.Problems, "no leader known")
			}
			if m.Lag > maxLag {
				m.Problems = append(m.Problems, fmt.Sprintf("%d entries to apply (more than %d)", m.Lag, maxLag))
			}
		}
		if m.Corrupt != "" {
			m.Problems = append(m.Problems, "corrupt: "+m.Corrupt)
		}
		m.Healthy = len(m.Problems) == 0
		if vm.Suffrage == "Voter" {
			h.Voters++
			if m.Healthy {
				h.HealthyVoters++
			}
		}
		if m.Healthy && m.State == "Leader" && m.Term >= leaderTerm {
			// A leader cut off from the majority may not have stepped
			// down yet; the newest term's leader is the one.
			h.Leader, leaderTerm = m.ID, m.Term
		}
		h.Members = append(h.Members, m)
	}
	if h.Leader == "" {
		h.Reasons = append(h.Reasons, "no healthy leader")
	}
	if quorum := h.Voters/2 + 1; h.HealthyVoters < quorum {
		h.Reasons = append(h.Reasons, fmt.Sprintf("%d of %d voters healthy, %d needed", h.HealthyVoters, h.Voters, quorum))
	}
	h.Writable = len(h.Reasons) == 0
	return h
}

func printHealth(c *cli.Context, h clusterHealth) error {
	w := c.App.Writer
	if c.Bool("json") {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(h)
	}
	leader := h.Leader
	if leader == "" {
		leader = "none"
	}
	verdict := "can take writes"
	if !h.Writable {
		verdict = "CANNOT take writes: " + strings.Join(h.Reasons, "; ")
	}
	fmt.Fprintf(w, "leader %s, %d of %d voters healthy: %s\n\n", leader, h.HealthyVoters, h.Voters, verdict)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tAPI ADDRESS\tSUFFRAGE\tREACHABLE\tROLE\tCOMMIT\tAPPLIED\tLAG\tCORRUPT\tHEALTHY")
	for _, m := range h.Members {
		role, commit, applied, lag := "-", "-", "-", "-"
		if m.Reachable {
			role, commit, applied, lag = m.State, fmt.Sprint(m.CommitIndex), fmt.Sprint(m.AppliedIndex), fmt.Sprint(m.Lag)
		}
		corrupt := "no"
		if m.Corrupt != "" {
			corrupt = "yes"
		}
		healthy := "yes"
		if !m.Healthy {
			healthy = "no: " + strings.Join(m.Problems, "; ")
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\t%s\t%s\t%s\t%s\t%s\t%s\n", dash(m.ID), m.APIAddr, dash(m.Suffrage), yesNo(m.Reachable), role, commit, applied, lag, corrupt, healthy)
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
