package controlapi

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/masterjob/masterjob/internal/backoff"
	"github.com/masterjob/masterjob/store"
)

// Defaults of the event stream (GET /api/mastercontrols/events).
const (
	// DefaultMaxStreams is how many event streams the handler serves at
	// once unless WithMaxStreams says otherwise.
	DefaultMaxStreams = 16
	// DefaultHeartbeat is how often a stream sends a comment when it has
	// nothing else to send, so that proxies keep it open, unless
	// WithHeartbeat says otherwise.
	DefaultHeartbeat = 15 * time.Second
	// DefaultPollInterval is how often the stream reads the history when
	// the store does not push its changes, unless WithPollInterval says
	// otherwise. Once the store has pushed a change of the history it
	// reads it every 10 intervals too, as a safety net (pushes can be
	// lost); the member list is read every 5 intervals (an expired member
	// is not pushed).
	DefaultPollInterval = time.Second
	// DefaultStreamBuffer is how many recent events the stream keeps for
	// its clients, unless WithStreamBuffer says otherwise: a client that
	// falls further behind is dropped (it may reconnect with
	// Last-Event-ID and resume from the store's history).
	DefaultStreamBuffer = 8192
)

const (
	// streamWriteTimeout bounds each write to a stream: a client that
	// takes longer to accept it is dropped.
	streamWriteTimeout = 10 * time.Second
	// streamRetry is the reconnection delay the stream suggests to
	// EventSource clients.
	streamRetry = 2 * time.Second
	// catchUpPages bounds the pages of history read to resume a client;
	// beyond, the client is told of a gap.
	catchUpPages = 10
	// writeBatch is about how many bytes a stream writes at once.
	writeBatch = 64 << 10
)

// WithMaxStreams sets how many event streams may be open at once (default
// DefaultMaxStreams, at least 1); a stream beyond gets 503 with
// Retry-After.
func WithMaxStreams(n int) Option {
	return func(c *config) {
		if n < 1 {
			c.errs = append(c.errs, fmt.Errorf("max streams %d: want at least 1", n))
			return
		}
		c.maxStreams = n
	}
}

// WithHeartbeat sets how often an idle event stream sends a comment
// (default DefaultHeartbeat, at least 10ms).
func WithHeartbeat(d time.Duration) Option {
	return func(c *config) {
		if d < 10*time.Millisecond {
			c.errs = append(c.errs, fmt.Errorf("heartbeat %v: want at least 10ms", d))
			return
		}
		c.heartbeat = d
	}
}

// WithPollInterval sets how often the event stream reads the history of a
// store that does not push changes (default DefaultPollInterval, at least
// 10ms).
func WithPollInterval(d time.Duration) Option {
	return func(c *config) {
		if d < 10*time.Millisecond {
			c.errs = append(c.errs, fmt.Errorf("poll interval %v: want at least 10ms", d))
			return
		}
		c.poll = d
	}
}

// WithStreamBuffer sets how many recent events the event stream keeps
// for its clients (default DefaultStreamBuffer, at least 16): a client
// further behind is dropped, and more entries appended to the history at
// once than that reach clients as a gap (an event of type "gap").
func WithStreamBuffer(n int) Option {
	return func(c *config) {
		if n < 16 {
			c.errs = append(c.errs, fmt.Errorf("stream buffer %d: want at least 16", n))
			return
		}
		c.streamBuffer = n
	}
}

// feed reads the store's history and member list for every stream client
// at once: one goroutine (a feedRun) while at least one client is
// connected, none otherwise. What it reads goes, as frames, into a ring
// shared by the clients; each client reads the ring at its own pace, from
// its own cursor, and is dropped when the ring moves past its cursor.
// Neither the reading of the store nor other clients ever wait for a
// client.
type feed struct {
	h *Handler

	mu      sync.Mutex
	clients map[*streamClient]struct{}
	run     *feedRun // nil while no client is connected

	servers sync.Map // *http.Server -> struct{}: shutdown hook registered
	wg      sync.WaitGroup
}

