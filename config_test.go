package masterjob

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// envMap returns an option that reads the environment from m, never from
// the process, so that tests can run in parallel.
func envMap(m map[string]string) Option {
	return WithLookupEnv(func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	})
}

// writeFile writes content to a fresh config file and returns its path.
func writeFile(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.json")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// writeSection writes a config file, like the seed's server/config.json,
// with other sections and a masterJobExecutor section holding body.
func writeSection(t *testing.T, body string) string {
	t.Helper()
	return writeFile(t, `{"restApiRoot": "/api", "remoting": {"rest": {}}, "masterJobExecutor": {`+body+`}}`)
}

// seedConfig is the resolved configuration with the seed's defaults.
var seedConfig = Config{
	InitDelay:              1000 * time.Millisecond,
	CheckMasterInterval:    30000 * time.Millisecond,
	HeartbeatInterval:      8000 * time.Millisecond,
	MaxHeartbeatRetryCount: 3,
	Tolerance:              24000 * time.Millisecond,
	SafetyMargin:           6000 * time.Millisecond,
	ShutdownTimeout:        24000 * time.Millisecond,
}

func TestConfigDefaults(t *testing.T) {
	t.Parallel()
	cfg, err := LoadConfig(envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	if cfg != seedConfig {
		t.Errorf("LoadConfig() = %+v, want %+v", cfg, seedConfig)
	}
	if got, want := cfg.TrustWindow(), 18*time.Second; got != want {
		t.Errorf("TrustWindow() = %v, want %v", got, want)
	}

	// The constants are the seed's, too.
	if DefaultInitDelay != seedConfig.InitDelay || DefaultCheckMasterInterval != seedConfig.CheckMasterInterval ||
		DefaultHeartbeatInterval != seedConfig.HeartbeatInterval || DefaultMaxHeartbeatRetryCount != seedConfig.MaxHeartbeatRetryCount {
		t.Error("Default* constants differ from the seed's")
	}

	r := resolve(&options{lookupEnv: func(string) (string, bool) { return "", false }})
	wantSources := map[string]string{
		keyInitDelay:              "default",
		keyCheckMasterInterval:    "default",
		keyHeartbeatInterval:      "default",
		keyMaxHeartbeatRetryCount: "default",
		keyTolerance:              "default: 3 x heartbeatInterval",
		keySafetyMargin:           "default: masterJobTolerance / 4",
		keyShutdownTimeout:        "default: masterJobTolerance",
	}
	for k, want := range wantSources {
		if got := r.source[k]; got != want {
			t.Errorf("source of %s = %q, want %q", k, got, want)
		}
	}

	// A nil option is ignored, and resolveConfig agrees with LoadConfig.
	if cfg, err := LoadConfig(nil, envMap(nil)); err != nil || cfg != seedConfig {
		t.Errorf("LoadConfig(nil, ...) = %+v, %v", cfg, err)
	}
	o := &options{}
	envMap(nil)(o)
	if cfg, err := resolveConfig(o); err != nil || cfg != seedConfig {
		t.Errorf("resolveConfig = %+v, %v", cfg, err)
	}
}

// TestConfigSeedFile reads the seed's example server/config.json (other
// sections included), named by option or by $MASTERJOB_CONFIG.
func TestConfigSeedFile(t *testing.T) {
	t.Parallel()
	const path = "testdata/config/seed.json"
	want := Config{
		InitDelay:              5 * time.Second,
		CheckMasterInterval:    20 * time.Second,
		HeartbeatInterval:      15 * time.Second,
		MaxHeartbeatRetryCount: 10,
		Tolerance:              45 * time.Second,
		SafetyMargin:           45 * time.Second / 4,
		ShutdownTimeout:        45 * time.Second,
	}
	for name, opts := range map[string][]Option{
		"WithConfigFile":   {WithConfigFile(path), envMap(nil)},
		"MASTERJOB_CONFIG": {envMap(map[string]string{"MASTERJOB_CONFIG": path})},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(opts...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg != want {
				t.Errorf("got %+v, want %+v", cfg, want)
			}
		})
	}
}

// TestConfigPrecedence checks, for every setting and every combination of
// the sources that can set it, that the highest source wins, and that the
// value carries that source's label.
func TestConfigPrecedence(t *testing.T) {
	t.Parallel()
	type source struct {
		fileJSON string // raw JSON value in the masterJobExecutor section
		env      string
		opt      Option
	}
	type want struct {
		def, file, env, opt any
	}
	cases := []struct {
		key     string
		envName string // "" when the setting has no environment variable
		src     source
		want    want
		defSrc  string
		optSrc  string
		get     func(Config) any
	}{
		{
			key: keyInitDelay, envName: EnvInitDelay,
			src:    source{`2000`, "3s", WithInitDelay(4 * time.Second)},
			want:   want{time.Second, 2 * time.Second, 3 * time.Second, 4 * time.Second},
			defSrc: "default",
			optSrc: "option WithInitDelay",
			get:    func(c Config) any { return c.InitDelay },
		},
		{
			key: keyCheckMasterInterval, envName: EnvCheckMasterInterval,
			src:    source{`"40000"`, "50000", WithCheckMasterInterval(60 * time.Second)},
			want:   want{30 * time.Second, 40 * time.Second, 50 * time.Second, 60 * time.Second},
			defSrc: "default",
			optSrc: "option WithCheckMasterInterval",
			get:    func(c Config) any { return c.CheckMasterInterval },
		},
		{
			key: keyHeartbeatInterval, envName: EnvHeartbeatInterval,
			src:    source{`"9s"`, "10000", WithHeartbeatInterval(11 * time.Second)},
			want:   want{8 * time.Second, 9 * time.Second, 10 * time.Second, 11 * time.Second},
			defSrc: "default",
			optSrc: "option WithHeartbeatInterval",
			get:    func(c Config) any { return c.HeartbeatInterval },
		},
		{
			key: keyMaxHeartbeatRetryCount, envName: EnvMaxHeartbeatRetryCount,
			src:    source{`4`, "5", WithMaxHeartbeatRetryCount(6)},
			want:   want{3, 4, 5, 6},
			defSrc: "default",
			optSrc: "option WithMaxHeartbeatRetryCount",
			get:    func(c Config) any { return c.MaxHeartbeatRetryCount },
		},
		{
			key: keyTolerance, envName: EnvTolerance,
			src:    source{`30000`, "31s", WithTolerance(32 * time.Second)},
			want:   want{24 * time.Second, 30 * time.Second, 31 * time.Second, 32 * time.Second},
			defSrc: "default: 3 x heartbeatInterval",
			optSrc: "option WithTolerance",
			get:    func(c Config) any { return c.Tolerance },
		},
		{
			key:    keySafetyMargin,
			src:    source{fileJSON: `"1s"`, opt: WithSafetyMargin(2 * time.Second)},
			want:   want{def: 6 * time.Second, file: time.Second, opt: 2 * time.Second},
			defSrc: "default: masterJobTolerance / 4",
			optSrc: "option WithSafetyMargin",
			get:    func(c Config) any { return c.SafetyMargin },
		},
		{
			key:    keyShutdownTimeout,
			src:    source{fileJSON: `5000`, opt: WithShutdownTimeout(7 * time.Second)},
			want:   want{def: 24 * time.Second, file: 5 * time.Second, opt: 7 * time.Second},
			defSrc: "default: masterJobTolerance",
			optSrc: "option WithShutdownTimeout",
			get:    func(c Config) any { return c.ShutdownTimeout },
		},
	}
	for _, tc := range cases {
		for mask := range 8 {
			useFile, useEnv, useOpt := mask&1 != 0, mask&2 != 0, mask&4 != 0
			if useEnv && tc.envName == "" {
				continue
			}
			name := tc.key
			for _, s := range []struct {
				on   bool
				name string
			}{{useFile, "file"}, {useEnv, "env"}, {useOpt, "option"}} {
				if s.on {
					name += "/" + s.name
				}
			}
			t.Run(name, func(t *testing.T) {
				t.Parallel()
				wantVal, wantSrc := tc.want.def, tc.defSrc
				env := map[string]string{}
				var opts []Option
				if useFile {
					path := writeSection(t, `"`+tc.key+`": `+tc.src.fileJSON)
					opts = append(opts, WithConfigFile(path))
					wantVal, wantSrc = tc.want.file, "config file "+path+" (masterJobExecutor."+tc.key+")"
				}
				if useEnv {
					env[tc.envName] = tc.src.env
					wantVal, wantSrc = tc.want.env, "environment "+tc.envName
				}
				if useOpt {
					opts = append(opts, tc.src.opt)
					wantVal, wantSrc = tc.want.opt, tc.optSrc
				}
				opts = append(opts, envMap(env))

				cfg, err := LoadConfig(opts...)
				if err != nil {
					t.Fatal(err)
				}
				if got := tc.get(cfg); got != wantVal {
					t.Errorf("%s = %v, want %v", tc.key, got, wantVal)
				}
				var o options
				for _, opt := range opts {
					opt(&o)
				}
				if got := resolve(&o).source[tc.key]; got != wantSrc {
					t.Errorf("source of %s = %q, want %q", tc.key, got, wantSrc)
				}
			})
		}
	}
}

// TestConfigPrecedenceMixed: each setting resolves on its own. The file
// sets the heartbeat and the initial delay, the environment overrides the
// heartbeat only, an option overrides the initial delay only.
func TestConfigPrecedenceMixed(t *testing.T) {
	t.Parallel()
	path := writeSection(t, `"heartbeatInterval": 10000, "initDelay": 2000, "checkMasterInterval": "45s"`)
	cfg, err := LoadConfig(
		WithConfigFile(path),
		envMap(map[string]string{EnvHeartbeatInterval: "12s", EnvMaxHeartbeatRetryCount: "7"}),
		WithInitDelay(3*time.Second),
	)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		InitDelay:              3 * time.Second,  // option over file
		CheckMasterInterval:    45 * time.Second, // file only
		HeartbeatInterval:      12 * time.Second, // environment over file
		MaxHeartbeatRetryCount: 7,                // environment over default
		Tolerance:              36 * time.Second, // derived from the environment's heartbeat
		SafetyMargin:           9 * time.Second,
		ShutdownTimeout:        36 * time.Second,
	}
	if cfg != want {
		t.Errorf("got %+v, want %+v", cfg, want)
	}
}

