//go:build !masterjob_noetcd

package main

// The engines kept in modules of their own register their store URL
// schemes (storeurl.Register) when imported; SQLite and PostgreSQL are
// built into package storeurl. Build with -tags masterjob_noetcd to leave
// this one out of the command (a smaller binary that starts faster and
// keeps less resident; its URLs are then refused with a message that
// says so).
import _ "github.com/masterjob/masterjob/store/etcd" // etcd:// and etcds://
