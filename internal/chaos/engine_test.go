//go:build linux

package chaos

import "testing"

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