func TestConfigFilePath(t *testing.T) {
	t.Parallel()
	envFile := writeSection(t, `"initDelay": 2000`)
	optFile := writeSection(t, `"initDelay": 3000`)
	cases := []struct {
		name string
		opts []Option
		want time.Duration
	}{
		{"MASTERJOB_CONFIG", []Option{envMap(map[string]string{EnvConfigFile: envFile})}, 2 * time.Second},
		{"option over MASTERJOB_CONFIG", []Option{WithConfigFile(optFile), envMap(map[string]string{EnvConfigFile: envFile})}, 3 * time.Second},
		{"empty option falls back to MASTERJOB_CONFIG", []Option{WithConfigFile(""), envMap(map[string]string{EnvConfigFile: envFile})}, 2 * time.Second},
		{"empty MASTERJOB_CONFIG means no file", []Option{envMap(map[string]string{EnvConfigFile: ""})}, DefaultInitDelay},
		{"no section", []Option{WithConfigFile("testdata/config/no-section.json"), envMap(nil)}, DefaultInitDelay},
		{"null section", []Option{WithConfigFile(writeFile(t, `{"masterJobExecutor": null}`)), envMap(nil)}, DefaultInitDelay},
		{"empty section", []Option{WithConfigFile(writeSection(t, ``)), envMap(nil)}, DefaultInitDelay},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.InitDelay != tc.want {
				t.Errorf("InitDelay = %v, want %v", cfg.InitDelay, tc.want)
			}
		})
	}
}

