package masterjob

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// The section of the JSON config file that holds the executor's settings,
// and its keys. Errors name settings by these keys; options.go uses the same
// names for the overrides of options in code.
const (
	configSection             = "masterJobExecutor"
	keyInitDelay              = "initDelay"
	keyCheckMasterInterval    = "checkMasterInterval"
	keyHeartbeatInterval      = "heartbeatInterval"
	keyMaxHeartbeatRetryCount = "maxHeartbeatRetryCount"
	keyTolerance              = "masterJobTolerance"
	keySafetyMargin           = "safetyMargin"
	keyShutdownTimeout        = "shutdownTimeout"
)

// MinTiming is the shortest value accepted for every timing but InitDelay
// (which may be zero): CheckMasterInterval, HeartbeatInterval, Tolerance,
// SafetyMargin and ShutdownTimeout, whatever their source. Shorter timings
// make every instance write or read the store hundreds of times a second
// (a 5 ms heartbeat is 200 renewals a second), and a safety margin that
// short leaves a job no time to stop. Below it, the likelier story is a
// unit left out: in the config file, the environment and the command line's
// flags a bare number is milliseconds, so "5" is 5ms, not 5s.
const MinTiming = 10 * time.Millisecond

// sourceDefault labels a value that came from the constants in options.go.
const sourceDefault = "default"

// Labels of the derived defaults.
var (
	sourceDefaultTolerance    = fmt.Sprintf("default: %d x %s", DefaultToleranceFactor, keyHeartbeatInterval)
	sourceDefaultSafetyMargin = fmt.Sprintf("default: %s / %d", keyTolerance, DefaultSafetyMarginDivisor)
	sourceDefaultShutdown     = "default: " + keyTolerance
)

// durationSetting describes one duration field of Config.
type durationSetting struct {
	key      string // config-file key
	env      string // environment variable; "" when there is none
	positive bool   // zero is invalid (otherwise only negative values are)
	field    func(*Config) *time.Duration
}

// durationSettings lists the duration fields in the order errors report them.
var durationSettings = []durationSetting{
	{keyInitDelay, EnvInitDelay, false, func(c *Config) *time.Duration { return &c.InitDelay }},
	{keyCheckMasterInterval, EnvCheckMasterInterval, true, func(c *Config) *time.Duration { return &c.CheckMasterInterval }},
	{keyHeartbeatInterval, EnvHeartbeatInterval, true, func(c *Config) *time.Duration { return &c.HeartbeatInterval }},
	{keyTolerance, EnvTolerance, true, func(c *Config) *time.Duration { return &c.Tolerance }},
	{keySafetyMargin, "", true, func(c *Config) *time.Duration { return &c.SafetyMargin }},
	{keyShutdownTimeout, "", true, func(c *Config) *time.Duration { return &c.ShutdownTimeout }},
}

// configKeys lists every key the config file's section may hold, sorted.
var configKeys = func() []string {
	keys := []string{keyMaxHeartbeatRetryCount}
	for _, s := range durationSettings {
		keys = append(keys, s.key)
	}
	slices.Sort(keys)
	return keys
}()

// LoadConfig resolves the configuration New would use, without a store: a
// command-line tool can call it to validate its settings early, or to show
// them. Each setting comes from four sources, later winning: the defaults
// (the Default* constants), the "masterJobExecutor" section of the JSON
// config file (WithConfigFile, else $MASTERJOB_CONFIG), the environment
// (INIT_DELAY, CHECK_MASTER_INTERVAL, MASTER_JOB_HEARTBEAT_INTERVAL,
// MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT, MASTER_JOB_TOLERANCE) and opts.
//
// In the file and the environment a duration is a number of milliseconds,
// as in the seed (8000), or a Go duration string ("8s"). An empty
// environment variable counts as unset. Tolerance, SafetyMargin and
// ShutdownTimeout that no source sets are derived from HeartbeatInterval and
// Tolerance (see the Default* constants).
//
// The error, if any, wraps ErrInvalidConfig. It joins (errors.Join) one
// error per problem found, each naming the setting by its config-file key,
// its value and the source the value came from.
func LoadConfig(opts ...Option) (Config, error) {
	var o options
	for _, opt := range opts {
		if opt != nil {
			opt(&o)
		}
	}
	return resolveConfig(&o)
}

