//go:build linux

// Package faultproxy is a TCP proxy for tests and the chaos harness: it
// sits between a client and a store's server and can cut the path
// (resetting connections, or stalling them) and add latency.
package faultproxy

import (
	"net"
	"sync"
	"testing"
	"time"
)

// Proxy is an in-process TCP proxy between a client (one instance) and the
// store's server. It can cut the path (resetting every connection and refusing new
// ones, or stalling: holding bytes until restored) and add latency to every
// chunk in both directions.
type Proxy struct {
	ln       net.Listener
	upstream string

	mu      sync.Mutex
	cond    *sync.Cond
	mode    string // "", "reset" or "stall"
	latency time.Duration
	conns   map[net.Conn]struct{}
	closed  bool
	// accepted counts the connections accepted, refused ones included.
	accepted int
	wg       sync.WaitGroup
}

// Cut modes.
const (
	CutReset = "reset" // close every connection at once, refuse new ones
	CutStall = "stall" // accept and hold every byte until the cut ends
)

// NewProxy listens on 127.0.0.1 (a free port) and forwards to upstream.
func NewProxy(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, conns: map[net.Conn]struct{}{}}
	p.cond = sync.NewCond(&p.mu)
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Start is NewProxy for a test: it fails t when the proxy cannot listen,
// and closes the proxy when t ends.
func Start(t testing.TB, upstream string) *Proxy {
	t.Helper()
	p, err := NewProxy(upstream)
	if err != nil {
		t.Fatalf("faultproxy: %v", err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr returns the address instances connect to.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Cut starts a cut in mode (CutReset or CutStall).
func (p *Proxy) Cut(mode string) {
	p.mu.Lock()
	p.mode = mode
	var victims []net.Conn
	if mode == CutReset {
		for c := range p.conns {
			victims = append(victims, c)
		}
	}
	p.mu.Unlock()
	for _, c := range victims {
		_ = c.Close()
	}
}

// Restore ends a cut. Connections stalled by it resume with the bytes they
// held (a client that gave up on them has closed them already).
func (p *Proxy) Restore() {
	p.mu.Lock()
	p.mode = ""
	p.cond.Broadcast()
	p.mu.Unlock()
}

// Accepted returns how many connections the proxy has accepted, those a
// cut refused at once included: how often clients tried to connect.
func (p *Proxy) Accepted() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.accepted
}

// SetLatency delays every chunk forwarded in either direction by d.
func (p *Proxy) SetLatency(d time.Duration) {
	p.mu.Lock()
	p.latency = d
	p.mu.Unlock()
}

// Close stops the proxy and closes every connection; it waits for its
// goroutines.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	p.mode = ""
	p.cond.Broadcast()
	conns := make([]net.Conn, 0, len(p.conns))
	for c := range p.conns {
		conns = append(conns, c)
	}
	p.mu.Unlock()
	err := p.ln.Close()
	for _, c := range conns {
		_ = c.Close()
	}
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return false
	}
	p.conns[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.conns, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.accepted++
		refuse := p.mode == CutReset
		p.mu.Unlock()
		if refuse || !p.track(c) {
			_ = c.Close()
			continue
		}
		p.wg.Add(1)
		go p.serve(c)
	}
}

func (p *Proxy) serve(client net.Conn) {
	defer p.wg.Done()
	defer p.untrack(client)
	// A stalled path does not even reach the server.
	if !p.waitOpen() {
		return
	}
	server, err := net.DialTimeout("tcp", p.upstream, 5*time.Second)
	if err != nil {
		return
	}
	if !p.track(server) {
		_ = server.Close()
		return
	}
	defer p.untrack(server)
	done := make(chan struct{}, 2)
	go func() { p.pipe(server, client); done <- struct{}{} }()
	go func() { p.pipe(client, server); done <- struct{}{} }()
	<-done
	// One direction ended: end both (closing unblocks the other copier).
	_ = client.Close()
	_ = server.Close()
	<-done
}

// waitOpen blocks while the path is stalled; it reports false when the
// proxy closed or the path was reset meanwhile.
func (p *Proxy) waitOpen() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.mode == CutStall && !p.closed {
		p.cond.Wait()
	}
	return !p.closed && p.mode != CutReset
}

// pipe copies src to dst chunk by chunk, applying the cut and the latency
// in force when each chunk arrives.
func (p *Proxy) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			lat := p.latency
			p.mu.Unlock()
			if lat > 0 {
				time.Sleep(lat)
			}
			if !p.waitOpen() {
				return
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return // EOF or a closed connection: the caller closes both
		}
	}
}