// TestConfigValueForms: milliseconds as a JSON number or a string, or a Go
// duration string, in the file and in the environment.
func TestConfigValueForms(t *testing.T) {
	t.Parallel()
	fileCases := []struct {
		json string
		want time.Duration
	}{
		{`8000`, 8 * time.Second},
		{`"8000"`, 8 * time.Second},
		{`"8s"`, 8 * time.Second},
		{`"1m30s"`, 90 * time.Second},
		{`"500ms"`, 500 * time.Millisecond},
		{`" 2s "`, 2 * time.Second},
		{`1.5`, 1500 * time.Microsecond},
		{`"1.5"`, 1500 * time.Microsecond},
		{`1e3`, time.Second},
		{`0`, 0},
		{`"0s"`, 0},
		{`null`, DefaultInitDelay},
	}
	for _, tc := range fileCases {
		t.Run("file "+tc.json, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(WithConfigFile(writeSection(t, `"initDelay": `+tc.json)), envMap(nil))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.InitDelay != tc.want {
				t.Errorf("initDelay %s = %v, want %v", tc.json, cfg.InitDelay, tc.want)
			}
		})
	}
	envCases := []struct {
		value string
		want  time.Duration
	}{
		{"8000", 8 * time.Second},
		{"8s", 8 * time.Second},
		{" 9s ", 9 * time.Second},
		{"250ms", 250 * time.Millisecond},
		{"0", 0},
		{"", DefaultInitDelay},
		{"  ", DefaultInitDelay},
	}
	for _, tc := range envCases {
		t.Run("env "+tc.value, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(envMap(map[string]string{EnvInitDelay: tc.value}))
			if err != nil {
				t.Fatal(err)
			}
			if cfg.InitDelay != tc.want {
				t.Errorf("INIT_DELAY=%q gives %v, want %v", tc.value, cfg.InitDelay, tc.want)
			}
		})
	}
	retryCases := []struct {
		name string
		opts []Option
		want int
	}{
		{"file number", []Option{WithConfigFile(writeSection(t, `"maxHeartbeatRetryCount": 10`)), envMap(nil)}, 10},
		{"file string", []Option{WithConfigFile(writeSection(t, `"maxHeartbeatRetryCount": "10"`)), envMap(nil)}, 10},
		{"file zero", []Option{WithConfigFile(writeSection(t, `"maxHeartbeatRetryCount": 0`)), envMap(nil)}, 0},
		{"env", []Option{envMap(map[string]string{EnvMaxHeartbeatRetryCount: " 7 "})}, 7},
		{"env empty", []Option{envMap(map[string]string{EnvMaxHeartbeatRetryCount: ""})}, DefaultMaxHeartbeatRetryCount},
	}
	for _, tc := range retryCases {
		t.Run("retry "+tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(tc.opts...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.MaxHeartbeatRetryCount != tc.want {
				t.Errorf("MaxHeartbeatRetryCount = %d, want %d", cfg.MaxHeartbeatRetryCount, tc.want)
			}
		})
	}
}

