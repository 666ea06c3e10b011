package etcd_test

import (
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/masterjob/masterjob/store/etcd"
	"github.com/masterjob/masterjob/storeurl"
)

func TestParseURL(t *testing.T) {
	env := map[string]string{}
	lookup := func(k string) (string, bool) { v, ok := env[k]; return v, ok }
	c, err := etcd.ParseURL("etcd://10.0.0.1:2379,10.0.0.2:2379/?prefix=app/&dial_timeout=2s&history_limit=50", lookup)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Endpoints, []string{"10.0.0.1:2379", "10.0.0.2:2379"}) || c.Prefix != "app/" ||
		c.DialTimeout != 2*time.Second || c.HistoryLimit != 50 || c.TLS {
		t.Errorf("parsed %+v", c)
	}
	c, err = etcd.ParseURL("etcd://h:2379", lookup)
	if err != nil || c.Prefix != etcd.DefaultPrefix || c.DialTimeout != etcd.DefaultDialTimeout {
		t.Errorf("defaults: %+v %v", c, err)
	}
	c, err = etcd.ParseURL("etcds://alice:p%40ss@h:2379?cacert=/ca.pem&server_name=etcd.local", lookup)
	if err != nil || !c.TLS || c.Username != "alice" || c.Password != "p@ss" || c.CACert != "/ca.pem" || c.ServerName != "etcd.local" {
		t.Errorf("TLS and user info: %+v %v", c, err)
	}
	c, err = etcd.ParseURL("etcd://h:2379?cert=/c.pem&key=/k.pem", lookup)
	if err != nil || !c.TLS {
		t.Errorf("a client certificate implies TLS: %+v %v", c, err)
	}
	// The environment fills what the URL leaves unset, not more.
	env[etcd.EnvUser] = "bob:envpw"
	env[etcd.EnvCACert] = "/env-ca.pem"
	c, err = etcd.ParseURL("etcd://h:2379", lookup)
	if err != nil || c.Username != "bob" || c.Password != "envpw" || c.CACert != "/env-ca.pem" || !c.TLS {
		t.Errorf("from the environment: %+v %v", c, err)
	}
	c, err = etcd.ParseURL("etcd://carol:urlpw@h:2379", lookup)
	if err != nil || c.Username != "carol" || c.Password != "urlpw" {
		t.Errorf("the URL wins: %+v %v", c, err)
	}
	delete(env, etcd.EnvUser)
	env[etcd.EnvPassword] = "pw2"
	c, _ = etcd.ParseURL("etcd://dave@h:2379", lookup)
	if c.Password != "pw2" {
		t.Errorf("ETCDCTL_PASSWORD not used: %+v", c)
	}

	for _, bad := range []struct{ url, want string }{
		{"etcd://", "no host"},
		{"etcd://h", "HOST:PORT"},
		{"etcd://h:0", "port"},
		{"etcd://h:2379/app", "path"},
		{"etcd://h:2379?bogus=1", `unknown parameter "bogus"`},
		{"etcd://h:2379?tls=maybe", "tls"},
		{"etcd://h:2379?dial_timeout=-1s", "dial_timeout"},
		{"etcd://h:2379?history_limit=0", "history_limit"},
		{"etcd://h:2379?cert=/c.pem", "both cert and key"},
		{"etcd://u:hunter2@h:2379?bogus=1", "unknown parameter"},
		{"etcd://h:2379?password=hunter2&bogus=1", "unknown parameter"},
	} {
		_, err := etcd.ParseURL(bad.url, nil)
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("ParseURL(%q) = %v, want an error about %q", bad.url, err, bad.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("ParseURL(%q): the error shows the password: %v", bad.url, err)
		}
		// Through storeurl: ErrInvalidURL, and no password either.
		_, err = storeurl.Parse(bad.url)
		if !errors.Is(err, storeurl.ErrInvalidURL) || strings.Contains(err.Error(), "hunter2") {
			t.Errorf("storeurl.Parse(%q) = %v, want ErrInvalidURL without the password", bad.url, err)
		}
	}
}

func TestURLStringRedacted(t *testing.T) {
	u, err := storeurl.Parse("etcd://root:hunter2@a:2379,b:2379/?prefix=x/&password=hunter3")
	if err != nil {
		t.Fatal(err)
	}
	s := u.String()
	if strings.Contains(s, "hunter") || !strings.Contains(s, "root:xxxxx@a:2379,b:2379") {
		t.Errorf("String() = %q, want the passwords hidden and the hosts kept", s)
	}
}