// feedRun is one life of the feed's goroutine. Its fields but cancel and
// ready are guarded by feed.mu.
type feedRun struct {
	cancel  context.CancelFunc
	ready   chan struct{} // closed once lastID and members are known
	pending int           // clients waiting for ready

	lastID int64 // newest history entry sent, or seen at start
	// floor: history entries with an id above it were sent (and are in
	// the ring while it holds them) or are still to be sent; those at or
	// below are not sent live.
	floor   int64
	next    uint64      // sequence number of the next frame
	ring    []ringEntry // recent frames, oldest first
	inRing  map[int64]struct{}
	members map[string]store.Member // last member list read; nil before
}

type ringEntry struct {
	seq   uint64
	id    int64 // history entry id; 0 for other events
	lock  string
	frame []byte
}

// first returns the sequence number of the oldest frame in the ring (the
// next one when it is empty).
func (r *feedRun) first() uint64 {
	if len(r.ring) == 0 {
		return r.next
	}
	return r.ring[0].seq
}

// streamClient is one open stream.
type streamClient struct {
	lock    string        // only this lock's history entries; "" for all
	cursor  uint64        // next frame to send (guarded by feed.mu)
	wake    chan struct{} // capacity 1: frames were added
	dropped chan struct{} // closed when the feed lets go of the client
	slow    bool          // dropped for falling behind (guarded by feed.mu)
	srv     *http.Server  // the server it came through, if known
	// cut makes a write to the client in progress fail now: a client
	// dropped for falling behind is not waited for.
	cut func()
}

func (c *streamClient) wants(lock string) bool { return c.lock == "" || lock == "" || c.lock == lock }

// errNoStream: nothing to stream from.
var errNoStream = errors.New("this store keeps neither a history nor a member list: there are no events to stream")