// TestConfigDerived: the derived defaults follow the heartbeat and the
// tolerance from whatever source they come, and yield to explicit values.
func TestConfigDerived(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name                    string
		opts                    []Option
		tolerance, margin, stop time.Duration
	}{
		{"heartbeat option", []Option{WithHeartbeatInterval(2 * time.Second)},
			6 * time.Second, 1500 * time.Millisecond, 6 * time.Second},
		{"heartbeat env", []Option{envMap(map[string]string{EnvHeartbeatInterval: "4000"})},
			12 * time.Second, 3 * time.Second, 12 * time.Second},
		{"heartbeat file", []Option{WithConfigFile(writeSection(t, `"heartbeatInterval": "1s"`))},
			3 * time.Second, 750 * time.Millisecond, 3 * time.Second},
		{"tolerance explicit", []Option{envMap(map[string]string{EnvHeartbeatInterval: "4s"}), WithTolerance(20 * time.Second)},
			20 * time.Second, 5 * time.Second, 20 * time.Second},
		{"tolerance file", []Option{WithConfigFile(writeSection(t, `"masterJobTolerance": 40000`))},
			40 * time.Second, 10 * time.Second, 40 * time.Second},
		{"margin and shutdown explicit", []Option{WithSafetyMargin(time.Second), WithShutdownTimeout(time.Minute)},
			24 * time.Second, time.Second, time.Minute},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			opts := append([]Option{envMap(nil)}, tc.opts...)
			cfg, err := LoadConfig(opts...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Tolerance != tc.tolerance || cfg.SafetyMargin != tc.margin || cfg.ShutdownTimeout != tc.stop {
				t.Errorf("Tolerance, SafetyMargin, ShutdownTimeout = %v, %v, %v; want %v, %v, %v",
					cfg.Tolerance, cfg.SafetyMargin, cfg.ShutdownTimeout, tc.tolerance, tc.margin, tc.stop)
			}
		})
	}
}

// TestConfigFloor: timings at MinTiming are accepted from every source,
// the seed's milliseconds stay what they were, and InitDelay, a delay rather
// than a rate, may be shorter (or zero).
func TestConfigFloor(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		opts []Option
		want Config
	}{
		{"options at the floor", []Option{WithInitDelay(time.Millisecond), WithCheckMasterInterval(MinTiming), WithHeartbeatInterval(MinTiming),
			WithTolerance(4 * MinTiming), WithSafetyMargin(MinTiming), WithShutdownTimeout(MinTiming)},
			Config{time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, DefaultMaxHeartbeatRetryCount,
				40 * time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond}},
		{"environment at the floor, bare", []Option{envMap(map[string]string{EnvInitDelay: "1", EnvCheckMasterInterval: "10",
			EnvHeartbeatInterval: "10", EnvTolerance: "40"})},
			Config{time.Millisecond, 10 * time.Millisecond, 10 * time.Millisecond, DefaultMaxHeartbeatRetryCount,
				40 * time.Millisecond, 10 * time.Millisecond, 40 * time.Millisecond}},
		{"the seed's file", []Option{WithConfigFile(writeSection(t,
			`"initDelay": 0, "checkMasterInterval": 20000, "heartbeatInterval": 5000, "masterJobTolerance": 15000`))},
			Config{0, 20 * time.Second, 5 * time.Second, DefaultMaxHeartbeatRetryCount,
				15 * time.Second, 3750 * time.Millisecond, 15 * time.Second}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cfg, err := LoadConfig(append([]Option{envMap(nil)}, tc.opts...)...)
			if err != nil {
				t.Fatal(err)
			}
			if cfg != tc.want {
				t.Errorf("config = %+v\nwant %+v", cfg, tc.want)
			}
		})
	}
}

