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
