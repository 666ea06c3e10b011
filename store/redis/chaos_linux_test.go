//go:build linux

package redis

import (
	"context"
	"flag"
	"fmt"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/internal/chaos"
	"github.com/masterjob/masterjob/store"
)

// The chaos harness on Redis: the driver (this test) runs instances that
// are this test binary again (chaos.EnvInstance), each reaching the server
// through a proxy of its own, under a key prefix of the run's own. The
// server is the shared one of the other tests (MASTERJOB_TEST_REDIS), which
// the test may not restart: the store-restart fault ends every connection
// of one instance on the server (CLIENT KILL, found by the client name the
// instance gives its connections), as a restart would for that instance. A
// restart of the server would also lose its data unless it persists: that
// is the store-side loss fault. The CI run is short; the long one:
//
//	cd store/redis && go test -run TestChaosRedis -chaos.faults=1000 -chaos.seed=1 -timeout 60m -v
var (
	chaosFaults = flag.Int("chaos.faults", 0, "faults per TestChaosRedis run (default 30)")
	// chaosRunnerFaults sizes the runner-mode run of TestChaosRedis.
	chaosRunnerFaults = flag.Int("chaos.runner-faults", 0, "faults per runner-mode run of TestChaosRedis (default 15)")
	chaosSeed         = flag.Uint64("chaos.seed", 0, "seed of TestChaosRedis's fault schedule (0: random, logged)")
	chaosDir          = flag.String("chaos.dir", "", "work directory of TestChaosRedis's run, kept (default: a temporary one, kept only on failure)")
)

// chaosRun is what the driver process knows of the run under way: the
// key prefix of its namespace, which names its instances' connections.
var chaosRun struct {
	sync.Mutex
	raw, base string
}

func init() {
	chaos.RegisterEngine(chaos.Engine{
		Scheme: SchemeRedis,
		Upstream: func(raw string) (string, error) {
			u, err := ParseURL(raw)
			if err != nil {
				return "", err
			}
			return u.Options.Addr, nil
		},
		Open:     chaosOpen,
		Drop:     chaosDrop,
		Restart:  chaosRestart,
		EndLease: chaosEndLease,
		// Restart ends the connections of the instances' own handles,
		// which a runner's store, opened by URL, is not: runner mode
		// leaves it out.
		RunnerURL: chaosRunnerURL,
	})
	// TestMain runs the driver's processes: this init runs before the one
	// that registers the URL schemes that a runner and its last will open.
	runChaosInstance = chaos.RunIfInstance
}

// chaosPrefix returns the key prefix of namespace ns under the URL's.
func chaosPrefix(u URL, ns string) string {
	p := DefaultPrefix
	if u.Prefix != nil {
		p = *u.Prefix
	}
	return p + ns + ":"
}

// clientName is the name (CLIENT SETNAME) of instance i's connections in
// the run whose key prefix is base.
func clientName(base string, i int) string {
	return strings.NewReplacer(":", "-", "/", "-").Replace(strings.TrimSuffix(base, ":")) + "-i" + strconv.Itoa(i)
}

func chaosOpen(ctx context.Context, raw, ns, via string) (store.Store, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, err
	}
	o := *u.Options
	o.DialTimeout = 2 * time.Second
	base := chaosPrefix(u, ns)
	if i, ok := chaos.Slot(); ok {
		o.ClientName = clientName(base, i)
	} else {
		// The driver's own handle: remember the run for Restart.
		chaosRun.Lock()
		chaosRun.raw, chaosRun.base = raw, base
		chaosRun.Unlock()
	}
	if via != "" {
		o.Addr = via
	}
	u.Options = &o
	return u.Open(ctx, WithPrefix(base), WithLogger(quietLogger))
}

// chaosClient is a direct client of the server (no proxy), for the
// driver's own commands.
func chaosClient(raw string) (*goredis.Client, URL, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return nil, URL{}, err
	}
	o := *u.Options
	o.ContextTimeoutEnabled = true
	return goredis.NewClient(&o), u, nil
}

func chaosDrop(ctx context.Context, raw, ns string) error {
	c, u, err := chaosClient(raw)
	if err != nil {
		return err
	}
	defer c.Close()
	prefix := chaosPrefix(u, ns)
	iter := c.Scan(ctx, 0, prefix+"*", 1000).Iterator()
	var batch []string
	for iter.Next(ctx) {
		batch = append(batch, iter.Val())
	}
	if err := iter.Err(); err != nil {
		return err
	}
	for len(batch) > 0 {
		n := min(len(batch), 1000)
		if err := c.Unlink(ctx, batch[:n]...).Err(); err != nil {
			return err
		}
		batch = batch[n:]
	}
	return nil
}