// stream serves GET /api/mastercontrols/events[?lockName=...].
func (h *Handler) stream(w http.ResponseWriter, r *http.Request) {
	q, rerr := parseQuery(r.URL.RawQuery, map[string]bool{fieldLockName: false})
	if rerr != nil {
		h.refuse(w, r, rerr)
		return
	}
	lock := q.Get(fieldLockName)
	if q.Has(fieldLockName) {
		if rerr := checkLockName(lock); rerr != nil {
			h.refuse(w, r, rerr)
			return
		}
	}
	last, resume := int64(0), false
	if v := r.Header.Get("Last-Event-ID"); v != "" {
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			h.refuse(w, r, &requestError{status: http.StatusBadRequest, Error: Error{
				Error: "Last-Event-ID " + echo(v) + ": want the id of an event of this stream",
			}})
			return
		}
		last, resume = n, true
	}
	if _, ok := h.st.(store.Membership); !ok && h.history == nil {
		writeJSON(w, http.StatusNotImplemented, Error{Error: errNoStream.Error()})
		return
	}
	if r.Method == http.MethodHead {
		w.Header().Set("Content-Type", "text/event-stream; charset=utf-8")
		return
	}
	select {
	case h.streams <- struct{}{}:
		defer func() { <-h.streams }()
	default:
		w.Header().Set("Retry-After", "5")
		h.refuse(w, r, &requestError{status: http.StatusServiceUnavailable, Error: Error{
			Error: fmt.Sprintf("busy: %d event streams are open, the most this server serves; try again later", cap(h.streams)),
		}})
		return
	}
	rc := http.NewResponseController(w)
	// The stream outlives the server's read and write timeouts: it sets
	// its own deadline before each write.
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))

	c := &streamClient{lock: lock, wake: make(chan struct{}, 1), dropped: make(chan struct{}),
		cut: func() { _ = rc.SetWriteDeadline(time.Now()) }}
	if srv, ok := r.Context().Value(http.ServerContextKey).(*http.Server); ok {
		c.srv = srv
		if _, loaded := h.feed.servers.LoadOrStore(srv, struct{}{}); !loaded {
			// http.Server.Shutdown waits for connections to go idle, which
			// a stream never does: end the streams when it begins.
			srv.RegisterOnShutdown(func() { h.feed.closeServer(srv) })
		}
	}
	floor, from, err := h.feed.join(r.Context(), c, last, resume)
	if err != nil {
		return // the client went away while the feed started
	}
	defer h.feed.leave(c)

	var catchUp [][]byte
	if resume && last < floor && h.history != nil {
		ctx, end, ok := h.begin(w, r, h.reads)
		if !ok {
			return
		}
		catchUp, err = h.catchUp(ctx, lock, last, floor)
		end()
		if err != nil {
			h.log.Warn("cannot read the history to resume an event stream", "err", err, "remote", r.RemoteAddr)
			catchUp = [][]byte{gapFrame(fmt.Sprintf("the history after entry %d could not be read: events may be missing", last))}
		}
	}

	hdr := w.Header()
	hdr.Set("Content-Type", "text/event-stream; charset=utf-8")
	hdr.Set("Cache-Control", "no-store")
	hdr.Set("X-Accel-Buffering", "no") // nginx: do not buffer the stream
	w.WriteHeader(http.StatusOK)
	write := func(b []byte) bool {
		_ = rc.SetWriteDeadline(time.Now().Add(streamWriteTimeout))
		if _, err := w.Write(b); err != nil {
			return false
		}
		return rc.Flush() == nil
	}
	buf := fmt.Appendf(nil, "retry: %d\nid: %d\nevent: ready\ndata: {\"lastEventId\":%d}\n\n", streamRetry.Milliseconds(), from, from)
	for _, f := range catchUp {
		buf = append(buf, f...)
	}
	hb := time.NewTicker(h.heartbeat)
	defer hb.Stop()
	for {
		// What the ring holds for this client, a batch at a time.
		for {
			var more, ok bool
			buf, more, ok = h.feed.take(c, buf, writeBatch)
			if !ok {
				if h.feed.wasSlow(c) {
					h.log.Warn("event stream dropped: the client fell behind", "remote", r.RemoteAddr, "buffer", h.streamBuffer)
				}
				return
			}
			if len(buf) > 0 && !write(buf) {
				if h.feed.wasSlow(c) {
					h.log.Warn("event stream dropped: the client fell behind", "remote", r.RemoteAddr, "buffer", h.streamBuffer)
				}
				return
			}
			buf = buf[:0]
			if !more {
				break
			}
		}
		select {
		case <-c.wake:
		case <-hb.C:
			if !write([]byte(": ping\n\n")) {
				return
			}
		case <-c.dropped:
			// take says why.
		case <-r.Context().Done():
			return
		}
	}
}

// catchUp reads the history entries of lock ("" for all) with an id in
// (after, upTo], oldest first, as frames.
func (h *Handler) catchUp(ctx context.Context, lock string, after, upTo int64) ([][]byte, error) {
	var got []store.Event
	before, complete := upTo+1, false
	for range catchUpPages {
		evs, err := h.history.Events(ctx, store.EventFilter{Lock: lock, BeforeID: before, Limit: store.MaxEventsLimit})
		if err != nil {
			return nil, err
		}
		for _, e := range evs {
			if e.ID <= after {
				complete = true
				break
			}
			got = append(got, e)
		}
		if complete || len(evs) < store.MaxEventsLimit {
			complete = true
			break
		}
		before = evs[len(evs)-1].ID
	}
	slices.Reverse(got)
	out := make([][]byte, 0, len(got)+1)
	if !complete {
		out = append(out, gapFrame(fmt.Sprintf("more than %d entries of the history follow entry %d: only the newest are sent", len(got), after)))
	}
	for _, e := range got {
		out = append(out, eventFrame(e))
	}
	return out, nil
}

func eventFrame(e store.Event) []byte {
	data, _ := json.Marshal(EventOf(e))
	return fmt.Appendf(nil, "id: %d\ndata: %s\n\n", e.ID, data)
}

func memberFrame(m MemberEvent) []byte {
	data, _ := json.Marshal(m)
	return fmt.Appendf(nil, "event: member\ndata: %s\n\n", data)
}

func gapFrame(msg string) []byte {
	data, _ := json.Marshal(struct {
		Message string `json:"message"`
	}{msg})
	return fmt.Appendf(nil, "event: gap\ndata: %s\n\n", data)
}