// resolveConfig resolves the configuration from o, which has all options
// applied. New calls it.
func resolveConfig(o *options) (Config, error) {
	r := resolve(o)
	if err := errors.Join(r.errs...); err != nil {
		return Config{}, err
	}
	return r.cfg, nil
}

// resolution is the state of resolving a configuration.
type resolution struct {
	cfg Config
	// source maps a config-file key to the label of the source of its
	// value. A key without an entry has not been set (yet).
	source map[string]string
	// unsure holds the keys whose final value could not be read (a parse
	// failure, an unreadable file) or derives from such a value, or from an
	// invalid one. Their problem is already reported, so validation skips
	// every check that involves them rather than report consequences.
	unsure map[string]bool
	// bare holds the keys whose value was written as a bare number (in the
	// file or the environment): milliseconds, which errors remind of.
	bare map[string]bool
	errs []error
}

// invalid returns an error that wraps ErrInvalidConfig.
func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidConfig, fmt.Sprintf(format, args...))
}

// resolve applies the four sources in order, derives the remaining
// defaults and validates the result.
func resolve(o *options) *resolution {
	r := &resolution{source: map[string]string{}, unsure: map[string]bool{}, bare: map[string]bool{}}
	lookup := o.lookupEnv
	if lookup == nil {
		lookup = os.LookupEnv
	}

	// 1. Defaults. Tolerance, SafetyMargin and ShutdownTimeout are derived
	// at the end, once HeartbeatInterval and Tolerance are known.
	r.setDuration(keyInitDelay, DefaultInitDelay, sourceDefault)
	r.setDuration(keyCheckMasterInterval, DefaultCheckMasterInterval, sourceDefault)
	r.setDuration(keyHeartbeatInterval, DefaultHeartbeatInterval, sourceDefault)
	r.setRetry(DefaultMaxHeartbeatRetryCount, sourceDefault)

	// 2. The config file.
	r.loadFile(o, lookup)

	// 3. The environment.
	r.loadEnv(lookup)

	// 4. Options in code.
	for _, s := range durationSettings {
		if ov, ok := o.overrides[s.key]; ok {
			r.setDuration(s.key, ov.value, ov.source)
		}
	}
	if o.retryOverride != nil {
		r.setRetry(o.retryOverride.value, o.retryOverride.source)
	}

	r.derive()
	r.validate()
	return r
}

func settingFor(key string) durationSetting {
	for _, s := range durationSettings {
		if s.key == key {
			return s
		}
	}
	panic("masterjob: unknown duration setting " + key)
}

func (r *resolution) setDuration(key string, d time.Duration, source string) {
	*settingFor(key).field(&r.cfg) = d
	r.source[key] = source
	delete(r.unsure, key)
	delete(r.bare, key)
}

func (r *resolution) setRetry(n int, source string) {
	r.cfg.MaxHeartbeatRetryCount = n
	r.source[keyMaxHeartbeatRetryCount] = source
	delete(r.unsure, keyMaxHeartbeatRetryCount)
}

// fail reports err about key, whose value is now unsure.
func (r *resolution) fail(key string, err error) {
	r.unsure[key] = true
	r.errs = append(r.errs, err)
}

// duration returns the value of a duration setting.
func (r *resolution) duration(key string) time.Duration {
	return *settingFor(key).field(&r.cfg)
}

// describe names a setting, its value and its source, as errors show them:
// `heartbeatInterval 8s (environment MASTER_JOB_HEARTBEAT_INTERVAL)`.
func (r *resolution) describe(key string) string {
	var v any
	if key == keyMaxHeartbeatRetryCount {
		v = r.cfg.MaxHeartbeatRetryCount
	} else {
		v = r.duration(key)
	}
	return fmt.Sprintf("%s %v (%s)", key, v, r.source[key])
}

// configPath returns the config file's path and what named it, or "" when
// there is no config file.
func configPath(o *options, lookup func(string) (string, bool)) (path, namedBy string) {
	if o.configFile != nil && o.configFile.value != "" {
		return o.configFile.value, o.configFile.source
	}
	if v, ok := lookup(EnvConfigFile); ok && strings.TrimSpace(v) != "" {
		return v, "environment " + EnvConfigFile
	}
	return "", ""
}