// chaosRestart ends every connection instance index holds on the server:
// its pool and its pub/sub connection (CLIENT KILL ID, for each client
// that CLIENT LIST shows under the instance's name). The server and its
// data stay; the instance reconnects at its next call.
func chaosRestart(ctx context.Context, index int) (string, bool, error) {
	chaosRun.Lock()
	raw, base := chaosRun.raw, chaosRun.base
	chaosRun.Unlock()
	if base == "" {
		return "", false, fmt.Errorf("no chaos run under way")
	}
	c, _, err := chaosClient(raw)
	if err != nil {
		return "", false, err
	}
	defer c.Close()
	name := clientName(base, index)
	list, err := c.ClientList(ctx).Result()
	if err != nil {
		return "", false, err
	}
	killed := 0
	for line := range strings.SplitSeq(strings.TrimSpace(list), "\n") {
		var id, n string
		for f := range strings.FieldsSeq(line) {
			if v, ok := strings.CutPrefix(f, "id="); ok {
				id = v
			}
			if v, ok := strings.CutPrefix(f, "name="); ok {
				n = v
			}
		}
		if n != name || id == "" {
			continue
		}
		// An already-closed client is not an error: the instance may have
		// just dropped the connection itself.
		k, err := c.ClientKillByFilter(ctx, "ID", id).Result()
		if err != nil && !strings.Contains(err.Error(), "No such client") {
			return "", false, err
		}
		killed += int(k)
	}
	return fmt.Sprintf("CLIENT KILL ended %d connections of instance %d (the server stays up)", killed, index), false, nil
}

// chaosEndLeaseScript ends a lock's lease behind its holder's back and
// returns {token, holder} of the lease it ended ({"0", ""} when none was
// held). KEYS: the lock's lease, rec, tok and resv keys (see keys.go).
// delete removes the lock's keys, all but the name in the lock index, as
// an operator's DEL would, unless the lock is disabled (its record holds
// the control); expire removes the lease key only, leaving what Redis
// leaves when the key's PEXPIRE passes (the record keeps the control and
// the last lease). It deletes the key rather than giving it a short TTL:
// the lease must be over when the call returns, and a renewal that
// arrived within that TTL would extend it.
var chaosEndLeaseScript = goredis.NewScript(`
local h = redis.call('HGET', KEYS[1], 'h')
if not h then return {'0', ''} end
local t = redis.call('HGET', KEYS[1], 't')
if ARGV[1] == 'delete' then
  if redis.call('HGET', KEYS[2], 'd') == '1' then return {'0', ''} end
  redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
else
  redis.call('DEL', KEYS[1])
end
return {t, h}
`)

func chaosEndLease(ctx context.Context, raw, ns, lock, mode string) (int64, string, error) {
	if mode != chaos.LossDelete && mode != chaos.LossExpire {
		return 0, "", fmt.Errorf("store-side loss: no mode %q on redis", mode)
	}
	c, u, err := chaosClient(raw)
	if err != nil {
		return 0, "", err
	}
	defer c.Close()
	lk := keys{prefix: chaosPrefix(u, ns)}.lease(lock)
	stem := strings.TrimSuffix(lk, suffixLease)
	v, err := chaosEndLeaseScript.Run(ctx, c, []string{lk, stem + "rec", stem + "tok", stem + "resv"}, mode).StringSlice()
	if err != nil {
		return 0, "", err
	}
	if len(v) != 2 {
		return 0, "", fmt.Errorf("store-side loss: reply %q", v)
	}
	tok, err := strconv.ParseInt(v[0], 10, 64)
	if err != nil {
		return 0, "", fmt.Errorf("store-side loss: token %q: %w", v[0], err)
	}
	return tok, v[1], nil
}

func TestChaosRedis(t *testing.T) {
	adminClient(t) // skips, or fails in CI, when the server is unreachable
	base := randomPrefix()
	t.Cleanup(func() {
		chaosRun.Lock()
		chaosRun.raw, chaosRun.base = "", ""
		chaosRun.Unlock()
	})
	faults := *chaosFaults
	if faults == 0 {
		faults = 30
	}
	u, err := ParseURL(testURL())
	if err != nil {
		t.Fatal(err)
	}
	q := "prefix=" + base
	raw := testURL()
	if strings.Contains(raw, "?") {
		raw += "&" + q
	} else {
		raw += "?" + q
	}
	cfg := chaos.Config{
		StoreURL:  raw,
		Instances: 3,
		Locks:     2,
		Faults:    faults,
		Seed:      *chaosSeed,
		// The default timing (heartbeat 100 ms, lease 600 ms, check
		// 300 ms): Redis expires keys in milliseconds. Every kind.
		Command: []string{os.Args[0]},
		Dir:     *chaosDir,
	}
	title := fmt.Sprintf("Redis %s at %s", serverVersion(t), u.Options.Addr)
	chaos.RunT(t, cfg, title)
	chaos.RunRunnerT(t, cfg, *chaosRunnerFaults, title)
	// Nothing of the run is left under its prefix.
	if n, err := adminClient(t).Keys(context.Background(), base+"*").Result(); err != nil || len(n) > 0 {
		t.Errorf("keys left under %q: %v (%v)", base, n, err)
	}
}

// serverVersion returns the server's redis_version, for the summary.
func serverVersion(t *testing.T) string {
	info, err := adminClient(t).Info(context.Background(), "server").Result()
	if err != nil {
		return "(version unknown: " + err.Error() + ")"
	}
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "redis_version:"); ok {
			return v
		}
	}
	return "(version unknown)"
}

// chaosRunnerURL is the redis:// URL of namespace ns through via, for
// `masterjob run` (runner mode).
func chaosRunnerURL(raw, ns, via string) (string, error) {
	u, err := ParseURL(raw)
	if err != nil {
		return "", err
	}
	pu, err := url.Parse(raw)
	if err != nil {
		return "", err
	}
	q := pu.Query()
	q.Set("prefix", chaosPrefix(u, ns))
	pu.Host, pu.RawQuery = via, q.Encode()
	return pu.String(), nil
}
