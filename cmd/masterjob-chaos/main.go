//go:build linux

// Command masterjob-chaos is the chaos harness of masterjob: it runs
// instances of an executor as separate processes on one store, injects
// faults and checks masterjob's promises. See docs/chaos.md.
//
//	go run ./cmd/masterjob-chaos --store sqlite:/tmp/chaos.db --instances 4 --locks 3 --faults 1000 --seed 1
package main

import (
	"os"

	"github.com/masterjob/masterjob/internal/chaos"
)

func main() { os.Exit(chaos.Main(os.Args[1:], os.Stdout, os.Stderr)) }
