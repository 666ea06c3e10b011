package etcd

import (
	"context"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/masterjob/masterjob/store"
)

// TestFollowResumeRevision: the revision a cancelled watch resumes from
// follows the events delivered, not the header of their response (etcd
// sends a watch that catches up batches of events under the current
// revision, so that resuming after the header would skip the rest); a
// progress notification vouches for its header; a compaction moves it to
// the compaction's revision and reports the loss.
func TestFollowResumeRevision(t *testing.T) {
	s := &Store{prefix: "p/"}
	ev := func(rev int64) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(s.controlKey("A")), ModRevision: rev, Version: 2}}
	}
	at := func(rev int64) *pb.ResponseHeader { return &pb.ResponseHeader{Revision: rev} }
	cancelled := clientv3.WatchResponse{Canceled: true}
	for _, c := range []struct {
		name     string
		resps    []clientv3.WatchResponse
		next     int64
		lost     bool
		delivers int
	}{
		{"nothing", []clientv3.WatchResponse{cancelled}, 7, false, 0},
		{"events", []clientv3.WatchResponse{{Header: at(11), Events: []*clientv3.Event{ev(10), ev(11)}}, cancelled}, 12, false, 2},
		{"batch behind its header", []clientv3.WatchResponse{{Header: at(5000), Events: []*clientv3.Event{ev(10), ev(11)}}, cancelled}, 12, false, 2},
		{"progress", []clientv3.WatchResponse{{Header: at(40)}, cancelled}, 41, false, 0},
		{"compacted", []clientv3.WatchResponse{{Header: at(9), Events: []*clientv3.Event{ev(9)}}, {Header: at(60), Canceled: true, CompactRevision: 30}}, 30, true, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			wch := make(chan clientv3.WatchResponse, len(c.resps))
			for _, r := range c.resps {
				wch <- r
			}
			close(wch)
			out := make(chan store.Change, 10)
			next, lost, ok := s.follow(context.Background(), func() {}, wch, 7, out)
			if !ok {
				t.Fatal("follow reports the subscription over")
			}
			if next != c.next || lost != c.lost {
				t.Errorf("follow = next %d, lost %v; want next %d, lost %v", next, lost, c.next, c.lost)
			}
			if len(out) != c.delivers {
				t.Errorf("%d changes delivered, want %d", len(out), c.delivers)
			}
		})
	}
}

// TestFollowCountsFreedLocks: a lease key's delete (a release, an expiry)
// and an Enable count as a lock freed, so that the next Acquire grants its
// lease beside its read; a Disable and a new lease key do not.
func TestFollowCountsFreedLocks(t *testing.T) {
	s := &Store{prefix: "p/"}
	put := func(key, value string) *clientv3.Event {
		return &clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: []byte(key), Value: []byte(value), ModRevision: 10}}
	}
	for _, c := range []struct {
		name  string
		ev    *clientv3.Event
		freed uint64
	}{
		{"release or expiry", &clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: []byte(s.leaseKey("A")), ModRevision: 10}}, 1},
		{"enable", put(s.controlKey("A"), mustJSON(controlRecord{})), 1},
		{"disable", put(s.controlKey("A"), mustJSON(controlRecord{Disabled: true, RevokedToken: 4})), 0},
		{"acquisition", put(s.leaseKey("A"), ""), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			before := s.freed.Load()
			wch := make(chan clientv3.WatchResponse, 2)
			wch <- clientv3.WatchResponse{Header: &pb.ResponseHeader{Revision: 10}, Events: []*clientv3.Event{c.ev}}
			wch <- clientv3.WatchResponse{Canceled: true}
			close(wch)
			if _, _, ok := s.follow(context.Background(), func() {}, wch, 7, make(chan store.Change, 10)); !ok {
				t.Fatal("follow reports the subscription over")
			}
			if got := s.freed.Load() - before; got != c.freed {
				t.Errorf("freed counted %d, want %d", got, c.freed)
			}
		})
	}
}
