package controlapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/masterjob/masterjob/store"
)

// Limits on requests.
const (
	// DefaultMaxBodyBytes caps request bodies unless WithMaxBodyBytes says
	// otherwise; a longer body gets 413.
	DefaultMaxBodyBytes = 64 << 10
	// MaxReasonLen is the longest reason, in bytes, a request may give.
	MaxReasonLen = 1024
	// maxListNames bounds the lockName parameters of one list request.
	maxListNames = 1000
	// maxEchoLen bounds what an error message quotes of the request.
	maxEchoLen = 64
)

// Field names, as they appear in requests and in Error.Field.
const (
	fieldLockName = "lockName"
	fieldReason   = "reason"
	fieldLimit    = "limit"
	fieldBefore   = "before"
	fieldTo       = "to"
	fieldAfter    = "after"
	fieldMatch    = "match"
	fieldState    = "state"
	fieldInstance = "instance"
)

// requestError is a request the handler refuses: its status and the body
// of the response.
type requestError struct {
	status int
	Error
}

func badRequest(field, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, Error: Error{Error: fmt.Sprintf(format, args...), Field: field}}
}

// echo quotes s for an error message, shortened.
func echo(s string) string {
	if len(s) > maxEchoLen {
		s = strings.ToValidUTF8(s[:maxEchoLen], "") + "..."
	}
	return strconv.Quote(s)
}

// decodeControlRequest parses the body of a disable or enable request:
// exactly one JSON object whose members are lockName (a string, required)
// and reason (a string, optional), each at most once, spelled exactly so,
// and nothing after it. Every refusal names the field at fault when there
// is one.
func decodeControlRequest(body []byte) (ControlRequest, *requestError) {
	var req ControlRequest
	fields, rerr := decodeObject(body, fieldLockName, fieldReason)
	if rerr != nil {
		return req, rerr
	}
	req.LockName, req.Reason = fields[fieldLockName], fields[fieldReason]
	if rerr := checkLockName(req.LockName); rerr != nil {
		return req, rerr
	}
	if rerr := checkReason(req.Reason); rerr != nil {
		return req, rerr
	}
	return req, nil
}

// decodeHandoffRequest parses the body of a hand-off request as
// decodeControlRequest does, with the fields lockName (required), to and
// reason (optional).
func decodeHandoffRequest(body []byte) (HandoffRequest, *requestError) {
	var req HandoffRequest
	fields, rerr := decodeObject(body, fieldLockName, fieldTo, fieldReason)
	if rerr != nil {
		return req, rerr
	}
	req.LockName, req.To, req.Reason = fields[fieldLockName], fields[fieldTo], fields[fieldReason]
	if rerr := checkLockName(req.LockName); rerr != nil {
		return req, rerr
	}
	if _, ok := fields[fieldTo]; ok {
		if rerr := checkInstanceID(fieldTo, req.To); rerr != nil {
			return req, rerr
		}
	}
	if rerr := checkReason(req.Reason); rerr != nil {
		return req, rerr
	}
	return req, nil
}