// join registers c, starting the feed's goroutine if it is not running,
// and waits until the feed is ready. It sets c's cursor to the first
// frame after history entry last (after the newest, without resume), and
// returns the feed's floor (entries at or below it are not in the ring)
// and the id the client starts from.
func (f *feed) join(ctx context.Context, c *streamClient, last int64, resume bool) (floor, from int64, err error) {
	f.mu.Lock()
	if f.clients == nil {
		f.clients = map[*streamClient]struct{}{}
	}
	run := f.run
	if run == nil {
		rctx, cancel := context.WithCancel(context.Background())
		run = &feedRun{cancel: cancel, ready: make(chan struct{}), inRing: map[int64]struct{}{}}
		f.run = run
		f.wg.Add(1)
		go f.loop(rctx, run)
	}
	run.pending++
	f.mu.Unlock()

	select {
	case <-run.ready:
	case <-ctx.Done():
		f.mu.Lock()
		run.pending--
		f.stopIfIdle()
		f.mu.Unlock()
		return 0, 0, ctx.Err()
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	run.pending--
	c.cursor = run.next
	if resume && last < run.lastID {
		// From the first history entry after last still in the ring.
		for _, e := range run.ring {
			if e.id > last {
				c.cursor = e.seq
				break
			}
		}
	} else {
		last = run.lastID
	}
	f.clients[c] = struct{}{}
	return run.floor, last, nil
}

// take appends to buf the frames c wants from its cursor on, about max
// bytes of them, and moves the cursor past them; more reports that frames
// are left. ok is false when c was dropped (or is dropped now, having
// fallen behind the ring).
func (f *feed) take(c *streamClient, buf []byte, most int) (out []byte, more, ok bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	run := f.run
	if _, ok := f.clients[c]; !ok || run == nil {
		return buf, false, false
	}
	if c.cursor < run.first() {
		f.drop(c, true)
		return buf, false, false
	}
	i := int(c.cursor - run.first())
	for ; i < len(run.ring) && len(buf) < most; i++ {
		if e := run.ring[i]; c.wants(e.lock) {
			buf = append(buf, e.frame...)
		}
	}
	c.cursor = run.first() + uint64(i)
	return buf, i < len(run.ring), true
}

// leave unregisters c and stops the feed's goroutine when nobody is left.
func (f *feed) leave(c *streamClient) {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.clients, c)
	f.stopIfIdle()
}

// stopIfIdle stops the run when no client is connected or waiting. f.mu
// must be held.
func (f *feed) stopIfIdle() {
	if f.run != nil && len(f.clients) == 0 && f.run.pending == 0 {
		f.run.cancel()
		f.run = nil
	}
}

// drop lets go of c. f.mu must be held.
func (f *feed) drop(c *streamClient, slow bool) {
	if _, ok := f.clients[c]; !ok {
		return
	}
	delete(f.clients, c)
	c.slow = slow
	close(c.dropped)
	if slow && c.cut != nil {
		// Cut the connection now rather than wait for the client to
		// take what is buffered, or for the write deadline.
		c.cut()
	}
}

func (f *feed) wasSlow(c *streamClient) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return c.slow
}

// closeServer ends the streams served through srv (it is shutting down).
func (f *feed) closeServer(srv *http.Server) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for c := range f.clients {
		if c.srv == srv {
			f.drop(c, false)
		}
	}
}

// add puts a frame in the ring, the oldest leaving it beyond the
// buffer. f.mu must be held; wake the clients after.
func (f *feed) add(run *feedRun, id int64, lock string, frame []byte) {
	run.ring = append(run.ring, ringEntry{seq: run.next, id: id, lock: lock, frame: frame})
	run.next++
	if id != 0 {
		run.inRing[id] = struct{}{}
		run.lastID = max(run.lastID, id)
	}
	if over := len(run.ring) - f.h.streamBuffer; over > 0 {
		for _, e := range run.ring[:over] {
			if e.id != 0 {
				delete(run.inRing, e.id)
				run.floor = max(run.floor, e.id)
			}
		}
		clear(run.ring[:over])
		run.ring = run.ring[over:]
	}
}

