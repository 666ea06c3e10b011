//go:build linux

package chaos

import "github.com/masterjob/masterjob/internal/faultproxy"

// Proxy is the fault proxy between one instance and the store's server
// (package faultproxy).
type Proxy = faultproxy.Proxy

// Cut modes of a Proxy.
const (
	CutReset = faultproxy.CutReset
	CutStall = faultproxy.CutStall
)

// NewProxy listens on 127.0.0.1 (a free port) and forwards to upstream.
func NewProxy(upstream string) (*Proxy, error) { return faultproxy.NewProxy(upstream) }
