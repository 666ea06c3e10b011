//go:build !masterjob_noredis

package main

func init() { builtWith["redis"] = true }
