package cli

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/masterjob/masterjob"
)

// durationValue is a flag.Value for a duration given as a Go duration
// ("250ms", "8s") or as milliseconds ("8000"), like the config file and the
// environment. It remembers whether the flag was set. The sign is not
// checked here: the configuration's validation names the flag. A bare
// number below masterjob.MinTiming other than 0 is refused: "5" would be
// 5ms, and whoever typed it more likely meant 5s.
type durationValue struct {
	d   time.Duration
	set bool
}

func (v *durationValue) String() string {
	if v == nil || !v.set && v.d == 0 {
		return ""
	}
	return v.d.String()
}

func (v *durationValue) Set(s string) error {
	d, err := parseDuration(s)
	if err != nil {
		return err
	}
	v.d, v.set = d, true
	return nil
}

func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if maxMs := int64(math.MaxInt64 / time.Millisecond); n > maxMs || n < -maxMs {
			return 0, fmt.Errorf("%s milliseconds is out of range", s)
		}
		d := time.Duration(n) * time.Millisecond
		if d > 0 && d < masterjob.MinTiming {
			return 0, fmt.Errorf("a bare number is milliseconds: %s would be %v, shorter than %v; write the unit, such as %ss",
				s, d, masterjob.MinTiming, s)
		}
		return d, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("want a duration such as 500ms or 8s, or milliseconds, got %q", s)
	}
	return d, nil
}

// intValue is a flag.Value for an int that remembers whether it was set.
type intValue struct {
	n   int
	set bool
}

func (v *intValue) String() string {
	if v == nil || !v.set {
		return ""
	}
	return strconv.Itoa(v.n)
}

func (v *intValue) Set(s string) error {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		return fmt.Errorf("want an integer, got %q", s)
	}
	v.n, v.set = n, true
	return nil
}

// choiceValue is a flag.Value that accepts one of a fixed set of words.
type choiceValue struct {
	value   string
	choices []string
}

func (v *choiceValue) String() string {
	if v == nil {
		return ""
	}
	return v.value
}

func (v *choiceValue) Set(s string) error {
	for _, c := range v.choices {
		if s == c {
			v.value = s
			return nil
		}
	}
	return fmt.Errorf("want one of %s, got %q", strings.Join(v.choices, ", "), s)
}
