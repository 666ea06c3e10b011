package controlapi

import (
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/masterjob/masterjob/store"
)

// controlSeeds are bodies of control requests, good and bad: the seed
// corpus of FuzzDecodeControlRequest.
var controlSeeds = []string{
	`{"lockName":"JOB-SCHEDULER","reason":"testing"}`,
	`{"lockName": "JOB-SCHEDULER"}`,
	`{"reason":"r","lockName":"ä ö/ü"}`,
	` {"lockName":"x"} `,
	``,
	`null`,
	`[]`,
	`"JOB"`,
	`{`,
	`{}`,
	`{"lockName":1}`,
	`{"lockName":1e400}`,
	`{"lockName":null}`,
	`{"lockName":{"a":[1,{"b":null}]}}`,
	`{"lockName":"a","lockName":"b"}`,
	`{"LOCKNAME":"a"}`,
	`{"lockName":"a"} {}`,
	`{"lockName":"a"}]`,
	`{"lockName":"a",}`,
	`{"lockName":"a" "reason":"b"}`,
	`{"lockName":"a":"b"}`,
	`{"lockName":"\u0000"}`,
	`{"lockName":"\ud800"}`,
	`{"lockName":"a","reason":"\u0007"}`,
	`{"lockName":"a","reason":null}`,
	"{\"lockName\":\"\xff\"}",
	`{"lockName":"` + strings.Repeat("x", store.MaxLockNameLen+1) + `"}`,
	`{"lockName":"a","reason":"` + strings.Repeat("r", MaxReasonLen+1) + `"}`,
	`{"lockName":"'; DROP TABLE masterjob_locks; --"}`,
	`{"lockName":"gnp-\u202Egnillib","reason":"r"}`,
	"{\"lockName\":\"a\u2066b\",\"reason\":\"\u202Eesrever\"}",
	`{"` + strings.Repeat("k", 500) + `":1}`,
}

// FuzzDecodeControlRequest: the decoder never panics; whatever it accepts
// the standard library reads the same way (one object, exactly the known
// fields, strings) and passes validation; whatever it refuses gets a 400
// with a short message.
func FuzzDecodeControlRequest(f *testing.F) {
	for _, s := range controlSeeds {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		req, rerr := decodeControlRequest(body)
		if rerr != nil {
			if rerr.status != http.StatusBadRequest || rerr.Error.Error == "" {
				t.Fatalf("refusal %d %q", rerr.status, rerr.Error.Error)
			}
			if len(rerr.Error.Error) > 400 || len(rerr.Field) > maxEchoLen {
				t.Fatalf("refusal too long: %q field %q", rerr.Error.Error, rerr.Field)
			}
			if !utf8.ValidString(rerr.Error.Error) || !utf8.ValidString(rerr.Field) {
				t.Fatalf("refusal not UTF-8: %q field %q", rerr.Error.Error, rerr.Field)
			}
			return
		}
		var m map[string]any
		if err := json.Unmarshal(body, &m); err != nil {
			t.Fatalf("accepted %q, which encoding/json refuses: %v", body, err)
		}
		for k, v := range m {
			s, ok := v.(string)
			switch {
			case k != "lockName" && k != "reason":
				t.Fatalf("accepted unknown field %q in %q", k, body)
			case !ok:
				t.Fatalf("accepted field %q of type %T in %q", k, v, body)
			case k == "lockName" && s != req.LockName, k == "reason" && s != req.Reason:
				t.Fatalf("field %q read as %q, encoding/json reads %q", k, req.LockName, s)
			}
		}
		if _, ok := m["lockName"]; !ok {
			t.Fatalf("accepted %q without lockName", body)
		}
		if err := store.ValidateLockName(req.LockName); err != nil {
			t.Fatalf("accepted an invalid lock name: %v", err)
		}
		if checkReason(req.Reason) != nil {
			t.Fatalf("accepted an invalid reason %q", req.Reason)
		}
		// What the decoder accepts survives a round trip.
		again, rerr := decodeControlRequest(must(json.Marshal(req)))
		if rerr != nil || again != req {
			t.Fatalf("round trip of %+v: %+v, %v", req, again, rerr)
		}
	})
}

func must(b []byte, err error) []byte {
	if err != nil {
		panic(err)
	}
	return b
}

// FuzzParseHistoryQuery: any query string is either refused with a 400
// naming a parameter or gives a filter the stores accept.
func FuzzParseHistoryQuery(f *testing.F) {
	for _, s := range []string{
		"", "limit=10", "before=5&limit=1000", "lockName=JOB", "lockName=", "limit=0", "limit=-1",
		"limit=1001", "limit=99999999999999999999", "before=0", "before=9223372036854775808",
		"lockName=a&lockName=b", "x=1", "%zz", "lockName=%00", "limit=1;before=2", "lockName=a%2Fb&before=3",
	} {
		f.Add(s, "")
		f.Add(s, "JOB")
	}
	f.Fuzz(func(t *testing.T, raw, pathLock string) {
		if pathLock != "" && store.ValidateLockName(pathLock) != nil {
			return // the router refuses such a path first
		}
		flt, rerr := parseHistoryQuery(raw, pathLock)
		if rerr != nil {
			if rerr.status != http.StatusBadRequest || rerr.Error.Error == "" {
				t.Fatalf("refusal %+v", rerr)
			}
			return
		}
		if flt.Lock != "" && store.ValidateLockName(flt.Lock) != nil {
			t.Fatalf("accepted lock %q", flt.Lock)
		}
		if pathLock != "" && flt.Lock != pathLock {
			t.Fatalf("path lock %q became %q", pathLock, flt.Lock)
		}
		if flt.Limit < 0 || flt.Limit > store.MaxEventsLimit || flt.BeforeID < 0 {
			t.Fatalf("accepted filter %+v", flt)
		}
		q, err := url.ParseQuery(raw)
		if err != nil {
			t.Fatalf("accepted malformed query %q", raw)
		}
		for k := range q {
			if k != "limit" && k != "before" && k != "lockName" {
				t.Fatalf("accepted parameter %q", k)
			}
		}
	})
}

// FuzzCheckContentType: only JSON media types in UTF-8 pass.
func FuzzCheckContentType(f *testing.F) {
	for _, s := range []string{"application/json", "application/json; charset=utf-8", "application/merge-patch+json",
		"text/plain", "", "application/json; charset=latin1", "application/json;;", "APPLICATION/JSON"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, ct string) {
		rerr := checkContentType(ct)
		if rerr != nil {
			if rerr.status != http.StatusUnsupportedMediaType {
				t.Fatalf("refusal %+v", rerr)
			}
			return
		}
		if !strings.Contains(strings.ToLower(ct), "json") {
			t.Fatalf("accepted %q", ct)
		}
	})
}
