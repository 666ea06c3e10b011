package masterjob_test

import (
	"context"
	"log/slog"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/audit"
	"github.com/masterjob/masterjob/internal/syncbuf"
	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/store/memstore"
)

// A follower names the master when it changes, and says when it stands by
// (issue 8, item 15): before, it logged "following lock" once and never
// named the master.
func TestFollowerLogsTheMaster(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		a := newExec(t, st, "a", masterjob.WithInstanceInfo(masterjob.InstanceInfo{Host: "host-a", PID: 11}))
		_ = a.StartMaster("JOB", idle())
		stopA := startRun(a)
		synctest.Wait()
		var logs syncbuf.Buffer
		w := newExec(t, st, "w", masterjob.WithLogger(slog.New(slog.NewTextHandler(&logs, nil))))
		_ = w.StartMaster("JOB", idle())
		stopW := startRun(w)
		synctest.Wait()
		c := newExec(t, st, "c", masterjob.WithInstanceInfo(masterjob.InstanceInfo{Host: "host-c", PID: 33}))
		_ = c.StartMaster("JOB", idle())
		stopC := startRun(c)
		synctest.Wait()
		if err := stopA(); err != nil { // a hands over to c (or w)
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		synctest.Wait()
		if _, err := st.Disable(context.Background(), "JOB", "maintenance", "ops"); err != nil {
			t.Fatal(err)
		}
		time.Sleep(2 * heartbeat)
		synctest.Wait()
		_ = stopC()
		_ = stopW()
		out := logs.String()
		for _, want := range []string{
			`msg="standing by: another instance is master" instance=w lock=JOB master.instance=a master.token=1 master.host=host-a master.pid=11`,
			`msg="standing by: lock disabled" instance=w lock=JOB reason=maintenance by=ops`,
		} {
			if !strings.Contains(out, want) {
				t.Errorf("log lacks %s; log:\n%s", want, out)
			}
		}
	})
}

// A crash leaves a trace in the history: the acquisition of a lock whose
// previous lease expired is recorded as a takeover naming the previous
// holder and token (issue 8, item 16). Before, the history went from
// "token 1 acquired" to "token 2 acquired".
func TestTakeoverRecordedInHistory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		st := memstore.New()
		view := &switchable{Store: st}
		a := newExec(t, view, "a")
		_ = a.StartMaster("JOB", idle())
		stopA := startRun(a)
		synctest.Wait()
		rec := audit.NewRecorder(st, slog.New(slog.DiscardHandler))
		b := newExec(t, st, "b", masterjob.WithObserver(rec))
		_ = b.StartMaster("JOB", idle())
		stopB := startRun(b)
		synctest.Wait()
		view.cut(true) // a crashes, as far as the store can tell
		time.Sleep(2 * tolerance)
		synctest.Wait()
		if m := masterOf(t, st, "JOB"); m != "b" {
			t.Fatalf("master %q after a's crash, want b", m)
		}
		_ = stopB()
		if err := rec.Close(context.Background()); err != nil {
			t.Fatal(err)
		}
		events, err := st.Events(context.Background(), store.EventFilter{Lock: "JOB"})
		if err != nil {
			t.Fatal(err)
		}
		found := false
		for _, e := range events {
			if e.Kind == store.EventTakeover && e.Instance == "b" && e.Token == 2 && strings.Contains(e.Reason, "a (token 1) expired") {
				found = true
			}
		}
		if !found {
			t.Fatalf("no takeover entry by b naming a's token 1 in %+v", events)
		}
		view.cut(false)
		_ = stopA()
	})
}
