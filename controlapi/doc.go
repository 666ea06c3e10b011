// Package controlapi is masterjob's HTTP control API: the seed's
// POST /api/mastercontrols/disable and /enable, plus reads of every lock's
// state, of the live instances and of the audit history, hand-offs, and a
// stream of events. It is an http.Handler to mount in the
// server an application already has; `masterjob run --http` and
// `masterjob serve --http` serve it too.
//
// # Mounting
//
// The handler serves paths that begin with BasePath, /api/mastercontrols,
// and InstancesPath, /api/instances, and routes them itself (with an
// http.ServeMux). Register it for the path, the subtree (a ServeMux would
// otherwise redirect GET /api/mastercontrols to the subtree) and the
// member list:
//
//	h, err := controlapi.New(st, controlapi.WithToken(os.Getenv("MASTERJOB_HTTP_TOKEN")))
//	if err != nil {
//		return err
//	}
//	mux.Handle("/api/mastercontrols", h)
//	mux.Handle("/api/mastercontrols/", h)
//	mux.Handle("/api/instances", h)
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
//	POST /api/mastercontrols/handoff              {"lockName": "...", "to": "...", "reason": "..."}
//	GET  /api/mastercontrols                      every lock the store knows (?lockName=A&lockName=B: those;
//	                                              ?match=&state=&instance= filter; ?limit=&after= a page)
//	GET  /api/mastercontrols/locks/{lockName}     one lock, with its candidates
//	GET  /api/mastercontrols/history              history, newest first (?lockName=&limit=&before=)
//	GET  /api/mastercontrols/history/{lockName}   one lock's history (?limit=&before=)
//	GET  /api/mastercontrols/events               Server-Sent Events (?lockName=)
//	GET  /api/instances                           the live instances (?lockName=)
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
// Reads answer a Lock, a LockList, an InstanceList or an EventPage. The
// list answers every lock without a limit, as the seed's did; with
// ?limit=N (1 to MaxListLimit) a page, ordered by name byte by byte, with
// NextAfter to pass as ?after= for the next. ?match= (part of the name, any
// case), ?state= (master, nomaster, disabled, nostandby: see LockState)
// and ?instance= (the master's id) filter (LockFilter). Total counts the
// matching locks and Summary every lock listed or named (Summarize),
// whatever the filters and the page. Each list reads every lock from the
// store (the store contract has no paging) and, on a store with a member
// list (store.Membership), the members with their locks, reused for
// memberCacheTTL (a second), to count each lock's standbys: the live
// members other than its master taking part in it (SetStandbys). One
// lock's read lists its candidates, master first.
//
// Lock is the JSON shape
// of a lock everywhere: here, in `masterjob status --json` and in the
// dashboard. A lock the store has no record of (no instance has been its
// master and nobody disabled it) is unknown: GET
// /api/mastercontrols/locks/{lockName} answers 404 with a JSON error, and
// a list that names it marks it "unknown": true.
//
// # Hand-off
//
// POST /api/mastercontrols/handoff (the rules of disable and enable: the
// token, the Host, the browser checks) asks the master of lockName to stop
// its job and release the lease, reserved for the instance "to" for a
// short while when it is given, then anyone's, and records a "handoff"
// entry in the history: the caller as its instance, "from X to Y[:
// reason]" as its reason, the remote address. It answers a HandoffResult;
// 404 for an unknown lock; 409 for a disabled lock, a lock without a
// master, a "to" that is not a live member taking part in the lock or is
// its master (field "to"), and, without "to", a lock no other live member
// takes part in (the last two on a store with a member list); 501 when
// the store cannot hand off (store.Handoffs). Handoff does the same
// without HTTP.
//
// # Events
//
// GET /api/mastercontrols/events is a Server-Sent Events stream, under the
// token rule of reads. It opens with "event: ready" whose id is the history
// entry it starts after. Each history entry appended after that (control
// changes, mastership transitions as executors record them with
// audit.Recorder, hand-off requests) is an event with the entry's id and
// its Event JSON as data; with ?lockName= only that lock's. Instances
// joining and leaving are "event: member" with a MemberEvent (a join or a
// graceful leave as soon as the store pushes it, an expired record within
// five poll intervals), not resumable; "event: gap" says entries were
// missed. One goroutine reads the store for every stream, only while one
// is open: on each change of the history the store pushes (store.Notifier),
// else every poll interval (WithPollInterval, default a second; every ten
// as a safety net once the store has pushed such a change). A client that
// reconnects with Last-Event-ID gets what it missed, from the events kept
// (WithStreamBuffer) or from the history. Streams share those events and
// read them at their own pace: a stream that falls further behind than the
// buffer is dropped, and its connection cut, so that a slow client costs
// neither the store, nor the executor, nor other clients anything. Each
// write has its own deadline (10s), so the stream survives a server's
// WriteTimeout; a comment every WithHeartbeat (15s) keeps proxies from
// closing an idle stream; at most WithMaxStreams streams are open at once
// (503 beyond); http.Server.Shutdown ends them when it begins.
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
//	     or in a hand-off (field "lockName")
//	405  wrong method (with an Allow header)
//	413  body longer than the cap (WithMaxBodyBytes, default 64 KiB)
//	409  a hand-off the lock's or the cluster's state refuses (above)
//	415  Content-Type other than JSON
//	421  without a token, a Host other than a loopback address or localhost
//	501  history requested from a store that keeps none; instances from a
//	     store without a member list; a hand-off on a store that cannot;
//	     events from a store with neither history nor member list
//	503  the store is unavailable or closed, or too many requests (or
//	     event streams) are in flight (with Retry-After)
//	500  anything else
//
// Store errors are logged, never passed on: a response says only that the
// store is unavailable or that an internal error happened. Values from
// requests reach the store only as parameters of its calls.
package controlapi
