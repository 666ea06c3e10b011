//go:build linux

package pgcount

import (
	"encoding/binary"
	"io"
	"net"
	"testing"
	"time"
)

// typed builds a frontend message of type typ with body.
func typed(typ byte, body string) []byte {
	b := []byte{typ, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(b[1:], uint32(4+len(body)))
	return append(b, body...)
}

// untyped builds an untyped message (SSLRequest, StartupMessage) with code.
func untyped(code uint32, rest string) []byte {
	b := make([]byte, 8, 8+len(rest))
	binary.BigEndian.PutUint32(b, uint32(8+len(rest)))
	binary.BigEndian.PutUint32(b[4:], code)
	return append(b, rest...)
}

func TestProxyCountsRoundTrips(t *testing.T) {
	upstream, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer upstream.Close()
	received := make(chan int64, 1)
	go func() {
		c, err := upstream.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		n, _ := io.Copy(io.Discard, c)
		received <- n
	}()
	p, err := New(upstream.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c, err := net.Dial("tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	var msgs []byte
	msgs = append(msgs, untyped(sslRequestCode, "")...)
	msgs = append(msgs, untyped(196608, "user\x00postgres\x00\x00")...) // protocol 3.0
	// One extended-protocol call (one round trip), then a simple query.
	for _, typ := range []byte{'P', 'B', 'D', 'E', 'S'} {
		msgs = append(msgs, typed(typ, "xx")...)
	}
	msgs = append(msgs, typed('Q', "SELECT 1\x00")...)
	msgs = append(msgs, typed('X', "")...)
	if _, err := c.Write(msgs); err != nil {
		t.Fatal(err)
	}
	c.Close()
	select {
	case n := <-received:
		if n != int64(len(msgs)) {
			t.Fatalf("upstream got %d bytes, want %d", n, len(msgs))
		}
	case <-time.After(5 * time.Second):
		t.Fatal("upstream got nothing")
	}
	got := p.Counts()
	if got.RoundTrips() != 2 {
		t.Errorf("round trips = %d, want 2 (one Sync, one Query): %v", got.RoundTrips(), got.Messages)
	}
	for _, typ := range []byte{'P', 'B', 'D', 'E', 'S', 'Q', 'X'} {
		if got.Messages[typ] != 1 {
			t.Errorf("%c counted %d times, want 1", typ, got.Messages[typ])
		}
	}
}