// loadFile applies the settings of the config file's section.
func (r *resolution) loadFile(o *options, lookup func(string) (string, bool)) {
	path, namedBy := configPath(o, lookup)
	if path == "" {
		return
	}
	section, err := readSection(path, namedBy)
	if err != nil {
		// Every setting might have come from the file: skip the checks of
		// those that no later source sets.
		r.errs = append(r.errs, err)
		for _, k := range configKeys {
			r.unsure[k] = true
		}
		return
	}
	keys := make([]string, 0, len(section))
	for k := range section {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, key := range keys {
		raw := section[key]
		source := fmt.Sprintf("config file %s (%s.%s)", path, configSection, key)
		switch {
		case key == keyMaxHeartbeatRetryCount:
			n, set, err := parseJSONInt(raw)
			if err != nil {
				r.fail(key, invalid("%s %s (%s): %v", key, showJSON(raw), source, err))
			} else if set {
				r.setRetry(n, source)
			}
		case slices.Contains(configKeys, key):
			d, set, err := parseJSONDuration(raw)
			if err != nil {
				r.fail(key, invalid("%s %s (%s): %v", key, showJSON(raw), source, err))
			} else if set {
				r.setDuration(key, d, source)
				r.bare[key] = isBareNumber(raw)
			}
		default:
			r.errs = append(r.errs, invalid("unknown key %q in the %q section of config file %s (named by %s)%s; known keys: %s",
				key, configSection, path, namedBy, didYouMean(key), strings.Join(configKeys, ", ")))
		}
	}
}

// didYouMean suggests the known key that key misspells by case only.
func didYouMean(key string) string {
	for _, k := range configKeys {
		if strings.EqualFold(k, key) {
			return fmt.Sprintf(" (did you mean %q?)", k)
		}
	}
	return ""
}

// readSection reads the config file and returns its "masterJobExecutor"
// section, nil when the file has none.
func readSection(path, namedBy string) (map[string]json.RawMessage, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		var pe *fs.PathError
		if errors.As(err, &pe) {
			err = pe.Err // the path is in the message already
		}
		return nil, fmt.Errorf("%w: cannot read config file %s (named by %s): %w", ErrInvalidConfig, path, namedBy, err)
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil {
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			line, col := position(data, se.Offset)
			return nil, fmt.Errorf("%w: config file %s (named by %s) is not valid JSON: line %d, column %d: %w",
				ErrInvalidConfig, path, namedBy, line, col, err)
		case errors.As(err, &te):
			return nil, fmt.Errorf("%w: config file %s (named by %s) must hold a JSON object, not a JSON %s",
				ErrInvalidConfig, path, namedBy, te.Value)
		default:
			return nil, fmt.Errorf("%w: config file %s (named by %s) is not valid JSON: %w", ErrInvalidConfig, path, namedBy, err)
		}
	}
	raw, ok := top[configSection]
	if !ok || isJSONNull(raw) {
		return nil, nil
	}
	var section map[string]json.RawMessage
	if err := json.Unmarshal(raw, &section); err != nil {
		return nil, fmt.Errorf("%w: %q in config file %s (named by %s) must be a JSON object, not %s",
			ErrInvalidConfig, configSection, path, namedBy, showJSON(raw))
	}
	return section, nil
}

// position returns the 1-based line and column of the byte that a
// json.SyntaxError's offset points past.
func position(data []byte, offset int64) (line, col int) {
	i := int(min(max(offset-1, 0), int64(len(data))))
	before := data[:i]
	line = 1 + bytes.Count(before, []byte("\n"))
	col = i - bytes.LastIndexByte(before, '\n')
	return line, col
}

func isJSONNull(raw json.RawMessage) bool {
	return bytes.Equal(bytes.TrimSpace(raw), []byte("null"))
}

// showJSON returns raw JSON for an error message, shortened if long.
func showJSON(raw json.RawMessage) string {
	s := string(bytes.TrimSpace(raw))
	if len(s) > 40 {
		s = s[:37] + "..."
	}
	return s
}

// parseJSONDuration parses a config-file duration: a JSON number of
// milliseconds, or a string holding milliseconds or a Go duration. set is
// false for null (the key counts as absent).
func parseJSONDuration(raw json.RawMessage) (d time.Duration, set bool, err error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case isJSONNull(raw):
		return 0, false, nil
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, err
		}
		d, err := parseDuration(s)
		return d, err == nil, err
	case len(raw) > 0 && (raw[0] == '-' || raw[0] >= '0' && raw[0] <= '9'):
		d, err := parseMillis(string(raw))
		return d, err == nil, err
	default:
		return 0, false, errDurationSyntax
	}
}

