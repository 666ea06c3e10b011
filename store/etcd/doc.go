// Package etcd is a masterjob store on etcd (go.etcd.io/etcd/client/v3),
// for clusters that already run etcd or outgrow one database.
package etcd