// checkConfigError asserts that err wraps ErrInvalidConfig, joins n errors
// that each wrap it too, and contains every string in wants.
func checkConfigError(t *testing.T, err error, n int, wants ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("no error, want one containing %q", wants)
	}
	if !errors.Is(err, ErrInvalidConfig) {
		t.Errorf("error does not wrap ErrInvalidConfig: %v", err)
	}
	errs := []error{err}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		errs = j.Unwrap()
	}
	if len(errs) != n {
		t.Errorf("got %d errors, want %d:\n%v", len(errs), n, err)
	}
	for _, e := range errs {
		if !errors.Is(e, ErrInvalidConfig) {
			t.Errorf("joined error does not wrap ErrInvalidConfig: %v", e)
		}
	}
	for _, w := range wants {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not contain %q:\n%v", w, err)
		}
	}
}

// TestConfigErrors: every problem is reported with the setting's key, its
// value and its source, and wraps ErrInvalidConfig. In file, wants and env
// values, $FILE stands for the config file's path.
func TestConfigErrors(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		file string // whole config file; "" for none
		env  map[string]string
		opts []Option
		n    int // joined errors
		want []string
		is   error // also wrapped, if not nil
	}{
		// Relations.
		{
			name: "heartbeat from env not shorter than tolerance from file",
			file: `{"masterJobExecutor": {"masterJobTolerance": 24000}}`,
			env:  map[string]string{EnvHeartbeatInterval: "30s"},
			n:    1,
			want: []string{"masterjob: invalid configuration: heartbeatInterval 30s (environment MASTER_JOB_HEARTBEAT_INTERVAL) " +
				"must be shorter than masterJobTolerance 24s (config file $FILE (masterJobExecutor.masterJobTolerance))"},
		},
		{
			name: "heartbeat equal to tolerance",
			opts: []Option{WithHeartbeatInterval(10 * time.Second), WithTolerance(10 * time.Second)},
			n:    1,
			want: []string{"heartbeatInterval 10s (option WithHeartbeatInterval) must be shorter than masterJobTolerance 10s (option WithTolerance)"},
		},
		{
			name: "labeled option",
			file: `{"masterJobExecutor": {"masterJobTolerance": 24000}}`,
			opts: []Option{Labeled("flag --heartbeat-interval", WithHeartbeatInterval(30*time.Second))},
			n:    1,
			want: []string{"heartbeatInterval 30s (flag --heartbeat-interval)", "masterJobTolerance 24s (config file $FILE (masterJobExecutor.masterJobTolerance))"},
		},
		{
			name: "heartbeat outside the trust window with derived margin",
			opts: []Option{WithTolerance(10 * time.Second)},
			n:    1,
			want: []string{
				"heartbeatInterval 8s (default) must be shorter than the trust window 7.5s = " +
					"masterJobTolerance 10s (option WithTolerance) - safetyMargin 2.5s (default: masterJobTolerance / 4)",
				"demotes itself, before its next heartbeat",
			},
		},
		{
			name: "heartbeat outside the trust window with explicit margin",
			file: `{"masterJobExecutor": {"masterJobTolerance": "30s", "safetyMargin": 25000}}`,
			n:    1,
			want: []string{"heartbeatInterval 8s (default)", "trust window 5s", "masterJobTolerance 30s (config file $FILE (masterJobExecutor.masterJobTolerance))",
				"safetyMargin 25s (config file $FILE (masterJobExecutor.safetyMargin))"},
		},
		{
			name: "safety margin not shorter than tolerance",
			opts: []Option{Labeled("flag --safety-margin", WithSafetyMargin(24*time.Second))},
			n:    1,
			want: []string{"safetyMargin 24s (flag --safety-margin) must be shorter than masterJobTolerance 24s (default: 3 x heartbeatInterval)"},
		},

		// Signs.
		{
			name: "negative initDelay from env",
			env:  map[string]string{EnvInitDelay: "-1"},
			n:    1,
			want: []string{"initDelay -1ms (environment INIT_DELAY) must not be negative"},
		},
		{
			name: "negative checkMasterInterval from env",
			env:  map[string]string{EnvCheckMasterInterval: "-30s"},
			n:    1,
			want: []string{"checkMasterInterval -30s (environment CHECK_MASTER_INTERVAL) must not be negative"},
		},
		{
			name: "negative heartbeat from option",
			opts: []Option{WithHeartbeatInterval(-time.Second)},
			n:    1, // not also the tolerance derived from it
			want: []string{"heartbeatInterval -1s (option WithHeartbeatInterval) must not be negative"},
		},
		{
			name: "negative tolerance from file",
			file: `{"masterJobExecutor": {"masterJobTolerance": -5000}}`,
			n:    1,
			want: []string{"masterJobTolerance -5s (config file $FILE (masterJobExecutor.masterJobTolerance)) must not be negative"},
		},
		{
			name: "negative tolerance from env",
			env:  map[string]string{EnvTolerance: "-24s"},
			n:    1,
			want: []string{"masterJobTolerance -24s (environment MASTER_JOB_TOLERANCE) must not be negative"},
		},
		{
			name: "negative safety margin from file",
			file: `{"masterJobExecutor": {"safetyMargin": "-1s"}}`,
			n:    1,
			want: []string{"safetyMargin -1s (config file $FILE (masterJobExecutor.safetyMargin)) must not be negative"},
		},
		{
			name: "negative shutdown timeout from option",
			opts: []Option{WithShutdownTimeout(-time.Second)},
			n:    1,
			want: []string{"shutdownTimeout -1s (option WithShutdownTimeout) must not be negative"},
		},
		{
			name: "negative retry count from env",
			env:  map[string]string{EnvMaxHeartbeatRetryCount: "-1"},
			n:    1,
			want: []string{"maxHeartbeatRetryCount -1 (environment MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT) must not be negative"},
		},
		{
			name: "negative retry count from labeled option",
			opts: []Option{Labeled("flag --max-heartbeat-retry-count", WithMaxHeartbeatRetryCount(-2))},
			n:    1,
			want: []string{"maxHeartbeatRetryCount -2 (flag --max-heartbeat-retry-count) must not be negative"},
		},
		{
			name: "zero checkMasterInterval from file",
			file: `{"masterJobExecutor": {"checkMasterInterval": 0}}`,
			n:    1,
			want: []string{"checkMasterInterval 0s (config file $FILE (masterJobExecutor.checkMasterInterval)) must be positive"},
		},
		{
			name: "zero heartbeat from env",
			env:  map[string]string{EnvHeartbeatInterval: "0"},
			n:    1,
			want: []string{"heartbeatInterval 0s (environment MASTER_JOB_HEARTBEAT_INTERVAL) must be positive"},
		},
		{
			name: "zero safety margin",
			opts: []Option{WithSafetyMargin(0)},
			n:    1,
			want: []string{"safetyMargin 0s (option WithSafetyMargin) must be positive"},
		},
		{
			name: "zero shutdown timeout",
			opts: []Option{WithShutdownTimeout(0)},
			n:    1,
			want: []string{"shutdownTimeout 0s (option WithShutdownTimeout) must be positive"},
		},

		// The floor (MinTiming).
		{
			name: "bare number below the floor from env",
			env:  map[string]string{EnvHeartbeatInterval: "5"},
			n:    1, // not also the tolerance and margin derived from it
			want: []string{`heartbeatInterval 5ms (environment MASTER_JOB_HEARTBEAT_INTERVAL) is shorter than 10ms, the shortest timing accepted ` +
				`(a bare number is milliseconds: 5 is 5ms; write the unit, such as "5s")`},
		},
		{
			name: "bare number below the floor from file",
			file: `{"masterJobExecutor": {"checkMasterInterval": 2}}`,
			n:    1,
			want: []string{`checkMasterInterval 2ms (config file $FILE (masterJobExecutor.checkMasterInterval)) is shorter than 10ms, ` +
				`the shortest timing accepted (a bare number is milliseconds: 2 is 2ms; write the unit, such as "2s")`},
		},
		{
			name: "bare number in a string below the floor from file",
			file: `{"masterJobExecutor": {"masterJobTolerance": "7.5"}}`,
			n:    1,
			want: []string{`masterJobTolerance 7.5ms (config file $FILE (masterJobExecutor.masterJobTolerance)) is shorter than 10ms, ` +
				`the shortest timing accepted (a bare number is milliseconds: 7.5 is 7.5ms; write the unit, such as "7.5s")`},
		},
		{
			name: "a unit below the floor from env: no hint",
			env:  map[string]string{EnvCheckMasterInterval: "5ms"},
			n:    1,
			want: []string{`checkMasterInterval 5ms (environment CHECK_MASTER_INTERVAL) is shorter than 10ms, the shortest timing accepted`},
		},
		{
			name: "option below the floor",
			opts: []Option{WithHeartbeatInterval(time.Millisecond)},
			n:    1,
			want: []string{`heartbeatInterval 1ms (option WithHeartbeatInterval) is shorter than 10ms, the shortest timing accepted`},
		},
		{
			name: "labeled option below the floor",
			opts: []Option{Labeled("flag --safety-margin", WithSafetyMargin(9*time.Millisecond))},
			n:    1,
			want: []string{`safetyMargin 9ms (flag --safety-margin) is shorter than 10ms, the shortest timing accepted`},
		},
		{
			name: "shutdown timeout below the floor",
			opts: []Option{WithShutdownTimeout(time.Microsecond)},
			n:    1,
			want: []string{`shutdownTimeout 1µs (option WithShutdownTimeout) is shorter than 10ms`},
		},
		{
			name: "a derived safety margin below the floor",
			opts: []Option{WithHeartbeatInterval(10 * time.Millisecond)},
			n:    1,
			want: []string{`safetyMargin 7.5ms (default: masterJobTolerance / 4) is shorter than 10ms, the shortest timing accepted`},
		},
		{
			name: "the floor applies after precedence: a later source below it",
			file: `{"masterJobExecutor": {"heartbeatInterval": 5000}}`,
			env:  map[string]string{EnvHeartbeatInterval: "5"},
			n:    1,
			want: []string{`heartbeatInterval 5ms (environment MASTER_JOB_HEARTBEAT_INTERVAL) is shorter than 10ms`},
		},

		// Values that do not parse.
		{
			name: "env not a duration",
			env:  map[string]string{EnvHeartbeatInterval: "8 s"},
			n:    1, // not also the tolerance derived from it
			want: []string{`heartbeatInterval "8 s" (environment MASTER_JOB_HEARTBEAT_INTERVAL)`, "Go duration"},
		},
		{
			name: "env out of range",
			env:  map[string]string{EnvInitDelay: "99999999999999999999"},
			n:    1,
			want: []string{`initDelay "99999999999999999999" (environment INIT_DELAY): out of range`},
		},
		{
			name: "env not a decimal number",
			env:  map[string]string{EnvTolerance: "Inf"},
			n:    1,
			want: []string{`masterJobTolerance "Inf" (environment MASTER_JOB_TOLERANCE): want a number of milliseconds`},
		},
		{
			name: "file number out of range",
			file: `{"masterJobExecutor": {"shutdownTimeout": 1e300}}`,
			n:    1,
			want: []string{"shutdownTimeout 1e300 (config file $FILE (masterJobExecutor.shutdownTimeout)): out of range"},
		},
		{
			name: "bad env is reported even when an option overrides it",
			env:  map[string]string{EnvHeartbeatInterval: "soon"},
			opts: []Option{WithHeartbeatInterval(5 * time.Second)},
			n:    1,
			want: []string{`heartbeatInterval "soon" (environment MASTER_JOB_HEARTBEAT_INTERVAL)`},
		},
		{
			name: "file string not a duration",
			file: `{"masterJobExecutor": {"initDelay": "soon"}}`,
			n:    1,
			want: []string{`initDelay "soon" (config file $FILE (masterJobExecutor.initDelay))`},
		},
		{
			name: "file empty string",
			file: `{"masterJobExecutor": {"initDelay": ""}}`,
			n:    1,
			want: []string{`initDelay "" (config file $FILE (masterJobExecutor.initDelay)): empty`},
		},
		{
			name: "file boolean",
			file: `{"masterJobExecutor": {"heartbeatInterval": true}}`,
			n:    1,
			want: []string{`heartbeatInterval true (config file $FILE (masterJobExecutor.heartbeatInterval))`},
		},
		{
			name: "file object",
			file: `{"masterJobExecutor": {"masterJobTolerance": {"ms": 1}}}`,
			n:    1,
			want: []string{`masterJobTolerance {"ms": 1} (config file $FILE (masterJobExecutor.masterJobTolerance))`},
		},
		{
			name: "file fractional retry count",
			file: `{"masterJobExecutor": {"maxHeartbeatRetryCount": 2.5}}`,
			n:    1,
			want: []string{"maxHeartbeatRetryCount 2.5 (config file $FILE (masterJobExecutor.maxHeartbeatRetryCount)): want a whole number"},
		},
		{
			name: "file duration as retry count",
			file: `{"masterJobExecutor": {"maxHeartbeatRetryCount": "5s"}}`,
			n:    1,
			want: []string{`maxHeartbeatRetryCount "5s" (config file $FILE (masterJobExecutor.maxHeartbeatRetryCount)): want a whole number`},
		},
		{
			name: "env retry count not a number",
			env:  map[string]string{EnvMaxHeartbeatRetryCount: "three"},
			n:    1,
			want: []string{`maxHeartbeatRetryCount "three" (environment MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT): want a whole number`},
		},
		{
			name: "heartbeat too long to derive tolerance",
			env:  map[string]string{EnvHeartbeatInterval: "1000000h"},
			n:    1,
			want: []string{"heartbeatInterval 1000000h0m0s (environment MASTER_JOB_HEARTBEAT_INTERVAL) is too long to derive masterJobTolerance"},
		},

		// The file itself.
		{
			name: "unknown key",
			file: `{"masterJobExecutor": {"heartbeatIntervall": 5000, "initDelay": 2000}}`,
			n:    1,
			want: []string{`unknown key "heartbeatIntervall"`, "config file $FILE (named by option WithConfigFile)", "known keys: checkMasterInterval, heartbeatInterval"},
		},
		{
			name: "key misspelled in case",
			file: `{"masterJobExecutor": {"HeartbeatInterval": 5000}}`,
			n:    1,
			want: []string{`unknown key "HeartbeatInterval"`, "$FILE", `did you mean "heartbeatInterval"?`},
		},
		{
			name: "unknown key in a file named by MASTERJOB_CONFIG",
			file: `{"masterJobExecutor": {"tolerance": 5000}}`,
			env:  map[string]string{EnvConfigFile: "$FILE"},
			n:    1,
			want: []string{`unknown key "tolerance"`, "config file $FILE (named by environment MASTERJOB_CONFIG)"},
		},
		{
			name: "several problems at once",
			file: `{"masterJobExecutor": {"initDlay": 5000}}`,
			env:  map[string]string{EnvInitDelay: "-1", EnvCheckMasterInterval: "0", EnvMaxHeartbeatRetryCount: "x"},
			n:    4,
			want: []string{`unknown key "initDlay"`, "initDelay -1ms (environment INIT_DELAY)", "checkMasterInterval 0s (environment CHECK_MASTER_INTERVAL)",
				`maxHeartbeatRetryCount "x" (environment MASTER_JOB_MAX_HEARTBEAT_RETRY_COUNT)`},
		},
		{
			name: "bad JSON",
			file: "{\"masterJobExecutor\": {\n  \"initDelay\": 5000,\n}}",
			n:    1,
			want: []string{"config file $FILE (named by option WithConfigFile) is not valid JSON: line 3, column 1"},
		},
		{
			name: "empty file",
			file: " ",
			n:    1,
			want: []string{"config file $FILE (named by option WithConfigFile) is not valid JSON"},
		},
		{
			name: "file not an object",
			file: `[1, 2]`,
			n:    1,
			want: []string{"config file $FILE (named by option WithConfigFile) must hold a JSON object, not a JSON array"},
		},
		{
			name: "section not an object",
			file: `{"masterJobExecutor": [1]}`,
			n:    1,
			want: []string{`"masterJobExecutor" in config file $FILE (named by option WithConfigFile) must be a JSON object, not [1]`},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			path := ""
			opts := append([]Option(nil), tc.opts...)
			if tc.file != "" {
				path = writeFile(t, tc.file)
				if tc.env[EnvConfigFile] == "" {
					opts = append(opts, WithConfigFile(path))
				}
			}
			env := map[string]string{}
			for k, v := range tc.env {
				env[k] = strings.ReplaceAll(v, "$FILE", path)
			}
			opts = append(opts, envMap(env))
			want := make([]string, len(tc.want))
			for i, w := range tc.want {
				want[i] = strings.ReplaceAll(w, "$FILE", path)
			}
			cfg, err := LoadConfig(opts...)
			checkConfigError(t, err, tc.n, want...)
			if cfg != (Config{}) {
				t.Errorf("config returned with an error: %+v", cfg)
			}
		})
	}
}