// decodeObject parses body as exactly one JSON object whose members are
// among names (the first required), each a string given at most once,
// spelled exactly so, and nothing after it.
func decodeObject(body []byte, names ...string) (map[string]string, *requestError) {
	if !utf8.Valid(body) {
		return nil, badRequest("", "request body is not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.UseNumber()
	tok, err := dec.Token()
	if errors.Is(err, io.EOF) {
		return nil, badRequest(names[0], `empty request body: want a JSON object such as {"lockName": "JOB-SCHEDULER"}`)
	}
	if err != nil {
		return nil, malformed(err)
	}
	if tok != json.Delim('{') {
		return nil, badRequest("", "request body is a JSON %s, want an object", kindOf(tok))
	}
	fields := map[string]string{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, malformed(err)
		}
		key, _ := tok.(string) // object keys are strings
		if !slices.Contains(names, key) {
			return nil, badRequest(truncate(key), "unknown field %s: the fields are %s", echo(key), fieldList(names))
		}
		if _, seen := fields[key]; seen {
			return nil, badRequest(key, "field %s given twice", key)
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, malformed(err)
		}
		s, ok := tok.(string)
		if !ok {
			return nil, badRequest(key, "field %s is a JSON %s, want a string", key, kindOf(tok))
		}
		fields[key] = s
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return nil, malformed(err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, badRequest("", "unexpected data after the JSON object")
	}
	if _, ok := fields[names[0]]; !ok {
		return nil, badRequest(names[0], "missing field %s", names[0])
	}
	return fields, nil
}

// fieldList writes names as "a and b" or "a, b and c".
func fieldList(names []string) string {
	if len(names) == 1 {
		return names[0]
	}
	return strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
}

// MaxInstanceIDLen is the longest instance id a request may name.
const MaxInstanceIDLen = 200

// checkInstanceID refuses an empty or over-long instance id and one with
// characters that are not printable.
func checkInstanceID(field, id string) *requestError {
	switch {
	case id == "":
		return badRequest(field, "%s is empty: name an instance id, or leave the field out", field)
	case len(id) > MaxInstanceIDLen:
		return badRequest(field, "%s is %d bytes long, longer than %d", field, len(id), MaxInstanceIDLen)
	case !utf8.ValidString(id):
		return badRequest(field, "%s is not valid UTF-8", field)
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.Is(unicode.Cf, r) {
			return badRequest(field, "%s contains the character %U, which is not printable", field, r)
		}
	}
	return nil
}

func truncate(s string) string {
	if len(s) > maxEchoLen {
		return strings.ToValidUTF8(s[:maxEchoLen], "")
	}
	return s
}

// malformed describes a JSON syntax error without echoing the body.
func malformed(err error) *requestError {
	var syn *json.SyntaxError
	if errors.As(err, &syn) {
		return badRequest("", "malformed JSON at byte %d: %s", syn.Offset, syn.Error())
	}
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		return badRequest("", "malformed JSON: the body ends early")
	}
	return badRequest("", "malformed JSON: %s", err.Error())
}

// kindOf names the JSON type of a token.
func kindOf(tok json.Token) string {
	switch v := tok.(type) {
	case json.Delim:
		if v == '[' {
			return "array"
		}
		return "object"
	case bool:
		return "boolean"
	case json.Number, float64:
		return "number"
	case string:
		return "string"
	case nil:
		return "null"
	}
	return "value"
}

// checkLockName refuses a name the store would refuse.
func checkLockName(name string) *requestError {
	if err := store.ValidateLockName(name); err != nil {
		return badRequest(fieldLockName, "invalid lockName: %s", strings.TrimPrefix(err.Error(), "store: "))
	}
	return nil
}

// checkReason refuses an over-long reason and control characters other
// than tab and line breaks (the stores cannot all hold NUL).
func checkReason(reason string) *requestError {
	if len(reason) > MaxReasonLen {
		return badRequest(fieldReason, "reason is %d bytes long, longer than %d", len(reason), MaxReasonLen)
	}
	for _, r := range reason {
		if unicode.IsControl(r) && r != '\t' && r != '\n' && r != '\r' {
			return badRequest(fieldReason, "reason contains the control character %U", r)
		}
	}
	return nil
}

// checkContentType accepts application/json (or a +json type) with no
// charset or UTF-8.
func checkContentType(header string) *requestError {
	unsupported := func(msg string) *requestError {
		return &requestError{status: http.StatusUnsupportedMediaType, Error: Error{Error: msg}}
	}
	if header == "" {
		return unsupported("missing Content-Type: send the body as application/json")
	}
	mt, params, err := mime.ParseMediaType(header)
	if err != nil {
		return unsupported("malformed Content-Type: send the body as application/json")
	}
	if mt != "application/json" && !(strings.HasPrefix(mt, "application/") && strings.HasSuffix(mt, "+json")) {
		return unsupported("Content-Type " + echo(mt) + " is not supported: send the body as application/json")
	}
	if cs, ok := params["charset"]; ok && !strings.EqualFold(cs, "utf-8") {
		return unsupported("charset " + echo(cs) + " is not supported: send UTF-8")
	}
	return nil
}

// parseQuery parses a raw query string, allowing only the named parameters
// and each at most once unless repeatable.
func parseQuery(raw string, allowed map[string]bool) (url.Values, *requestError) {
	q, err := url.ParseQuery(raw)
	if err != nil {
		return nil, badRequest("", "malformed query string")
	}
	for k, vs := range q {
		repeatable, ok := allowed[k]
		if !ok {
			return nil, badRequest(truncate(k), "unknown query parameter %s", echo(k))
		}
		if len(vs) > 1 && !repeatable {
			return nil, badRequest(k, "query parameter %s given %d times", k, len(vs))
		}
	}
	return q, nil
}

// listQuery is what GET /api/mastercontrols asks for.
type listQuery struct {
	names []string // lockName parameters: only those locks
	// Filters (see LockFilter) and the page.
	filter LockFilter
	limit  int    // 0: every matching lock
	after  string // the page begins after this lock name
}

// MaxListLimit is the largest page of locks GET /api/mastercontrols
// returns (its limit parameter).
const MaxListLimit = 10000

// parseListQuery parses the query of GET /api/mastercontrols: lockName,
// repeatable, to list only those locks; the filters match, state and
// instance; limit and after for a page.
func parseListQuery(raw string) (listQuery, *requestError) {
	var lq listQuery
	q, rerr := parseQuery(raw, map[string]bool{fieldLockName: true, fieldLimit: false, fieldAfter: false,
		fieldMatch: false, fieldState: false, fieldInstance: false})
	if rerr != nil {
		return lq, rerr
	}
	names := q[fieldLockName]
	if len(names) > maxListNames {
		return lq, badRequest(fieldLockName, "%d lockName parameters, at most %d", len(names), maxListNames)
	}
	for _, n := range names {
		if rerr := checkLockName(n); rerr != nil {
			return lq, rerr
		}
	}
	lq.names = names
	if q.Has(fieldLimit) {
		n, err := strconv.Atoi(q.Get(fieldLimit))
		if err != nil || n < 1 || n > MaxListLimit {
			return lq, badRequest(fieldLimit, "limit %s: want a whole number from 1 to %d", echo(q.Get(fieldLimit)), MaxListLimit)
		}
		lq.limit = n
	}
	if q.Has(fieldAfter) {
		lq.after = q.Get(fieldAfter)
		if rerr := checkLockName(lq.after); rerr != nil {
			rerr.Field, rerr.Error.Error = fieldAfter, "after: want the nextAfter of the previous page: "+rerr.Error.Error
			return lq, rerr
		}
	}
	if q.Has(fieldMatch) {
		lq.filter.Match = q.Get(fieldMatch)
		if len(lq.filter.Match) > store.MaxLockNameLen || !utf8.ValidString(lq.filter.Match) {
			return lq, badRequest(fieldMatch, "match: want at most %d bytes of UTF-8", store.MaxLockNameLen)
		}
	}
	if q.Has(fieldState) {
		st := LockState(q.Get(fieldState))
		if !slices.Contains(lockStates, st) {
			return lq, badRequest(fieldState, "state %s: want one of %s", echo(string(st)), stateList())
		}
		lq.filter.State = st
	}
	if q.Has(fieldInstance) {
		lq.filter.Instance = q.Get(fieldInstance)
		if rerr := checkInstanceID(fieldInstance, lq.filter.Instance); rerr != nil {
			return lq, rerr
		}
	}
	return lq, nil
}

func stateList() string {
	s := make([]string, len(lockStates))
	for i, st := range lockStates {
		s[i] = string(st)
	}
	return fieldList(s)
}

// parseHistoryQuery parses the query of the history endpoints: lockName
// (unless the path names the lock), limit (1 to store.MaxEventsLimit) and
// before (an entry id).
func parseHistoryQuery(raw, pathLock string) (store.EventFilter, *requestError) {
	var f store.EventFilter
	allowed := map[string]bool{fieldLimit: false, fieldBefore: false}
	if pathLock == "" {
		allowed[fieldLockName] = false
	}
	q, rerr := parseQuery(raw, allowed)
	if rerr != nil {
		return f, rerr
	}
	f.Lock = pathLock
	if q.Has(fieldLockName) {
		f.Lock = q.Get(fieldLockName)
		if rerr := checkLockName(f.Lock); rerr != nil {
			return f, rerr
		}
	}
	if q.Has(fieldLimit) {
		n, err := strconv.Atoi(q.Get(fieldLimit))
		if err != nil || n < 1 || n > store.MaxEventsLimit {
			return f, badRequest(fieldLimit, "limit %s: want a whole number from 1 to %d", echo(q.Get(fieldLimit)), store.MaxEventsLimit)
		}
		f.Limit = n
	}
	if q.Has(fieldBefore) {
		n, err := strconv.ParseInt(q.Get(fieldBefore), 10, 64)
		if err != nil || n < 1 {
			return f, badRequest(fieldBefore, "before %s: want a positive entry id", echo(q.Get(fieldBefore)))
		}
		f.BeforeID = n
	}
	return f, nil
}
