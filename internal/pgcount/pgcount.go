//go:build linux

// Package pgcount counts the round trips a PostgreSQL client makes: a TCP
// proxy that parses the frontend protocol. The benchmarks and the
// PostgreSQL store's tests use it to check that a call is one round trip.
package pgcount

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Proxy is a TCP proxy in front of a PostgreSQL server that parses
// the frontend (client-to-server) protocol and counts the client's messages
// by type. It counts a round trip for every Sync ('S') and every simple
// Query ('Q'): each is answered by exactly one ReadyForQuery, so the client
// waits for the server once per Sync or Query, however many Parse, Bind,
// Describe and Execute messages precede the Sync. Server bytes are copied
// unparsed.
type Proxy struct {
	ln       net.Listener
	upstream string

	msgs     [256]atomic.Int64
	conns    atomic.Int64
	bytesIn  atomic.Int64 // client → server
	bytesOut atomic.Int64 // server → client

	mu     sync.Mutex
	open   map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// New listens on 127.0.0.1 (a free port) and forwards to upstream
// (host:port).
func New(upstream string) (*Proxy, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	p := &Proxy{ln: ln, upstream: upstream, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	return p, nil
}

// Addr is the proxy's address.
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Counts is a snapshot of the proxy's counters.
type Counts struct {
	// Messages counts client messages by type byte (the startup message,
	// which has none, is not counted).
	Messages map[byte]int64
	Conns    int64
	BytesIn  int64
	BytesOut int64
}

// RoundTrips is the number of Sync and simple Query messages.
func (c Counts) RoundTrips() int64 { return c.Messages['S'] + c.Messages['Q'] }

// Sub returns c - o.
func (c Counts) Sub(o Counts) Counts {
	d := Counts{Messages: map[byte]int64{}, Conns: c.Conns - o.Conns, BytesIn: c.BytesIn - o.BytesIn, BytesOut: c.BytesOut - o.BytesOut}
	for k, v := range c.Messages {
		if n := v - o.Messages[k]; n != 0 {
			d.Messages[k] = n
		}
	}
	return d
}

// Counts returns the counters now.
func (p *Proxy) Counts() Counts {
	c := Counts{Messages: map[byte]int64{}, Conns: p.conns.Load(), BytesIn: p.bytesIn.Load(), BytesOut: p.bytesOut.Load()}
	for i := range p.msgs {
		if n := p.msgs[i].Load(); n != 0 {
			c.Messages[byte(i)] = n
		}
	}
	return c
}

// Close stops the proxy and cuts every connection.
func (p *Proxy) Close() error {
	p.mu.Lock()
	p.closed = true
	for c := range p.open {
		_ = c.Close()
	}
	p.mu.Unlock()
	err := p.ln.Close()
	p.wg.Wait()
	return err
}

func (p *Proxy) track(c net.Conn) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		_ = c.Close()
		return false
	}
	p.open[c] = struct{}{}
	return true
}

func (p *Proxy) untrack(c net.Conn) {
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
	_ = c.Close()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		client, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.conns.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			p.serve(client)
		}()
	}
}

func (p *Proxy) serve(client net.Conn) {
	if !p.track(client) {
		return
	}
	defer p.untrack(client)
	server, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return
	}
	if !p.track(server) {
		return
	}
	defer p.untrack(server)
	done := make(chan struct{})
	go func() {
		defer close(done)
		n, _ := io.Copy(client, server)
		p.bytesOut.Add(n)
		_ = client.Close()
	}()
	_ = p.forward(server, client)
	_ = server.Close()
	<-done
}

// Codes of the untyped messages that may precede the startup message.
const (
	sslRequestCode    = 80877103
	gssEncRequestCode = 80877104
	cancelRequestCode = 80877102
)

// forward copies client messages to server, counting them.
func (p *Proxy) forward(server io.Writer, client io.Reader) error {
	r := bufio.NewReaderSize(client, 64<<10)
	hdr := make([]byte, 5)
	// Untyped messages: an SSL or GSS encryption request (answered with one
	// byte, then the startup message follows), a cancel request, or the
	// startup message.
	for {
		if _, err := io.ReadFull(r, hdr[:4]); err != nil {
			return err
		}
		n := int64(binary.BigEndian.Uint32(hdr[:4]))
		if n < 8 {
			return fmt.Errorf("bench proxy: bad startup length %d", n)
		}
		body := make([]byte, n-4)
		if _, err := io.ReadFull(r, body); err != nil {
			return err
		}
		if err := writeAll(server, hdr[:4], body); err != nil {
			return err
		}
		p.bytesIn.Add(n)
		code := binary.BigEndian.Uint32(body[:4])
		if code == cancelRequestCode {
			return nil
		}
		if code != sslRequestCode && code != gssEncRequestCode {
			break
		}
	}
	for {
		if _, err := io.ReadFull(r, hdr); err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		n := int64(binary.BigEndian.Uint32(hdr[1:]))
		if n < 4 {
			return fmt.Errorf("bench proxy: bad message length %d", n)
		}
		p.msgs[hdr[0]].Add(1)
		if _, err := server.Write(hdr); err != nil {
			return err
		}
		if _, err := io.CopyN(server, r, n-4); err != nil {
			return err
		}
		p.bytesIn.Add(1 + n)
	}
}

func writeAll(w io.Writer, bufs ...[]byte) error {
	for _, b := range bufs {
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}