// wakeAll wakes the clients after frames were added, and drops those the
// ring left behind. f.mu must be held.
func (f *feed) wakeAll(run *feedRun) {
	first := run.first()
	for c := range f.clients {
		if c.cursor < first {
			f.drop(c, true)
			continue
		}
		select {
		case c.wake <- struct{}{}:
		default:
		}
	}
}

// loop is the feed's goroutine: it learns where the history ends and who
// the members are, then follows both, woken by the store's pushes or by
// its timers, until run is cancelled.
func (f *feed) loop(ctx context.Context, run *feedRun) {
	defer f.wg.Done()
	h := f.h
	for n := 1; ; n++ {
		err := f.start(ctx, run)
		if err == nil {
			break
		}
		h.log.Warn("event stream: cannot read the store; retrying", "err", err)
		if !sleepCtx(ctx, backoff.Delay(n, 100*time.Millisecond, 5*time.Second)) {
			return
		}
	}
	close(run.ready)

	notifier, _ := h.st.(store.Notifier)
	var (
		changes  <-chan store.Change
		stopSub  = func() {}
		resub    = time.NewTimer(0) // subscribe at once
		histPoll = time.NewTimer(h.poll)
		memPoll  = time.NewTicker(5 * h.poll)
		subFails int
		// Until the store has pushed a change of the history, it may not
		// push them (a backend that pushes only lease changes): poll as
		// if it did not push.
		histPushed bool
	)
	defer func() { stopSub() }()
	defer resub.Stop()
	defer histPoll.Stop()
	defer memPoll.Stop()
	if notifier == nil {
		resub.Stop()
	}
	for {
		var wantHist, wantMembers bool
		select {
		case <-ctx.Done():
			return
		case ch, ok := <-changes:
			if !ok {
				changes = nil
				stopSub()
				subFails++
				resub.Reset(backoff.Delay(subFails, 100*time.Millisecond, 10*time.Second))
				histPoll.Reset(h.poll)
				continue
			}
			histPushed = histPushed || ch.Kind == store.ChangeHistory
			wantHist, wantMembers = classify(ch, wantHist, wantMembers)
		drain:
			for range 1000 {
				select {
				case ch, ok := <-changes:
					if !ok {
						break drain // seen closed at the next turn
					}
					histPushed = histPushed || ch.Kind == store.ChangeHistory
					wantHist, wantMembers = classify(ch, wantHist, wantMembers)
				default:
					break drain
				}
			}
		case <-resub.C:
			sctx, cancel := context.WithCancel(ctx)
			t := time.AfterFunc(h.callTimeout, cancel)
			ch, err := notifier.Subscribe(sctx)
			if !t.Stop() && err == nil {
				err = context.DeadlineExceeded // cancelled: the channel closes
			}
			if err != nil {
				cancel()
				h.log.Debug("event stream: cannot subscribe to the store's changes; polling", "err", err)
				subFails++
				resub.Reset(backoff.Delay(subFails, 100*time.Millisecond, 10*time.Second))
				continue
			}
			subFails = 0
			changes, stopSub = ch, cancel
			// Whatever happened while not subscribed.
			wantHist, wantMembers = true, true
		case <-histPoll.C:
			wantHist = true
		case <-memPoll.C:
			wantMembers = true
		}
		if wantHist && h.history != nil {
			if err := f.fetch(ctx, run); err != nil && ctx.Err() == nil {
				h.log.Debug("event stream: cannot read the history", "err", err)
			}
			next := h.poll
			if changes != nil && histPushed {
				next = 10 * h.poll
			}
			histPoll.Reset(next)
		}
		if wantMembers {
			if err := f.diffMembers(ctx, run); err != nil && ctx.Err() == nil {
				h.log.Debug("event stream: cannot read the member list", "err", err)
			}
		}
	}
}

func classify(c store.Change, hist, members bool) (bool, bool) {
	switch c.Kind {
	case store.ChangeHistory:
		hist = true
	case store.ChangeMember:
		members = true
	case store.ChangeResync:
		// Changes were lost: read both again.
		hist, members = true, true
	}
	return hist, members
}

