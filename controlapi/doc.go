// Package controlapi is masterjob's HTTP control API: the seed's
// POST /api/mastercontrols/disable and /enable, plus reads of every lock's
// state and of the audit history. It is an http.Handler to mount in the
// server an application already has; `masterjob run --http` and
// `masterjob serve --http` serve it too.
//
// # Mounting
//
// The handler serves paths that begin with BasePath, /api/mastercontrols,
// and routes them itself. Register it for both the path and the subtree
// (a ServeMux would otherwise redirect GET /api/mastercontrols to the
// subtree):
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
// # Endpoints
//
//	POST /api/mastercontrols/disable       {"lockName": "...", "reason": "..."}
//	POST /api/mastercontrols/enable        {"lockName": "..."}
//	GET  /api/mastercontrols               every lock the store knows (?lockName=A&lockName=B: those)
//	GET  /api/mastercontrols/{lockName}    one lock (percent-encode the name)
//	GET  /api/mastercontrols/history       history, newest first (?lockName=&limit=&before=)
//	GET  /api/mastercontrols/{lockName}/history
//
// Disable and enable answer 200 with a ControlResult: "changed" is false
// when the lock already was in the requested state, which is not an error
// (disabling a disabled lock keeps its first reason). A lock may be
// disabled before any instance used it. After disable returns, the master
// stops its job within one heartbeat and no instance acquires the lock
// until it is enabled; after enable, one instance becomes master. Every
// change is recorded in the store's history (store.History) with the
// caller, the reason and the remote address; requests that change nothing
// are not. Reads answer a Lock, a LockList or an EventPage. A lock the
// store has never seen is reported free and enabled. Page through the
// history with the "before" parameter set to the response's "nextBefore".
// Locks named "disable", "enable" or "history" are read with
// GET /api/mastercontrols?lockName=NAME, as their paths are the endpoints'.
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
//	     types, data after the object, missing lockName, an invalid lock
//	     name (store.ValidateLockName), a reason longer than MaxReasonLen or
//	     with control characters, bad query parameters
//	401  missing or wrong bearer token
//	403  cross-origin browser request
//	404  unknown path
//	405  wrong method (with an Allow header)
//	413  body longer than the cap (WithMaxBodyBytes, default 64 KiB)
//	415  Content-Type other than JSON
//	501  history requested from a store that keeps none
//	503  the store is unavailable or closed (with Retry-After)
//	500  anything else
//
// Store errors are logged, never passed on: a response says only that the
// store is unavailable or that an internal error happened. Values from
// requests reach the store only as parameters of its calls.
package controlapi
