package controlapi

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
)

// ErrInsecureListener is returned (wrapped) by CheckListenAddr for an
// address other machines can reach when no token protects the API.
var ErrInsecureListener = errors.New("controlapi: refusing to serve the control API without a token on an address other machines can reach")

// CheckListenAddr reports whether the control API may listen on addr (a
// host:port as net.Listen takes it). A loopback address (127.0.0.0/8, ::1,
// "localhost") is always allowed; any other address, including an empty
// host (every interface), only with a token (tokenSet) or when the user
// explicitly allows an unauthenticated listener (allowInsecure). Host names
// other than "localhost" are not resolved and count as reachable. A
// malformed address is an error too.
func CheckListenAddr(addr string, tokenSet, allowInsecure bool) error {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf("controlapi: listen address %q: %w", addr, err)
	}
	if tokenSet || allowInsecure || isLoopback(host) {
		return nil
	}
	where := "host " + host
	if host == "" {
		where = "every interface"
	}
	return fmt.Errorf("%w: %q listens on %s; set a bearer token, listen on a loopback address, or explicitly allow an unauthenticated listener",
		ErrInsecureListener, addr, where)
}

func isLoopback(host string) bool {
	if strings.EqualFold(strings.TrimSuffix(host, "."), "localhost") {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}