// parseJSONInt parses a config-file integer: a JSON number or a string
// holding one. set is false for null.
func parseJSONInt(raw json.RawMessage) (n int, set bool, err error) {
	raw = bytes.TrimSpace(raw)
	switch {
	case isJSONNull(raw):
		return 0, false, nil
	case len(raw) > 0 && raw[0] == '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return 0, false, err
		}
		n, err := parseInt(s)
		return n, err == nil, err
	default:
		n, err := parseInt(string(raw))
		return n, err == nil, err
	}
}

var (
	errDurationSyntax = errors.New(`want a number of milliseconds (8000) or a Go duration ("8s")`)
	errIntSyntax      = errors.New("want a whole number")
	errRange          = errors.New("out of range")
)

// parseDuration parses a duration given as text: a number of milliseconds
// ("8000", "1.5") or a Go duration ("8s", "1m30s").
func parseDuration(s string) (time.Duration, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return 0, errors.New("empty; " + errDurationSyntax.Error())
	}
	if d, err := parseMillis(s); err == nil || errors.Is(err, errRange) {
		return d, err
	}
	d, err := time.ParseDuration(s)
	if err != nil {
		// time.ParseDuration reports syntax and overflow alike.
		return 0, errDurationSyntax
	}
	return d, nil
}

// parseMillis parses a number of milliseconds, possibly fractional.
func parseMillis(s string) (time.Duration, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n > math.MaxInt64/int64(time.Millisecond) || n < math.MinInt64/int64(time.Millisecond) {
			return 0, errRange
		}
		return time.Duration(n) * time.Millisecond, nil
	}
	if strings.Trim(s, "0123456789+-.eE") != "" {
		// Not a decimal number (ParseFloat would also take "Inf", "NaN"
		// and hexadecimal).
		return 0, errDurationSyntax
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, errRange
		}
		return 0, errDurationSyntax
	}
	ns := math.Round(f * float64(time.Millisecond))
	if ns >= math.MaxInt64 || ns < math.MinInt64 {
		return 0, errRange
	}
	return time.Duration(ns), nil
}

// parseInt parses a whole number given as text.
func parseInt(s string) (int, error) {
	n, err := strconv.Atoi(strings.TrimSpace(s))
	if err != nil {
		var ne *strconv.NumError
		if errors.As(err, &ne) && errors.Is(ne.Err, strconv.ErrRange) {
			return 0, errRange
		}
		return 0, errIntSyntax
	}
	return n, nil
}

// loadEnv applies the environment variables. An empty value counts as
// unset.
func (r *resolution) loadEnv(lookup func(string) (string, bool)) {
	for _, s := range durationSettings {
		if s.env == "" {
			continue
		}
		v, ok := lookup(s.env)
		if !ok || strings.TrimSpace(v) == "" {
			continue
		}
		source := "environment " + s.env
		d, err := parseDuration(v)
		if err != nil {
			r.fail(s.key, invalid("%s %q (%s): %v", s.key, v, source, err))
			continue
		}
		r.setDuration(s.key, d, source)
		r.bare[s.key] = isBareNumber(json.RawMessage(strconv.Quote(v)))
	}
	if v, ok := lookup(EnvMaxHeartbeatRetryCount); ok && strings.TrimSpace(v) != "" {
		source := "environment " + EnvMaxHeartbeatRetryCount
		n, err := parseInt(v)
		if err != nil {
			r.fail(keyMaxHeartbeatRetryCount, invalid("%s %q (%s): %v", keyMaxHeartbeatRetryCount, v, source, err))
		} else {
			r.setRetry(n, source)
		}
	}
}

