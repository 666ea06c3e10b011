package mysql

import (
	"errors"
	"strings"
	"testing"
	"time"

	mysqldrv "github.com/go-sql-driver/mysql"
	"github.com/masterjob/masterjob/storeurl"
)

func TestParseURL(t *testing.T) {
	for _, tc := range []struct {
		raw                   string
		net, addr, user, pass string
		db                    string
		params                map[string]string
		tls                   string
		prefix                string
		timeout, poll         time.Duration
		historyLimit          int
		migrate               bool
	}{
		{raw: "mysql://root@127.0.0.1:3306/test", net: "tcp", addr: "127.0.0.1:3306", user: "root", db: "test",
			prefix: DefaultTablePrefix, timeout: DefaultCallTimeout, poll: DefaultNotifyPoll, historyLimit: 1e4, migrate: true},
		{raw: "mariadb://app:s%40cr%2Ft:x@db.example:3307/jobs?prefix=mj_&call_timeout=2s&notify_poll=20&history_limit=500&migrate=false&tls=skip-verify&transaction_isolation=%27READ-COMMITTED%27",
			net: "tcp", addr: "db.example:3307", user: "app", pass: "s@cr/t:x", db: "jobs",
			params: map[string]string{"transaction_isolation": "'READ-COMMITTED'"}, tls: "skip-verify",
			prefix: "mj_", timeout: 2 * time.Second, poll: 20 * time.Millisecond, historyLimit: 500},
		{raw: "MySQL://u@/d?socket=/run/mysqld/mysqld.sock&masterjob_prefix=", net: "unix", addr: "/run/mysqld/mysqld.sock", user: "u", db: "d",
			prefix: "", timeout: DefaultCallTimeout, poll: DefaultNotifyPoll, historyLimit: 1e4, migrate: true},
		{raw: "mysql://u@[::1]/d", net: "tcp", addr: "[::1]:3306", user: "u", db: "d",
			prefix: DefaultTablePrefix, timeout: DefaultCallTimeout, poll: DefaultNotifyPoll, historyLimit: 1e4, migrate: true},
		{raw: "mysql:///d", net: "tcp", addr: "127.0.0.1:3306", db: "d",
			prefix: DefaultTablePrefix, timeout: DefaultCallTimeout, poll: DefaultNotifyPoll, historyLimit: 1e4, migrate: true},
	} {
		cfg, opts, err := ParseURL(tc.raw)
		if err != nil {
			t.Errorf("ParseURL(%q): %v", tc.raw, err)
			continue
		}
		if cfg.Net != tc.net || cfg.Addr != tc.addr || cfg.User != tc.user || cfg.Passwd != tc.pass || cfg.DBName != tc.db {
			t.Errorf("ParseURL(%q) = net %q addr %q user %q pass %q db %q", tc.raw, cfg.Net, cfg.Addr, cfg.User, cfg.Passwd, cfg.DBName)
		}
		if tc.tls != "" && cfg.TLSConfig != tc.tls {
			t.Errorf("ParseURL(%q): tls %q, want %q", tc.raw, cfg.TLSConfig, tc.tls)
		}
		for k, v := range tc.params {
			if cfg.Params[k] != v {
				t.Errorf("ParseURL(%q): driver parameter %s = %q, want %q", tc.raw, k, cfg.Params[k], v)
			}
		}
		c, err := newConfig(opts)
		if err != nil {
			t.Fatal(err)
		}
		if c.prefix != tc.prefix || c.callTimeout != tc.timeout || c.notifyPoll != tc.poll || c.historyLimit != tc.historyLimit || c.migrate != tc.migrate {
			t.Errorf("ParseURL(%q) options: prefix %q timeout %v poll %v history %d migrate %v", tc.raw, c.prefix, c.callTimeout, c.notifyPoll, c.historyLimit, c.migrate)
		}
	}
}

