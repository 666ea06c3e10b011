package masterjob

import (
	"fmt"
	"math/rand/v2"
	"testing"
)

// planAll runs handoffs for every member of group as if each had read the
// same list, and returns what each member gives to each other.
func planAll(lockCount, slack int, group []peerInfo) map[string][]give {
	out := map[string][]give{}
	never := func(string) bool { return false }
	always := func(peerInfo) bool { return true }
	for _, p := range group {
		v := balanceView{me: p.id, lockCount: lockCount, group: group, slack: slack}
		if g := v.handoffs(never, always); len(g) > 0 {
			out[p.id] = g
		}
	}
	return out
}

// apply moves the masterships of plans between the members of group.
func apply(group []peerInfo, plans map[string][]give) []peerInfo {
	out := make([]peerInfo, len(group))
	copy(out, group)
	idx := map[string]int{}
	for i, p := range out {
		idx[p.id] = i
	}
	for from, gs := range plans {
		for _, g := range gs {
			out[idx[from]].masters -= g.n
			out[idx[g.to]].masters += g.n
		}
	}
	return out
}

// TestBalancePlanConvergesInOneRound: several instances over their share
// (as when instances start a moment apart and each takes what it finds
// free) each compute their part of the plan from the same member list.
// After one round every member is within its share and slack, no member is
// given more than its room, and no lock is handed on again. The division
// of each peer's room among the givers, which this replaced, left the
// first giver of 617 masterships (share 100) with 384 after one round.
func TestBalancePlanConvergesInOneRound(t *testing.T) {
	cases := []struct {
		name    string
		locks   int
		masters []int
		weights []float64
	}{
		{"etcd start at 1,000 locks", 1000, []int{617, 195, 175, 13, 0, 0, 0, 0, 0, 0}, nil},
		{"one over, many under", 10000, []int{10000, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil},
		{"two over, one under", 30, []int{20, 10, 0}, nil},
		{"weighted", 400, []int{0, 300, 100, 0}, []float64{2, 1, 1, 1}},
		{"within slack", 100, []int{35, 34, 31}, nil},
		{"a new instance among members within their slack", 10000, []int{1050, 1050, 1050, 1050, 1050, 1050, 1050, 1050, 1600, 0}, nil},
	}
	r := rand.New(rand.NewPCG(7, 11))
	for range 200 {
		n := 2 + r.IntN(9)
		locks := r.IntN(2000)
		masters := make([]int, n)
		left := locks
		for i := range masters {
			if i == n-1 {
				masters[i] = left
				break
			}
			masters[i] = r.IntN(left + 1)
			left -= masters[i]
		}
		cases = append(cases, struct {
			name    string
			locks   int
			masters []int
			weights []float64
		}{fmt.Sprintf("random %v", masters), locks, masters, nil})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var group []peerInfo
			for i, m := range tc.masters {
				w := 1.0
				if tc.weights != nil {
					w = tc.weights[i]
				}
				group = append(group, peerInfo{id: fmt.Sprintf("i%02d", i), weight: w, masters: m})
			}
			total := 0.0
			for _, p := range group {
				total += p.weight
			}
			plans := planAll(tc.locks, 0, group)
			got := map[string]int{}
			for from, gs := range plans {
				sum := 0
				for _, g := range gs {
					if g.n <= 0 || g.to == from {
						t.Fatalf("%s gives %d to %s", from, g.n, g.to)
					}
					if plans[g.to] != nil {
						t.Errorf("%s gives to %s, which gives too: a lock would move twice", from, g.to)
					}
					got[g.to] += g.n
					sum += g.n
				}
				for _, p := range group {
					if p.id == from && p.masters-sum < shareOf(tc.locks, p.weight, total) {
						t.Errorf("%s gives %d of %d, below its share", from, sum, p.masters)
					}
				}
			}
			after := apply(group, plans)
			for _, p := range after {
				s := shareOf(tc.locks, p.weight, total)
				if p.masters > s+slackOf(0, s) {
					t.Errorf("after one round %s holds %d, over share %d + slack %d", p.id, p.masters, s, slackOf(0, s))
				}
				if got[p.id] > 0 && p.masters > s {
					t.Errorf("%s was given %d, over its room (share %d, now %d)", p.id, got[p.id], s, p.masters)
				}
			}
			// Nobody is left short of its share by more than the slack
			// while another holds more than its share.
			short, over := false, false
			for _, p := range after {
				s := shareOf(tc.locks, p.weight, total)
				short = short || p.masters < s-slackOf(0, s)
				over = over || p.masters > s
			}
			if short && over {
				t.Errorf("after one round a member is short of its share while another is over: %v", after)
			}
			// The plan is stable: a round on the result moves nothing.
			if again := planAll(tc.locks, 0, after); len(again) > 0 {
				t.Errorf("a second round moves more: %v", again)
			}
		})
	}
}

// TestBalancePlanUnchangedByAGiverAhead: a giver that reads the list after
// an earlier giver's hand-offs have shown in it computes the same part as
// from the list before them, so givers that act in different check rounds
// do not fill the same room twice.
func TestBalancePlanUnchangedByAGiverAhead(t *testing.T) {
	group := []peerInfo{
		{id: "a", weight: 1, masters: 617}, {id: "b", weight: 1, masters: 195}, {id: "c", weight: 1, masters: 175},
		{id: "d", weight: 1, masters: 13}, {id: "e", weight: 1}, {id: "f", weight: 1}, {id: "g", weight: 1},
		{id: "h", weight: 1}, {id: "i", weight: 1}, {id: "j", weight: 1},
	}
	plans := planAll(1000, 0, group)
	first := map[string][]give{"a": plans["a"]}
	later := planAll(1000, 0, apply(group, first))
	for _, id := range []string{"b", "c"} {
		if fmt.Sprint(later[id]) != fmt.Sprint(plans[id]) {
			t.Errorf("%s's part changed once a's hand-offs showed: %v, before %v", id, later[id], plans[id])
		}
	}
	if len(later["a"]) != 0 {
		t.Errorf("a gives again: %v", later["a"])
	}
}
