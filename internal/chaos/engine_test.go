//go:build linux

package chaos

import (
	"context"
	"strings"
	"testing"
	"time"
)

func TestSlot(t *testing.T) {
	for _, tt := range []struct {
		env   string
		index int
		ok    bool
	}{
		{"2.5", 2, true},
		{"0.1", 0, true},
		{"", 0, false},
		{"x.1", 0, false},
		{"-1.1", 0, false},
	} {
		t.Setenv(envSlot, tt.env)
		if i, ok := Slot(); i != tt.index || ok != tt.ok {
			t.Errorf("%s=%q: Slot() = %d, %v, want %d, %v", envSlot, tt.env, i, ok, tt.index, tt.ok)
		}
	}
}

func TestRunnerModeNeedsTheEngineRunnerURL(t *testing.T) {
	RegisterEngine(Engine{Scheme: "norunnerurl"})
	cfg := Config{StoreURL: "norunnerurl://127.0.0.1:1", Instances: 3, Locks: 1, Runner: true}
	cfg.applyDefaults()
	if err := cfg.validate(); err == nil || !strings.Contains(err.Error(), "RunnerURL") {
		t.Errorf("runner mode on an engine without RunnerURL: validate = %v, want an error naming Engine.RunnerURL", err)
	}
	cfg.Runner = false
	cfg.Locks = 2
	if err := cfg.validate(); err != nil {
		t.Errorf("executor mode on that engine: validate = %v, want nil", err)
	}
}

// TestStoreLossWaitsOutARestart: an engine's store-restart and a
// store-side loss never overlap (a restart under the loss's call ended it
// with the server's EOF, a harness-error once in 1,000 faults on etcd),
// and the loss is recorded as called once the restart is over, not when
// it began to wait: a Called before the wait would excuse, as lost in the
// store, what the holder did while its lease still stood.
func TestStoreLossWaitsOutARestart(t *testing.T) {
	restarting, release := make(chan struct{}), make(chan struct{})
	var restartEnd, lossStart int64
	d := &driver{spec: storeSpec{engine: &Engine{
		Scheme: "lossrestart",
		Restart: func(context.Context, int) (string, bool, error) {
			close(restarting)
			<-release
			restartEnd = Mono()
			return "restarted", false, nil
		},
		EndLease: func(context.Context, string, string, string, string) (int64, string, error) {
			lossStart = Mono()
			return 7, "holder", nil
		},
	}}}
	done := make(chan struct{})
	go func() {
		defer close(done)
		d.faultRestartEngine(context.Background(), &FaultRecord{}, &slot{index: 1})
	}()
	<-restarting
	lossDone := make(chan StoreLoss)
	go func() {
		l, err := d.storeLoss("L", "delete")
		if err != nil {
			t.Error(err)
		}
		lossDone <- l
	}()
	select {
	case <-lossDone:
		t.Fatal("the store-side loss ran while the store restarted")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	l := <-lossDone
	<-done
	if lossStart < restartEnd {
		t.Errorf("the loss's call began %v before the restart ended", time.Duration(restartEnd-lossStart))
	}
	if l.Called < restartEnd {
		t.Errorf("the loss is recorded as called %v before the restart ended, while it waited", time.Duration(restartEnd-l.Called))
	}
}
