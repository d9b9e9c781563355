package main

import (
	"errors"
	"strings"
	"testing"

	"github.com/jfs-dev/jfs/api/jfspb"
)

func TestJudgeCluster(t *testing.T) {
	members := func(corrupt string) []*jfspb.Member {
		return []*jfspb.Member{
			{Id: "n1", ApiAddr: "a1", Suffrage: "Voter"},
			{Id: "n2", ApiAddr: "a2", Suffrage: "Voter", Corrupt: corrupt},
			{Id: "n3", ApiAddr: "a3", Suffrage: "Voter"},
			{Id: "n4", ApiAddr: "a4", Suffrage: "Nonvoter"},
		}
	}
	st := func(id, state, leader string, commit, applied uint64) statusAnswer {
		return statusAnswer{st: &jfspb.ClusterStatusResponse{NodeId: id, State: state, LeaderId: leader, Term: 2,
			CommitIndex: commit, AppliedIndex: applied, Members: members("")}}
	}
	down := statusAnswer{err: errors.New("connection refused")}
	healthy := func() map[string]statusAnswer {
		return map[string]statusAnswer{
			"a1": st("n1", "Leader", "n1", 100, 100), "a2": st("n2", "Follower", "n1", 100, 90),
			"a3": st("n3", "Follower", "n1", 100, 100), "a4": st("n4", "Follower", "n1", 100, 100),
		}
	}
	for _, tc := range []struct {
		name     string
		edit     func(map[string]statusAnswer)
		corrupt  string
		writable bool
		healthy  int    // healthy voters
		reason   string // a substring of the reasons when not writable
	}{
		{"all healthy", func(map[string]statusAnswer) {}, "", true, 3, ""},
		{"one voter down", func(a map[string]statusAnswer) { a["a3"] = down }, "", true, 2, ""},
		{"nonvoter down does not count", func(a map[string]statusAnswer) { a["a4"] = down }, "", true, 3, ""},
		{"two voters down", func(a map[string]statusAnswer) { a["a2"], a["a3"] = down, down }, "", false, 1, "1 of 3 voters healthy, 2 needed"},
		{"leader down", func(a map[string]statusAnswer) { a["a1"] = down }, "", false, 2, "no healthy leader"},
		{"one corrupt", func(map[string]statusAnswer) {}, "digest differs", true, 2, ""},
		{"one corrupt, one lagging", func(a map[string]statusAnswer) { a["a3"] = st("n3", "Follower", "n1", 5000, 100) }, "digest differs", false, 1, "voters healthy"},
		{"no leader known", func(a map[string]statusAnswer) {
			a["a1"] = st("n1", "Candidate", "", 100, 100)
			a["a2"] = st("n2", "Follower", "", 100, 100)
			a["a3"] = st("n3", "Follower", "", 100, 100)
		}, "", false, 0, "no healthy leader"},
		{"followers' logs far behind the leader's", func(a map[string]statusAnswer) {
			a["a1"] = st("n1", "Leader", "n1", 5000, 5000)
			a["a3"] = st("n3", "Follower", "n1", 100, 100)
		}, "", false, 1, "1 of 3 voters healthy"},
		{"wrong node at an address", func(a map[string]statusAnswer) { a["a3"] = st("x9", "Follower", "n1", 100, 100) }, "", true, 2, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			answers := healthy()
			tc.edit(answers)
			// The view is the leader's answer, as chooseView picks it.
			view := &jfspb.ClusterStatusResponse{NodeId: "n1", State: "Leader", LeaderId: "n1", Members: members(tc.corrupt)}
			if a := answers["a1"]; a.st != nil && a.st.State == "Leader" {
				view.CommitIndex = a.st.CommitIndex
			}
			h := judgeCluster(view, answers, []string{"a1"}, 1000)
			if h.Writable != tc.writable || h.HealthyVoters != tc.healthy || h.Voters != 3 {
				t.Fatalf("writable %v, %d of %d voters healthy; want %v, %d of 3 (reasons %q)", h.Writable, h.HealthyVoters, h.Voters, tc.writable, tc.healthy, h.Reasons)
			}
			if !tc.writable && !strings.Contains(strings.Join(h.Reasons, "; "), tc.reason) {
				t.Fatalf("reasons %q lack %q", h.Reasons, tc.reason)
			}
			if tc.writable && len(h.Reasons) != 0 {
				t.Fatalf("writable, yet reasons %q", h.Reasons)
			}
		})
	}
}

func TestJudgeClusterNoAnswer(t *testing.T) {
	answers := map[string]statusAnswer{"a1": {err: errors.New("refused")}}
	h := judgeCluster(chooseView(answers), answers, []string{"a1"}, 1000)
	if h.Writable || len(h.Members) != 1 || h.Members[0].Healthy || !strings.Contains(h.Members[0].Problems[0], "refused") {
		t.Fatalf("got %+v", h)
	}
}

func TestChooseViewPrefersLeader(t *testing.T) {
	answers := map[string]statusAnswer{
		"a1": {st: &jfspb.ClusterStatusResponse{NodeId: "n1", State: "Follower", Term: 3, CommitIndex: 50}},
		"a2": {st: &jfspb.ClusterStatusResponse{NodeId: "n2", State: "Leader", Term: 3, CommitIndex: 40}},
		"a3": {err: errors.New("refused")},
	}
	if v := chooseView(answers); v.NodeId != "n2" {
		t.Fatalf("chose %s, want the leader n2", v.NodeId)
	}
	delete(answers, "a2")
	if v := chooseView(answers); v.NodeId != "n1" {
		t.Fatalf("chose %s, want n1", v.NodeId)
	}
}

func TestJudgeClusterNewestLeader(t *testing.T) {
	members := []*jfspb.Member{{Id: "n1", ApiAddr: "a1", Suffrage: "Voter"}, {Id: "n2", ApiAddr: "a2", Suffrage: "Voter"}, {Id: "n3", ApiAddr: "a3", Suffrage: "Voter"}}
	answer := func(id, state, leader string, term uint64) statusAnswer {
		return statusAnswer{st: &jfspb.ClusterStatusResponse{NodeId: id, State: state, LeaderId: leader, Term: term, CommitIndex: 10, AppliedIndex: 10, Members: members}}
	}
	// n1 was cut off and has not stepped down yet; n2 leads the majority.
	answers := map[string]statusAnswer{"a1": answer("n1", "Leader", "n1", 2), "a2": answer("n2", "Leader", "n2", 3), "a3": answer("n3", "Follower", "n2", 3)}
	view := chooseView(answers)
	if view.NodeId != "n2" {
		t.Fatalf("chose the view of %s, want the newest leader n2", view.NodeId)
	}
	if h := judgeCluster(view, answers, []string{"a1"}, 1000); h.Leader != "n2" || !h.Writable {
		t.Fatalf("leader %q writable %v, want n2 and writable", h.Leader, h.Writable)
	}
}
