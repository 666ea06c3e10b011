package etcd

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/masterjob/masterjob/internal/inflight"
	"github.com/masterjob/masterjob/store"
)

// DefaultPrefix is the key prefix of a store unless WithPrefix says
// otherwise.
const DefaultPrefix = "masterjob/"

// ExpiryTick is how late etcd can delete the keys of an expired lease: its
// lessor looks for expired leases every 500 ms. The lease TTL chosen for a
// lease duration leaves room for it (see the package doc).
const ExpiryTick = 500 * time.Millisecond

// maxBatch is how many locks one transaction (or one nested transaction
// per lock) handles: etcd refuses transactions of more than --max-txn-ops
// operations, 128 by default.
const maxBatch = 100

// ErrLeaseTooShort is returned (wrapped) when a lease duration is below
// what etcd can grant: whole seconds, at least the cluster's minimum TTL.
// It is store.ErrLeaseTooShort.
var ErrLeaseTooShort = store.ErrLeaseTooShort

// Store is a store.Store on etcd. It also implements store.Notifier,
// store.History, store.Handoffs and store.Membership. Create it with New
// (on a client of your own) or Open.
type Store struct {
	cli          *clientv3.Client
	ownClient    bool
	prefix       string
	historyLimit int

	// leaseSem serialises the grants and keepalives of this handle's
	// leases, so that concurrent calls for one holder share one lease.
	leaseSem chan struct{}

	mu       sync.Mutex
	closed   bool
	leases   map[leaseKey]*lease
	byID     map[clientv3.LeaseID]*lease
	minTTL   int64 // the cluster's minimum TTL in seconds, once a grant showed it
	announce map[string]*announcement
	// seenLease is the lease each lock's lease key was last seen written
	// with by this handle's subscriptions (deleted with the key): Locks
	// asks for those leases' time left beside its read of the keys, not
	// after it, a round trip less in the successor's read of a lease
	// given to it.
	seenLease map[string]clientv3.LeaseID
	// heldCtl is the control key of each lock this handle's last Acquire
	// or Renew found its caller holding, as read then (nil: absent), and
	// members each member record as this handle's last Members read it:
	// what Transfer's transaction compares, when it goes out without
	// reading first.
	heldCtl map[string]*mvccpb.KeyValue
	members map[string]*mvccpb.KeyValue

	// freed counts the lease keys this handle's subscriptions saw deleted
	// (releases, expiries); Acquire compares it with freedSeen to grant a
	// lease beside its read when a lock has just been freed.
	freed, freedSeen atomic.Uint64

	// ending counts the releases and transfers in flight: AppendEvents
	// waits for them, so that an entry appended meanwhile (from another
	// lock's transition or the control API: an executor reports a release
	// once it returned) does not go to etcd's log ahead of or beside the
	// hand-off's transaction.
	ending inflight.Counter
}

var (
	_ store.Store       = (*Store)(nil)
	_ store.Notifier    = (*Store)(nil)
	_ store.History     = (*Store)(nil)
	_ store.Handoffs    = (*Store)(nil)
	_ store.Membership  = (*Store)(nil)
	_ store.LeaseLimits = (*Store)(nil)
)

// Option configures New and Open.
type Option func(*Store)

// WithPrefix sets the prefix of every key the store writes (default
// DefaultPrefix). Instances that share a prefix share their locks; end it
// with "/" to keep it a directory.
func WithPrefix(p string) Option { return func(s *Store) { s.prefix = p } }

// WithHistoryLimit sets how many history entries the store keeps (default
// store.DefaultHistoryLimit); appends delete the oldest beyond it. A limit
// below 1 is taken as 1.
func WithHistoryLimit(n int) Option { return func(s *Store) { s.historyLimit = max(n, 1) } }

