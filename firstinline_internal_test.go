package masterjob

import (
	"fmt"
	"testing"
	"time"
)

// TestFirstInLineOneMemberPerLock: members that read the same list agree
// on one first in line per freed lock, never a member at or over its share
// or the lock's last holder, and when many locks come free together (their
// master died) the first places spread over the members with room instead
// of all going to one, which would leave the rest to wait for the others'
// delayed checks.
func TestFirstInLineOneMemberPerLock(t *testing.T) {
	// 12 locks over b, c, d and e (share 3 each): d is full, e was their
	// master and died (its record lives on); b and c have room.
	group := []peerInfo{
		{id: "b", weight: 1, masters: 1},
		{id: "c", weight: 1, masters: 2},
		{id: "d", weight: 1, masters: 3},
		{id: "e", weight: 1, masters: 6},
	}
	firsts := map[string]int{}
	const locks = 1000
	for i := range locks {
		lock := fmt.Sprintf("lock-%d", i)
		var got []string
		for _, me := range []string{"b", "c", "d"} {
			e := &Executor{cfg: Config{CheckMasterInterval: 5 * time.Second, HeartbeatInterval: time.Second}}
			e.balance = balanceView{me: me, lockCount: 12, group: group}
			if e.firstInLine(lock, "e") {
				got = append(got, me)
			}
		}
		if len(got) != 1 {
			t.Fatalf("%s: first in line by their own reading: %v; want one member", lock, got)
		}
		firsts[got[0]]++
	}
	if firsts["d"] != 0 || firsts["b"] < locks/3 || firsts["c"] < locks/3 {
		t.Errorf("first places over %d locks: %v; want none for d (at its share) and about half each for b and c", locks, firsts)
	}
}
