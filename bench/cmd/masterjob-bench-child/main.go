//go:build linux

// Command masterjob-bench-child is the job that masterjob-bench runs under
// `masterjob run`: it reports its start (with its CLOCK_MONOTONIC reading)
// to the benchmark, then runs until SIGTERM. It imports only the standard
// library so that it starts fast.
package main

import (
	"os"

	"github.com/masterjob/masterjob/bench/internal/probe"
)

func main() { os.Exit(probe.Child()) }