// New returns a store on cli, a client the caller made and closes after
// the store: Close leaves it open. Such a client reconnects as its own
// dial options say; give it ReconnectOption (Open does), or a connection
// lost to an etcd that was down a few seconds comes back seconds after
// etcd does.
func New(cli *clientv3.Client, opts ...Option) (*Store, error) {
	if cli == nil {
		return nil, errors.New("etcd: New: nil client")
	}
	s := &Store{
		cli: cli, prefix: DefaultPrefix, historyLimit: store.DefaultHistoryLimit,
		leaseSem: make(chan struct{}, 1),
		leases:   map[leaseKey]*lease{}, byID: map[clientv3.LeaseID]*lease{},
		announce: map[string]*announcement{},
		heldCtl:  map[string]*mvccpb.KeyValue{}, members: map[string]*mvccpb.KeyValue{},
	}
	for _, o := range opts {
		o(s)
	}
	if err := checkPrefix(s.prefix); err != nil {
		return nil, err
	}
	return s, nil
}

func checkPrefix(p string) error {
	if len(p) > 200 {
		return fmt.Errorf("etcd: key prefix %.40q...: longer than 200 bytes", p)
	}
	if strings.ContainsRune(p, 0) {
		return fmt.Errorf("etcd: key prefix %q: contains a NUL byte", p)
	}
	return nil
}

// Open connects to etcd with cfg and returns a store that owns the client:
// Close closes it. It checks that the cluster answers within ctx and
// cfg.DialTimeout, if set; else, for an etcd that is down, only ctx ends
// the wait. The client reconnects as ReconnectOption says, unless
// cfg.DialOptions says otherwise.
func Open(ctx context.Context, cfg clientv3.Config, opts ...Option) (*Store, error) {
	// First, so that the caller's own options win.
	cfg.DialOptions = append([]grpc.DialOption{ReconnectOption()}, cfg.DialOptions...)
	if cfg.Logger == nil {
		cfg.Logger = quietLogger()
	}
	if cfg.Context == nil {
		cfg.Context = context.Background()
	}
	op := "connect to " + strings.Join(cfg.Endpoints, ",")
	cli, err := clientv3.New(cfg)
	if err != nil {
		switch {
		case permanent(err): // a refused password: retrying would not help
			return nil, fmt.Errorf("etcd: %s: %w", op, err)
		case ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) && cfg.DialTimeout > 0:
			return nil, noAnswer(op, cfg.DialTimeout)
		}
		return nil, fmt.Errorf("etcd: %s: %w: %w", op, store.ErrUnavailable, err)
	}
	s, err := New(cli, opts...)
	if err != nil {
		_ = cli.Close()
		return nil, err
	}
	s.ownClient = true
	// One read proves the endpoints, the credentials and a leader. The
	// client dials in the background (without grpc.WithBlock it does not
	// wait for DialTimeout), and its calls wait for a connection: the read
	// is what DialTimeout bounds, or a caller without a deadline waits as
	// long as etcd is down, and says nothing.
	rctx, cancel := ctx, context.CancelFunc(func() {})
	if cfg.DialTimeout > 0 {
		rctx, cancel = context.WithTimeout(ctx, cfg.DialTimeout)
	}
	defer cancel()
	if _, err := cli.Get(rctx, s.prefix+"k/", clientv3.WithCountOnly(), clientv3.WithPrefix()); err != nil {
		_ = cli.Close()
		// gRPC may end the call on the deadline a moment before rctx
		// itself is done.
		if cfg.DialTimeout > 0 && ctx.Err() == nil && (rctx.Err() != nil || status.Code(err) == codes.DeadlineExceeded) {
			return nil, noAnswer(op, cfg.DialTimeout)
		}
		return nil, s.fail(ctx, op, err)
	}
	return s, nil
}

// noAnswer is the error of an Open that etcd did not answer within the
// dial timeout d.
func noAnswer(op string, d time.Duration) error {
	return fmt.Errorf("etcd: %s: %w: no answer within the dial timeout of %v: %w",
		op, store.ErrUnavailable, d, context.DeadlineExceeded)
}

