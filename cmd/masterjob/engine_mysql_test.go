//go:build !masterjob_nomysql

package main

func init() { builtWith["mysql"] = true }