// start reads the id of the newest history entry and the member list.
func (f *feed) start(ctx context.Context, run *feedRun) error {
	h := f.h
	var newest int64
	if h.history != nil {
		cctx, cancel := context.WithTimeout(ctx, h.callTimeout)
		evs, err := h.history.Events(cctx, store.EventFilter{Limit: 1})
		cancel()
		if err != nil {
			return err
		}
		if len(evs) > 0 {
			newest = evs[0].ID
		}
	}
	members, err := f.readMembers(ctx)
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	run.lastID, run.floor, run.members = newest, newest, members
	return nil
}

func (f *feed) readMembers(ctx context.Context) (map[string]store.Member, error) {
	ms, ok := f.h.st.(store.Membership)
	if !ok {
		return nil, nil
	}
	cctx, cancel := context.WithTimeout(ctx, f.h.callTimeout)
	defer cancel()
	list, err := ms.Members(cctx, store.MemberFilter{})
	if err != nil {
		return nil, err
	}
	out := make(map[string]store.Member, len(list))
	for _, m := range list {
		out[m.ID] = m
	}
	return out, nil
}

// fetch reads the entries appended since the last read and sends them.
// It reads the newest page of the history, and older pages while they may
// hold entries not sent yet (at most the stream's buffer in all); an entry
// committed late under a smaller id is still sent if the page holds it.
func (f *feed) fetch(ctx context.Context, run *feedRun) error {
	h := f.h
	f.mu.Lock()
	floor, lastID := run.floor, run.lastID
	f.mu.Unlock()
	// At most the stream's buffer: a fetch never pushes a client that
	// had taken everything out of the ring.
	var got []store.Event
	before, complete := int64(0), false
	limit := min(store.MaxEventsLimit, h.streamBuffer)
	for range h.streamBuffer / limit {
		cctx, cancel := context.WithTimeout(ctx, h.callTimeout)
		evs, err := h.history.Events(cctx, store.EventFilter{BeforeID: before, Limit: limit})
		cancel()
		if err != nil {
			return err
		}
		for _, e := range evs {
			if e.ID > floor {
				got = append(got, e)
			}
		}
		if len(evs) < limit || evs[len(evs)-1].ID <= lastID {
			complete = true
			break
		}
		before = evs[len(evs)-1].ID
	}
	slices.SortFunc(got, func(a, b store.Event) int { return cmp.Compare(a.ID, b.ID) })

	f.mu.Lock()
	defer f.mu.Unlock()
	if !complete {
		f.add(run, 0, "", gapFrame(fmt.Sprintf("more entries were appended to the history at once than the stream keeps (%d): only the newest are sent", len(got))))
	}
	for _, e := range got {
		if _, sent := run.inRing[e.ID]; sent || e.ID <= run.floor {
			continue
		}
		f.add(run, e.ID, e.Lock, eventFrame(e))
	}
	f.wakeAll(run)
	return nil
}

// diffMembers reads the member list and sends who joined and who left
// since the last read.
func (f *feed) diffMembers(ctx context.Context, run *feedRun) error {
	members, err := f.readMembers(ctx)
	if err != nil || members == nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	prev := run.members
	run.members = members
	var events []MemberEvent
	for id, m := range members {
		if _, ok := prev[id]; !ok {
			events = append(events, memberEventOf("joined", m))
		}
	}
	for id, m := range prev {
		if _, ok := members[id]; !ok {
			events = append(events, memberEventOf("left", m))
		}
	}
	slices.SortFunc(events, func(a, b MemberEvent) int { return cmp.Compare(a.Instance, b.Instance) })
	for _, e := range events {
		f.add(run, 0, "", memberFrame(e))
	}
	f.wakeAll(run)
	return nil
}

func memberEventOf(kind string, m store.Member) MemberEvent {
	in := InstanceOf(m)
	return MemberEvent{Kind: kind, Instance: m.ID, Host: in.Host, Address: in.Address, LockCount: m.LockCount, At: m.SeenAt}
}

// sleepCtx waits d or until ctx is done; it reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
