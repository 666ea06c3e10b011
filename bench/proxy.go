//go:build linux

package bench

import "github.com/masterjob/masterjob/internal/pgcount"

// CountingProxy counts the round trips of PostgreSQL clients (package
// pgcount).
type CountingProxy = pgcount.Proxy

// Counts are a CountingProxy's counts.
type Counts = pgcount.Counts

// NewCountingProxy listens on a free local port and forwards to upstream.
func NewCountingProxy(upstream string) (*CountingProxy, error) { return pgcount.New(upstream) }
