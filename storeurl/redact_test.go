package storeurl

import (
	"net/url"
	"strconv"
	"strings"
	"testing"
)

// Every form a connection string can carry a password in, as a user may
// type it: the password must not be printed, by Redact, by URL.String or
// in Parse's errors.
func TestRedactForms(t *testing.T) {
	for _, tt := range []struct {
		raw, want string
	}{
		{"postgres://u:hunter2@h/db", "postgres://u:xxxxx@h/db"},
		{"postgres://:hunter2@h/db", "postgres://:xxxxx@h/db"},
		{"postgres://u@h/db?password=hunter2&sslmode=disable", "postgres://u@h/db?password=xxxxx&sslmode=disable"},
		{"postgres://u@h/db?sslpassword=hunter2", "postgres://u@h/db?sslpassword=xxxxx"},
		{"postgres://u@h/db?PassWord=hunter2", "postgres://u@h/db?PassWord=xxxxx"},
		{"postgres://u@h/db?password=a&password=hunter2", "postgres://u@h/db?password=xxxxx&password=xxxxx"},
		{"postgres://u@h/db?password=hunter2;x", "postgres://u@h/db?xxxxx"},
		{"postgres://u:hunter2@h:bad/db", "postgres://xxxxx"},
		{"postgres://h:bad/db?password=hunter2", "postgres://xxxxx"},
		{"postgres:u:hunter2@h/db", "postgres:xxxxx@h/db"},
		{"postgresql:u:hunter2@h/db?sslmode=disable", "postgresql:xxxxx@h/db?sslmode=disable"},
		{"postgres:u:hunter2@h/db?password=hunter2", "postgres:xxxxx@h/db?password=xxxxx"},
		{"sqlite:x.db?password=hunter2", "sqlite:x.db?password=xxxxx"},
		{"host=h user=u password=hunter2 dbname=d", "host=h user=u password=xxxxx dbname=d"},
		{"host=h password = hunter2", "host=h password = xxxxx"},
		{"host=h password='hun ter2' dbname=d", "host=h password=xxxxx dbname=d"},
		{`host=h password='it\'s hunter2'`, "host=h password=xxxxx"},
		{`host=h password=hun\ ter2 x=y`, "host=h password=xxxxx x=y"},
		{"host=h sslpassword=hunter2", "host=h sslpassword=xxxxx"},
		{"host=h password='hunter2", "xxxxx"},
		{"host=h password", "xxxxx"},
		// No password: unchanged.
		{"sqlite:masterjob.db", "sqlite:masterjob.db"},
		{"postgres://u@h:5432/db?sslmode=disable", "postgres://u@h:5432/db?sslmode=disable"},
		{"host=h user=u", "host=h user=u"},
		{"masterjob.db", "masterjob.db"},
	} {
		if got := Redact(tt.raw); got != tt.want {
			t.Errorf("Redact(%q) = %q, want %q", tt.raw, got, tt.want)
		}
		if u, err := Parse(tt.raw); err != nil {
			if strings.Contains(err.Error(), "hunter") || strings.Contains(err.Error(), "ter2") {
				t.Errorf("Parse(%q) error shows the password: %v", tt.raw, err)
			}
		} else if s := u.String(); strings.Contains(s, "hunter") || strings.Contains(s, "ter2") {
			t.Errorf("Parse(%q).String() = %q shows the password", tt.raw, s)
		}
	}
}

// dsnForm builds a connection string holding pw in one of the places a
// password goes. escape says whether pw (and, in keyword/value strings,
// every value) is encoded as the form wants (percent-encoding, libpq
// quoting) or inserted as the user typed it.
func dsnForm(form int, user, pw, host string, escape bool) string {
	enc := func(s string, f func(string) string) string {
		if escape {
			return f(s)
		}
		return s
	}
	userinfo := func() string {
		if escape {
			return url.UserPassword(user, pw).String()
		}
		return user + ":" + pw
	}
	switch form % 8 {
	case 0:
		return "postgres://" + userinfo() + "@" + host + "/db?sslmode=disable"
	case 1:
		return "postgresql://" + user + "@" + host + "/db?password=" + enc(pw, url.QueryEscape)
	case 2:
		return "postgres://" + host + "/db?sslmode=require&sslpassword=" + enc(pw, url.QueryEscape) + "&x=y"
	case 3:
		return "host=" + enc(host, libpqQuote) + " user=" + enc(user, libpqQuote) + " password=" + enc(pw, libpqQuote) + " dbname=db"
	case 4:
		return "sslpassword=" + enc(pw, libpqQuote) + " host=" + enc(host, libpqQuote)
	case 5:
		return "postgres:" + userinfo() + "@" + host + "/db"
	case 6:
		return "sqlite:x.db?password=" + enc(pw, url.QueryEscape)
	default:
		return "postgres://" + userinfo() + "@" + host + ":notaport/db"
	}
}

// libpqQuote quotes s as a keyword/value connection string value.
func libpqQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// FuzzRedact checks that no connection string holding a password prints
// it: not Redact, not URL.String, not Parse's error. With the password
// encoded as its form wants, the redacted text does not depend on the
// password at all; typed raw (which can change the string's structure),
// the password does not appear in it.
func FuzzRedact(f *testing.F) {
	for i := range 8 {
		f.Add(i, "user", "hunter2", "db.example", true)
		f.Add(i, "u", "p@ss/w?rd#x y'z\\", "h", false)
		f.Add(i, "", "s3cr3t=", "[::1]:5432", true)
	}
	f.Fuzz(func(t *testing.T, form int, user, pw, host string, escape bool) {
		if form < 0 {
			form = -form
		}
		raw := dsnForm(form, user, pw, host, escape)
		outputs := []string{Redact(raw)}
		if u, err := Parse(raw); err != nil {
			outputs = append(outputs, err.Error())
		} else {
			outputs = append(outputs, u.String())
		}
		// A password that is also part of the rest of the string, or of the
		// string with "xxxxx" in its place, as is or quoted by %q (or too
		// short to tell apart), cannot be checked by looking for it.
		// Blanks around a password typed raw are not part of it.
		secret := pw
		if !escape && (form%8 == 1 || form%8 == 2 || form%8 == 6) {
			// Typed raw into a query, a password ends at the first "&"
			// (the next parameter) or "#" (the fragment): only what comes
			// before is the parameter's value.
			if i := strings.IndexAny(secret, "&#"); i >= 0 {
				secret = secret[:i]
			}
		}
		secret = strings.TrimSpace(secret)
		explained := false
		for _, s := range []string{dsnForm(form, user, "\x00", host, escape), dsnForm(form, user, "xxxxx", host, false)} {
			explained = explained || strings.Contains(s, secret) || strings.Contains(strconv.Quote(s), secret)
		}
		if len(secret) >= 4 && !explained {
			for _, out := range outputs {
				// What touches the marker is not the password: "x&00"
				// in "password=xxxxx&00", where "&00" is a parameter.
				if strings.Contains(strings.ReplaceAll(out, "xxxxx", "\x01"), secret) {
					t.Fatalf("form %d: %q printed as %q: the password %q shows", form%8, raw, out, pw)
				}
			}
		}
		if escape && pw != "" {
			other := dsnForm(form, user, "other-password", host, escape)
			if got, want := Redact(raw), Redact(other); got != want {
				t.Fatalf("form %d: Redact depends on the password: %q -> %q, but %q -> %q", form%8, raw, got, other, want)
			}
		}
	})
}
