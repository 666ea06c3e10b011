package storeurl

import (
	"net/url"
	"strings"
)

// redacted replaces a password (or a part of a string that may hold one).
const redacted = "xxxxx"

// Redact returns s, a store URL or a PostgreSQL connection string, with
// every password it may hold replaced by "xxxxx", for messages and logs:
//
//   - the password of a URL's user info (postgres://user:PW@host/db) and of
//     the opaque form (postgres:user:PW@host/db: all before the last "@"),
//   - the value of every query parameter whose name contains "password",
//     in any case (password=, sslpassword=), and every value that
//     contains "pass" (and a parameter without "=" right after one: in
//     "password=p&ss" the "&" was likely the password's),
//   - the value of every keyword/value setting whose keyword contains
//     "password" (host=h password=PW, password='P W'), and every value
//     that contains "pass", with all that follows it (in "user=
//     password=PW", libpq reads the user name "password=PW").
//
// What cannot be parsed with certainty is hidden whole: a URL that does
// not parse, once it holds an "@" or "pass", keeps only its scheme; a
// query or a keyword/value string that does not parse, once it holds
// "pass", is hidden; so is a URL's fragment that holds "pass" or follows
// a password parameter. Text without a password is returned unchanged.
// FuzzRedact checks that no password in any of these forms is printed.
func Redact(s string) string {
	if scheme, _, ok := splitScheme(s); ok {
		return redactURL(s, scheme)
	}
	if strings.Contains(s, "=") {
		return redactKeywordValue(s)
	}
	return s
}

// redact is Redact, for the package's messages.
func redact(s string) string { return Redact(s) }

// mayHoldPassword reports whether s has what could introduce a password.
func mayHoldPassword(s string) bool {
	return strings.Contains(strings.ToLower(s), "pass")
}

// isPasswordKey reports whether a parameter or keyword names a password.
func isPasswordKey(k string) bool {
	return strings.Contains(strings.ToLower(k), "password")
}

func redactURL(s, scheme string) string {
	spelled, rest := s[:len(scheme)], s[len(scheme)+1:] // the input's spelling of the scheme
	// The last "@" ends the user info as the user meant it, whatever
	// characters the password holds: when a ":" precedes it, everything
	// from the scheme to it is hidden unless the URL parses with exactly
	// that "@" ending its user info.
	at := strings.LastIndexByte(rest, '@')
	userPass := at >= 0 && strings.Contains(rest[:at], ":")
	if !strings.HasPrefix(rest, "//") {
		// scheme:PATH (sqlite) or the opaque scheme:user:password@host.
		if userPass {
			return spelled + ":" + redacted + redactOpaqueTail(rest[at:])
		}
		return spelled + ":" + redactOpaqueTail(rest)
	}
	u, err := url.Parse(s)
	if err == nil && userPass && (u.User == nil || userInfoEnd(rest) != at) {
		// The password holds a "/", "?", "#" or "@": url.Parse sees another
		// structure than the user typed. Parse what follows it instead.
		u, err = url.Parse(spelled + "://" + redacted + rest[at:])
	}
	if err != nil {
		if at >= 0 || mayHoldPassword(rest) {
			return spelled + "://" + redacted
		}
		return s
	}
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), redacted)
	}
	hadPassword := false
	if u.RawQuery != "" {
		u.RawQuery, hadPassword = redactQuery(u.RawQuery)
	}
	// "password=p#ss": the "#" was likely the password's.
	if u.Fragment != "" && hadPassword || mayHoldPassword(u.Fragment) {
		u.Fragment, u.RawFragment = redacted, ""
	}
	return u.String()
}

// userInfoEnd returns the index in rest ("//authority/path?query#frag")
// of the "@" that ends the user info as url.Parse finds it, or -1.
func userInfoEnd(rest string) int {
	auth, _, _ := strings.Cut(rest, "#")
	auth, _, _ = strings.Cut(auth, "?")
	auth = auth[2:]
	if i := strings.IndexByte(auth, '/'); i >= 0 {
		auth = auth[:i]
	}
	if i := strings.LastIndexByte(auth, '@'); i >= 0 {
		return 2 + i
	}
	return -1
}

// redactOpaqueTail redacts the query of the text after an opaque URL's
// scheme (or after its user info).
func redactOpaqueTail(tail string) string {
	body, query, hasQuery := strings.Cut(tail, "?")
	if !hasQuery {
		return body
	}
	query, _ = redactQuery(query)
	return body + "?" + query
}

// redactQuery replaces the values of the password parameters of a raw
// query, keeping the rest as it was written, and reports whether it
// replaced any. A query that does not parse and may hold a password is
// hidden whole.
func redactQuery(q string) (string, bool) {
	if _, err := url.ParseQuery(q); err != nil {
		if mayHoldPassword(q) {
			return redacted, true
		}
		return q, false
	}
	pairs := strings.Split(q, "&")
	afterPassword, any := false, false
	for i, p := range pairs {
		if afterPassword && !strings.Contains(p, "=") {
			// "password=p&ss": the "&" was likely the password's.
			pairs[i] = redacted
			continue
		}
		afterPassword = false
		k, v, hasValue := strings.Cut(p, "=")
		key, kerr := url.QueryUnescape(k)
		value, verr := url.QueryUnescape(v)
		if kerr != nil || verr != nil { // ParseQuery accepted them: cannot happen
			return redacted, true
		}
		// A value that itself reads "password=..." is hidden too.
		if hasValue && (isPasswordKey(key) || mayHoldPassword(value)) {
			pairs[i] = k + "=" + redacted
			afterPassword, any = true, true
		}
	}
	return strings.Join(pairs, "&"), any
}

// redactKeywordValue redacts a libpq keyword/value connection string
// ("host=h password='p w'"), parsed as libpq parses it: keyword, optional
// blanks, "=", optional blanks, a value either in single quotes or up to
// the next blank, with backslash escapes in both. A string that does not
// parse and may hold a password is hidden whole.
func redactKeywordValue(s string) string {
	var b strings.Builder
	i := 0
	isSpace := func(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' }
	fail := func() string {
		if mayHoldPassword(s) {
			return redacted
		}
		return s
	}
	for {
		start := i
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) {
			b.WriteString(s[start:])
			return b.String()
		}
		for i < len(s) && s[i] != '=' && !isSpace(s[i]) {
			i++
		}
		key := s[start:i]
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		if i == len(s) || s[i] != '=' {
			return fail()
		}
		i++
		for i < len(s) && isSpace(s[i]) {
			i++
		}
		valStart := i
		if i < len(s) && s[i] == '\'' {
			i++
			closed := false
			for i < len(s) {
				if s[i] == '\\' {
					i += 2
					continue
				}
				if s[i] == '\'' {
					closed = true
					i++
					break
				}
				i++
			}
			if !closed || i > len(s) {
				return fail()
			}
		} else {
			for i < len(s) && !isSpace(s[i]) {
				if s[i] == '\\' {
					i++
				}
				i++
			}
			if i > len(s) {
				return fail()
			}
		}
		b.WriteString(s[start:valStart])
		switch {
		case isPasswordKey(key):
			b.WriteString(redacted)
		case mayHoldPassword(s[valStart:i]):
			// A value that itself reads "password=..." (as "user=
			// password=p" parses): what follows may be the password's
			// too. Hide it all.
			b.WriteString(redacted)
			return b.String()
		default:
			b.WriteString(s[valStart:i])
		}
	}
}
