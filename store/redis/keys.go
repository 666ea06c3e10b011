package redis

import (
	"regexp"
	"strings"
)

// Key layout. Every key of one lock carries the lock's name as its hash tag,
// so that in Redis Cluster they live in one hash slot and one script can
// touch them all:
//
//	<prefix>{<lock>}:lease   hash, with a PEXPIRE of the lease: the lease
//	<prefix>{<lock>}:rec     hash, no TTL: control and last lease (the record)
//	<prefix>{<lock>}:tok     string, no TTL: the last token issued
//	<prefix>{<lock>}:resv    string, with a PEXPIRE: the successor a release reserved the lock for
//
// The keys shared by all locks carry the tag "*":
//
//	<prefix>{*}:locks            sorted set: names of known locks (an index)
//	<prefix>{*}:history          stream: the audit history
//	<prefix>{*}:members          sorted set: member ids scored by expiry (ms)
//	<prefix>{*}:member:<id>      hash, with a PEXPIRE: one member's record
//	<prefix>{*}:mlocks:<id>      set, with a PEXPIRE: that member's locks
//
// and the pub/sub channel is <prefix>{*}:changes. In a lock's tag, "%" and
// "}" are escaped ("%25", "%7D"): the tag ends at the first "}", so an
// escaped name can neither end it early nor make two locks' keys equal.
const (
	suffixLease = "lease"
	globalTag   = "*"
)

// DefaultPrefix is the prefix of every key unless WithPrefix says
// otherwise.
const DefaultPrefix = "masterjob:"

// prefixPattern is what WithPrefix and the URL's prefix parameter accept:
// no braces (they would change the hash tag), no spaces or control
// characters.
var prefixPattern = regexp.MustCompile(`^[A-Za-z0-9_:.\-/]{0,64}$`)

var tagEscaper = strings.NewReplacer("%", "%25", "}", "%7D")
var tagUnescaper = strings.NewReplacer("%25", "%", "%7D", "}")

// keys builds the store's key names.
type keys struct{ prefix string }

// lease returns the lease key of lock; the script derives the lock's other
// keys from it by replacing the suffix.
func (k keys) lease(lock string) string {
	return k.prefix + "{" + tagEscaper.Replace(lock) + "}:" + suffixLease
}

func (k keys) global(name string) string { return k.prefix + "{" + globalTag + "}:" + name }

func (k keys) index() string           { return k.global("locks") }
func (k keys) history() string         { return k.global("history") }
func (k keys) memberIndex() string     { return k.global("members") }
func (k keys) member(id string) string { return k.global("member:" + id) }
func (k keys) mlocks(id string) string { return k.global("mlocks:" + id) }
func (k keys) channel() string         { return k.global("changes") }
func (k keys) memberPrefix() string    { return k.global("member:") }

// lockOfKey returns the lock whose key is key, when key is one of this
// store's lease or reservation keys (an expiry event names it).
func (k keys) lockOfKey(key string) (string, bool) {
	rest, ok := strings.CutPrefix(key, k.prefix+"{")
	if !ok {
		return "", false
	}
	tag, suffix, ok := strings.Cut(rest, "}:")
	if !ok || (suffix != suffixLease && suffix != "resv") {
		return "", false
	}
	return tagUnescaper.Replace(tag), true
}

// slotOf returns the Redis Cluster hash slot of key: CRC16 (XMODEM) of the
// key's hash tag (the part between the first "{" and the next "}", when
// non-empty) or of the whole key, modulo 16384.
func slotOf(key string) int {
	if i := strings.IndexByte(key, '{'); i >= 0 {
		if j := strings.IndexByte(key[i+1:], '}'); j > 0 {
			key = key[i+1 : i+1+j]
		}
	}
	return int(crc16(key) % 16384)
}

var crcTable = func() (t [256]uint16) {
	for i := range t {
		c := uint16(i) << 8
		for range 8 {
			if c&0x8000 != 0 {
				c = c<<1 ^ 0x1021
			} else {
				c <<= 1
			}
		}
		t[i] = c
	}
	return t
}()

func crc16(s string) uint16 {
	var c uint16
	for i := 0; i < len(s); i++ {
		c = c<<8 ^ crcTable[byte(c>>8)^s[i]]
	}
	return c
}