// ReconnectOption is the gRPC dial option with which a client reconnects
// to etcd soon after it is back: the first new attempt 50 ms after a
// connection is lost (and the attempt at once failed), then 1.6 times
// longer each time, at most 500 ms apart (each ±20 %), and 5 s for one
// attempt to connect.
//
// gRPC's default waits 1 s after the first failed attempt, then 1.6 times
// longer each time up to two minutes. Through a proxy that refused every
// connection for a while, a client with the default answered 1.3–1.4 s
// after an outage of 1.2 s ended, and 2.0–2.5 s after one of 3 or 6.5 s
// (3 runs each); with this option, 0.03–0.34 s after each. At a short
// masterJobTolerance those seconds cost a master its lease, and keep every
// instance of that client from taking a free lock. The price is one TCP
// connection per client every 500 ms to a server that is down.
func ReconnectOption() grpc.DialOption {
	return grpc.WithConnectParams(grpc.ConnectParams{
		Backoff: backoff.Config{
			BaseDelay:  50 * time.Millisecond,
			Multiplier: 1.6,
			Jitter:     0.2,
			MaxDelay:   500 * time.Millisecond,
		},
		MinConnectTimeout: 5 * time.Second,
	})
}

// Client returns the etcd client the store uses.
func (s *Store) Client() *clientv3.Client { return s.cli }

// Prefix returns the key prefix of the store.
func (s *Store) Prefix() string { return s.prefix }

// Close implements store.Store. It closes the client if Open made it, and
// leaves leases to expire.
func (s *Store) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	if s.ownClient {
		return s.cli.Close()
	}
	return nil
}

// begin checks the handle and the context before a call.
func (s *Store) begin(ctx context.Context) error {
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return store.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("etcd: %w", context.Cause(ctx))
	}
	return nil
}

// fail translates an etcd client error: a done context or an unreachable
// cluster wraps store.ErrUnavailable; a refusal that retrying cannot cure
// (permissions, bad requests) does not.
func (s *Store) fail(ctx context.Context, op string, err error) error {
	if ctx.Err() != nil {
		return fmt.Errorf("etcd: %s: %w: %w", op, store.ErrUnavailable, context.Cause(ctx))
	}
	s.mu.Lock()
	closed := s.closed
	s.mu.Unlock()
	if closed {
		return fmt.Errorf("etcd: %s: %w", op, store.ErrClosed)
	}
	if permanent(err) {
		return fmt.Errorf("etcd: %s: %w", op, err)
	}
	return fmt.Errorf("etcd: %s: %w: %w", op, store.ErrUnavailable, err)
}

// permanent reports errors that the same request would meet again.
func permanent(err error) bool {
	if errors.Is(err, ErrLeaseTooShort) {
		return true
	}
	var ee rpctypes.EtcdError
	code := codes.Unknown
	if errors.As(err, &ee) {
		code = ee.Code()
	} else if st, ok := status.FromError(err); ok {
		code = st.Code()
	}
	switch code {
	case codes.InvalidArgument, codes.PermissionDenied, codes.Unauthenticated, codes.FailedPrecondition, codes.OutOfRange:
		return true
	}
	return false
}

func isLeaseNotFound(err error) bool {
	return errors.Is(err, rpctypes.ErrLeaseNotFound) || errors.Is(err, rpctypes.ErrGRPCLeaseNotFound) ||
		(err != nil && strings.Contains(err.Error(), rpctypes.ErrorDesc(rpctypes.ErrGRPCLeaseNotFound)))
}

func validate(locks []string) error {
	for _, l := range locks {
		if err := store.ValidateLockName(l); err != nil {
			return err
		}
	}
	return nil
}

// dedupe returns names without repeats, in their first order.
func dedupe(names []string) []string {
	seen := make(map[string]bool, len(names))
	out := make([]string, 0, len(names))
	for _, n := range names {
		if !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	return out
}

// chunks splits n items into runs of at most maxBatch.
func chunks(n int) [][2]int {
	var out [][2]int
	for i := 0; i < n; i += maxBatch {
		out = append(out, [2]int{i, min(i+maxBatch, n)})
	}
	return out
}

// parallel runs fn(i) for i in [0, n) concurrently and returns the first
// error.
func parallel(n int, fn func(i int) error) error {
	if n == 1 {
		return fn(0)
	}
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = fn(i) })
	}
	wg.Wait()
	return errors.Join(errs...)
}