// derive sets Tolerance, SafetyMargin and ShutdownTimeout that no source
// set. A value derived from an unsure or invalid one is unsure itself: the
// problem is reported once, at its root.
func (r *resolution) derive() {
	derived := func(key, base, label string, f func(time.Duration) (time.Duration, bool)) {
		if _, set := r.source[key]; set {
			return
		}
		r.source[key] = label
		b := r.duration(base)
		if r.unsure[base] || b < MinTiming {
			// The base is invalid and reported: a value derived from it
			// would only report its consequence.
			r.unsure[key] = true
			return
		}
		d, ok := f(b)
		if !ok {
			r.fail(key, invalid("%s is too long to derive %s (%s) from it", r.describe(base), key, label))
			return
		}
		*settingFor(key).field(&r.cfg) = d
	}
	derived(keyTolerance, keyHeartbeatInterval, sourceDefaultTolerance, func(h time.Duration) (time.Duration, bool) {
		return DefaultToleranceFactor * h, h <= math.MaxInt64/DefaultToleranceFactor
	})
	derived(keySafetyMargin, keyTolerance, sourceDefaultSafetyMargin, func(t time.Duration) (time.Duration, bool) {
		return t / DefaultSafetyMarginDivisor, true
	})
	derived(keyShutdownTimeout, keyTolerance, sourceDefaultShutdown, func(t time.Duration) (time.Duration, bool) {
		return t, true
	})
}

// isBareNumber reports whether a config-file value (a JSON number, or a
// string) is a number without a unit, which means milliseconds.
func isBareNumber(raw json.RawMessage) bool {
	text := string(bytes.TrimSpace(raw))
	var s string
	if json.Unmarshal(raw, &s) == nil {
		text = s
	}
	_, err := parseMillis(strings.TrimSpace(text))
	return err == nil
}

// unitHint reminds, for a timing below MinTiming that was written as a bare
// number, that it means milliseconds, and shows the value the user
// probably meant.
func unitHint(bare bool, d time.Duration) string {
	if !bare {
		return ""
	}
	ms := strconv.FormatFloat(float64(d)/float64(time.Millisecond), 'f', -1, 64)
	return fmt.Sprintf(` (a bare number is milliseconds: %s is %v; write the unit, such as "%ss")`, ms, d, ms)
}

// validate checks each setting, then the relations between them, skipping
// checks that involve unsure settings.
func (r *resolution) validate() {
	for _, s := range durationSettings {
		if r.unsure[s.key] {
			continue
		}
		switch d := r.duration(s.key); {
		case d < 0:
			r.errs = append(r.errs, invalid("%s must not be negative", r.describe(s.key)))
		case d == 0 && s.positive:
			r.errs = append(r.errs, invalid("%s must be positive", r.describe(s.key)))
		case d < MinTiming && s.positive:
			r.errs = append(r.errs, invalid("%s is shorter than %v, the shortest timing accepted%s",
				r.describe(s.key), MinTiming, unitHint(r.bare[s.key], d)))
		}
	}
	if !r.unsure[keyMaxHeartbeatRetryCount] && r.cfg.MaxHeartbeatRetryCount < 0 {
		r.errs = append(r.errs, invalid("%s must not be negative", r.describe(keyMaxHeartbeatRetryCount)))
	}
	if !r.unsure[keyMaxHeartbeatRetryCount] && r.cfg.MaxHeartbeatRetryCount > MaxHeartbeatRetryCountLimit {
		r.errs = append(r.errs, invalid("%s must be at most %d: the retries of one heartbeat share what is left of the trust window",
			r.describe(keyMaxHeartbeatRetryCount), MaxHeartbeatRetryCountLimit))
	}

	// The relations hold only between settings that are valid on their own
	// (all of them are floored at MinTiming).
	valid := func(keys ...string) bool {
		for _, k := range keys {
			if r.unsure[k] || r.duration(k) < MinTiming {
				return false
			}
		}
		return true
	}
	c := r.cfg
	relationsOK := true
	if valid(keyHeartbeatInterval, keyTolerance) && c.HeartbeatInterval >= c.Tolerance {
		relationsOK = false
		r.errs = append(r.errs, invalid("%s must be shorter than %s",
			r.describe(keyHeartbeatInterval), r.describe(keyTolerance)))
	}
	if valid(keySafetyMargin, keyTolerance) && c.SafetyMargin >= c.Tolerance {
		relationsOK = false
		r.errs = append(r.errs, invalid("%s must be shorter than %s",
			r.describe(keySafetyMargin), r.describe(keyTolerance)))
	}
	if relationsOK && valid(keyHeartbeatInterval, keyTolerance, keySafetyMargin) &&
		c.HeartbeatInterval >= c.TrustWindow() {
		r.errs = append(r.errs, invalid("%s must be shorter than the trust window %v = %s - %s: "+
			"otherwise a master stops trusting its lease, and demotes itself, before its next heartbeat",
			r.describe(keyHeartbeatInterval), c.TrustWindow(), r.describe(keyTolerance), r.describe(keySafetyMargin)))
	}
}
