// Package controlapi is masterjob's HTTP control API: the seed's
// POST /api/mastercontrols/disable and /enable, plus reads of every lock's
// state and of the audit history. It is an http.Handler to mount in the
// server an application already has; `masterjob run --http` and
// `masterjob serve --http` serve it too.
//
// # Mounting
//
// The handler serves paths that begin with BasePath, /api/mastercontrols,
// and routes them itself (with an http.ServeMux). Register it for both the
// path and the subtree (a ServeMux would otherwise redirect
// GET /api/mastercontrols to the subtree):
//
//	h, err := controlapi.New(st, controlapi.WithToken(os.Getenv("MASTERJOB_HTTP_TOKEN")))
//	if err != nil {
//		return err
//	}
//	mux.Handle("/api/mastercontrols", h)
//	mux.Handle("/api/mastercontrols/", h)
//
// To serve it under another prefix, strip the prefix:
//
//	mux.Handle("/ops/api/mastercontrols/", http.StripPrefix("/ops", h))
//
// Give the handler a store handle of its own, opened apart from the one
// the Executor uses (a second sqlite.Open or postgres.Open of the same
// database), so that the requests it serves never hold the connections
// the master's renewals need; `masterjob run --http` does so. Besides, it
// lets at most DefaultMaxInFlight reads and as many control requests call
// the store at once (WithMaxInFlight); a request beyond that waits up to
// BusyWait, then gets 503 with Retry-After.
//
// # Endpoints
//
//	POST /api/mastercontrols/disable              {"lockName": "...", "reason": "..."}
//	POST /api/mastercontrols/enable               {"lockName": "..."}
//	GET  /api/mastercontrols                      every lock the store knows (?lockName=A&lockName=B: those)
//	GET  /api/mastercontrols/locks/{lockName}     one lock
//	GET  /api/mastercontrols/history              history, newest first (?lockName=&limit=&before=)
//	GET  /api/mastercontrols/history/{lockName}   one lock's history (?limit=&before=)
//
// The lock name ends the path and takes all of its rest, so every valid
// name has a path, those of the endpoints ("disable", "history", ...) and
// those with slashes included. Percent-encode it as url.PathEscape does,
// and write a name that is "." or ".." as %2E or %2E%2E: a path with an
// empty, "." or ".." segment gets 404. GET on the two POST paths answers
// 405 with "Allow: POST", as the seed's did.
//
// Disable and enable answer 200 with a ControlResult: "changed" is false
// when the lock already was in the requested state, which is not an error
// (disabling a disabled lock keeps its first reason). Its "message" begins
// with the seed's words: "Flagged X as disabled", "X is already flagged as
// disabled", "X is flagged for (re)enablement". A disable needs a reason.
// A lock may be disabled before any instance used it. After disable
// returns, the master stops its job within one heartbeat and no instance
// acquires the lock until it is enabled; after enable, one instance
// becomes master. Every change is recorded in the store's history
// (store.History) with the caller, the reason and the remote address;
// requests that change nothing are not. Page through the history with the
// "before" parameter set to the response's "nextBefore".
//
// Reads answer a Lock, a LockList or an EventPage. Lock is the JSON shape
// of a lock everywhere: here, in `masterjob status --json` and in the
// dashboard. A lock the store has no record of (no instance has been its
// master and nobody disabled it) is unknown: GET
// /api/mastercontrols/locks/{lockName} answers 404 with a JSON error, and
// a list that names it marks it "unknown": true.
//
// # Security
//
// With WithToken (or WithNamedToken, which also names the caller in the
// audit records) the mutating endpoints require "Authorization: Bearer
// <token>", compared in constant time; the reads too with
// WithTokenForReads. A missing or wrong token gets 401 with a
// WWW-Authenticate header. Without a token anyone who can reach the handler
// can disable locks: CheckListenAddr refuses a listener other machines can
// reach unless a token is set or the user allows it explicitly.
//
// Without a token the handler answers only requests whose Host header is
// a loopback address (127.0.0.0/8, ::1) or localhost, with any port; other
// hosts get 421 (HostAllowed). A web page on a name whose owner points it
// at 127.0.0.1 (DNS rebinding) is, to the browser, the same origin as its
// requests, which reach a loopback listener with that name in Host.
// WithAllowedHosts adds names (a reverse proxy's, say) or turns the check
// off with "*". The dashboard applies the same rule to its page.
//
// Control requests must be JSON (Content-Type application/json), which a
// browser cannot send to another origin without a CORS preflight that this
// handler never grants, and browsers' cross-origin requests are refused
// outright (http.CrossOriginProtection; see WithTrustedOrigin).
//
// # Errors
//
// Every error is JSON, {"error": "...", "field": "..."}, where field names
// the body field, query parameter or path segment at fault, if any:
//
//	400  malformed JSON, not an object, unknown or repeated fields, wrong
//	     types, data after the object, missing lockName, a disable without
//	     a reason, an invalid lock name (store.ValidateLockName: control and
//	     format characters such as U+202E are refused), a reason longer
//	     than MaxReasonLen or with control characters, bad query parameters
//	401  missing or wrong bearer token
//	403  cross-origin browser request
//	404  unknown path; unknown lock at /api/mastercontrols/locks/{lockName}
//	     (field "lockName")
//	405  wrong method (with an Allow header)
//	413  body longer than the cap (WithMaxBodyBytes, default 64 KiB)
//	415  Content-Type other than JSON
//	421  without a token, a Host other than a loopback address or localhost
//	501  history requested from a store that keeps none
//	503  the store is unavailable or closed, or too many requests are in
//	     flight (with Retry-After)
//	500  anything else
//
// Store errors are logged, never passed on: a response says only that the
// store is unavailable or that an internal error happened. Values from
// requests reach the store only as parameters of its calls.
package controlapi
