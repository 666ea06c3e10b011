//go:build linux

package chaos

import (
	"strings"
	"testing"
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