// TestConfigMissingFile: a named file that does not exist is an error
// naming the path and what named it.
func TestConfigMissingFile(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "nope", "config.json")
	cases := []struct {
		name string
		opts []Option
		n    int
		want []string
	}{
		{"option", []Option{WithConfigFile(missing), envMap(nil)}, 1,
			[]string{"cannot read config file " + missing + " (named by option WithConfigFile)"}},
		{"labeled option", []Option{Labeled("flag --config", WithConfigFile(missing)), envMap(nil)}, 1,
			[]string{"cannot read config file " + missing + " (named by flag --config)"}},
		{"MASTERJOB_CONFIG", []Option{envMap(map[string]string{EnvConfigFile: missing})}, 1,
			[]string{"cannot read config file " + missing + " (named by environment MASTERJOB_CONFIG)"}},
		// Settings the file might have set are not checked; others are.
		{"with other problems", []Option{WithConfigFile(missing), WithTolerance(10 * time.Second),
			envMap(map[string]string{EnvInitDelay: "x", EnvCheckMasterInterval: "-1s"})}, 3,
			[]string{missing, `initDelay "x" (environment INIT_DELAY)`, "checkMasterInterval -1s (environment CHECK_MASTER_INTERVAL)"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := LoadConfig(tc.opts...)
			checkConfigError(t, err, tc.n, tc.want...)
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("error does not wrap fs.ErrNotExist: %v", err)
			}
		})
	}
}
