//go:build !masterjob_noetcd

package main

func init() { builtWith["etcd"] = true }
