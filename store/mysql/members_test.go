package mysql

import (
	"fmt"
	"slices"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"

	"github.com/masterjob/masterjob/store"
)

// TestMemberListWrittenOnce: the lock list of a member travels and is
// written only while the store is not known to hold it: the first call
// after an Announce with a new set sends it, later calls do not; a record
// deleted behind the handle's back gets its list again on the call after
// the one that noticed. A lock list rewrite deletes members that expired
// over an hour ago.
func TestMemberListWrittenOnce(t *testing.T) {
	registerCountingNet()
	prefix := newPrefix(t)
	dsn := dsnWith(t, func(c *mysqldrv.Config) { c.Net = countingNet })
	s := openStoreDSN(t, dsn, WithTablePrefix(prefix))
	s.db.SetMaxOpenConns(1)
	ctx := t.Context()
	locks := make([]string, 1000)
	for i := range locks {
		locks[i] = fmt.Sprintf("MEMBER-LOCK-%04d", i)
	}
	s.Announce(store.Member{ID: holderA.ID, Locks: locks, LockSetID: "set-1"}, time.Minute)
	st, err := s.Acquire(ctx, holderA, locks[:1], time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	ref := []store.LeaseRef{{Lock: st[0].Lock, Token: st[0].Token}}
	renewBytes := func() int64 {
		t.Helper()
		b0 := wire.bytes.Load()
		if _, err := s.Renew(ctx, holderA.ID, ref, time.Minute); err != nil {
			t.Fatal(err)
		}
		return wire.bytes.Load() - b0
	}
	of := func(lock string) []string {
		t.Helper()
		m, err := s.Members(ctx, store.MemberFilter{Lock: lock})
		if err != nil {
			t.Fatal(err)
		}
		return memberIDs(m)
	}
	listBytes := int64(len(locks) * len(locks[0])) // at least, as JSON in base64
	if n := renewBytes(); n > listBytes {
		t.Errorf("a renewal after the list was written sent %d bytes: the list again", n)
	}
	if got := of(locks[999]); !slices.Equal(got, []string{holderA.ID}) {
		t.Errorf("members of %s = %v", locks[999], got)
	}

	// A new set is sent once.
	s.Announce(store.Member{ID: holderA.ID, Locks: locks[:10], LockSetID: "set-2"}, time.Minute)
	renewBytes()
	if got := of(locks[999]); len(got) != 0 {
		t.Errorf("after the set changed, members of %s = %v", locks[999], got)
	}

	// The record deleted behind the handle's back, with a long-expired
	// member beside it.
	m, ml := quoteIdent(prefix+"members"), quoteIdent(prefix+"member_locks")
	if _, err := adminDB(t).ExecContext(ctx, "DELETE FROM "+ml+"; DELETE FROM "+m+"; "+
		"INSERT INTO "+m+" (id, lock_set_id, expires_at) VALUES ('gone', 'g', UTC_TIMESTAMP(6) - INTERVAL 2 HOUR); "+
		"INSERT INTO "+ml+" (lock_name, member_id) VALUES ('"+locks[0]+"', 'gone')"); err != nil {
		t.Fatal(err)
	}
	renewBytes() // recreates the record without its list, and learns it
	if got := of(locks[0]); len(got) != 0 {
		t.Errorf("members of %s right after the record was deleted = %v", locks[0], got)
	}
	renewBytes() // sends the list again
	if got := of(locks[0]); !slices.Equal(got, []string{holderA.ID}) {
		t.Errorf("members of %s after the list was sent again = %v", locks[0], got)
	}
	var gone int
	if err := adminDB(t).QueryRowContext(ctx, "SELECT (SELECT COUNT(*) FROM "+m+" WHERE id = 'gone') + (SELECT COUNT(*) FROM "+ml+" WHERE member_id = 'gone')").Scan(&gone); err != nil {
		t.Fatal(err)
	}
	if gone != 0 {
		t.Errorf("a member expired for 2 hours was kept (%d rows) through a lock list rewrite", gone)
	}
}

func memberIDs(ms []store.Member) []string {
	ids := make([]string, len(ms))
	for i, m := range ms {
		ids[i] = m.ID
	}
	return ids
}