func TestParseURLErrors(t *testing.T) {
	for _, tc := range []struct{ raw, want string }{
		{"postgres://u:hunter2@h/d", `scheme "postgres" is not one of mysql, mariadb`},
		{"mysql://u:hunter2@h", "no database"},
		{"mysql://u:hunter2@h/d?prefix=Bad", `prefix="Bad" does not match`},
		{"mysql://u:hunter2@h/d?call_timeout=soon", "call_timeout: want a duration"},
		{"mysql://u:hunter2@h/d?masterjob_notify_poll=0", "masterjob_notify_poll"},
		{"mysql://u:hunter2@h/d?history_limit=0", "history_limit=\"0\" is not a whole number"},
		{"mysql://u:hunter2@h/d?migrate=maybe", `migrate="maybe" is not true or false`},
		{"mysql://u:hunter2@h/d?masterjob_schema=x", `unknown parameter "masterjob_schema"`},
		{"mysql://u:hunter2@h/d?password=hunter2", "a password parameter"},
		{"mysql://u:hunter2@h/d?prefix=a&prefix=b", "given 2 times"},
		{"mysql://u:hunter2@h:99999/d", "port"},
		{"mysql://u:hunter2@h/d?socket=/s", "give one"},
		{"mysql://u:hunter2@h/d?tls=nonsense", "tls"},
		{"mysql://u:hunter2@h/d?timeout=nonsense", "timeout"},
		{"mysql://u:hunter2@h\x7f/d", "not a URL of the form"},
		{"mysql://u:hun/ter2@h/d", "not a URL of the form"},
		{"mysql:u:hunter2@h/d", "want mysql://"},
	} {
		err := CheckURL(tc.raw)
		if !errors.Is(err, ErrInvalidURL) || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("CheckURL(%q) = %v, want ErrInvalidURL containing %q", tc.raw, err, tc.want)
		}
		if err != nil && (strings.Contains(err.Error(), "hunter2") || strings.Contains(err.Error(), "hun")) {
			t.Errorf("CheckURL(%q) shows the password: %v", tc.raw, err)
		}
	}
}

func TestRedactURL(t *testing.T) {
	for raw, want := range map[string]string{
		"mysql://u:hunter2@h/d":             "mysql://u:xxxxx@h/d",
		"mysql://u@h/d":                     "mysql://u@h/d",
		"mysql://u@h/d?password=hunter2":    "mysql://u@h/d?password=xxxxx",
		"mysql://u:hun@ter2@h\x7f/d":        "mysql://xxxxx@h\x7f/d",
		"mysql://u:hun/ter2@h/d":            "mysql://xxxxx@h/d",
		"mysql:u:hunter2@h/d":               "mysql:xxxxx@h/d",
		"mysql://u@h/d?SSLPassword=hunter2": "mysql://u@h/d?SSLPassword=xxxxx",
		"mariadb://u:p%2Fq@h:3306/d?tls=1":  "mariadb://u:xxxxx@h:3306/d?tls=1",
	} {
		if got := RedactURL(raw); got != want {
			t.Errorf("RedactURL(%q) = %q, want %q", raw, got, want)
		}
	}
}

// TestOpenURL opens the test server by URL, and fails without showing the
// password when it is wrong.
func TestOpenURL(t *testing.T) {
	adminDB(t)
	cfg, err := mysqldrv.ParseDSN(testDSN())
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Net != "tcp" {
		t.Skipf("the test server is not on TCP (%s)", cfg.Net)
	}
	prefix := newPrefix(t)
	raw := "mysql://" + cfg.User + "@" + cfg.Addr + "/" + cfg.DBName + "?prefix=" + prefix + "&call_timeout=3s"
	// Marked WithoutMigrate (a runner's last will), the URL opens nothing
	// that is not there and creates no table.
	u, err := storeurl.Parse(raw)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := u.WithoutMigrate().Open(t.Context()); err == nil {
		st.Close()
		t.Error("opened WithoutMigrate before the tables existed")
	}
	var tables int
	if err := adminDB(t).QueryRowContext(t.Context(), "SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE() AND table_name LIKE ?",
		strings.ReplaceAll(prefix, "_", `\_`)+"%").Scan(&tables); err != nil || tables != 0 {
		t.Errorf("tables of prefix %s after an Open WithoutMigrate: %d (%v), want none", prefix, tables, err)
	}
	st, err := OpenURL(t.Context(), raw)
	if err != nil {
		t.Fatalf("OpenURL(%q): %v", raw, err)
	}
	defer st.Close()
	s := st.(*Store)
	if s.cfg.prefix != prefix || s.cfg.callTimeout != 3*time.Second {
		t.Errorf("OpenURL options: prefix %q timeout %v", s.cfg.prefix, s.cfg.callTimeout)
	}
	if st, err := s.Acquire(t.Context(), holderA, []string{"URL"}, time.Minute); err != nil || !st[0].Acquired {
		t.Fatalf("Acquire: %v %+v", err, st)
	}
	bad := "mysql://" + cfg.User + ":wrong-hunter2@" + cfg.Addr + "/" + cfg.DBName + "?prefix=" + prefix
	_, err = OpenURL(t.Context(), bad)
	if err == nil || strings.Contains(err.Error(), "hunter2") || !strings.Contains(err.Error(), "xxxxx") {
		t.Errorf("OpenURL with a wrong password: %v, want an error showing the URL redacted", err)
	}
}
