// Package bench measures what masterjob promises about time and cost:
// crash failover, graceful handoff (SIGTERM of the master's runner, and an
// operator's hand-off through the control API), disable and enable latency, the
// SIGSTOP/SIGCONT stop time, store round trips per instance as the number of
// locks grows, and the idle CPU and memory of a runner. The command
// bench/cmd/masterjob-bench runs it; bench/cmd/masterjob-bench-rounds runs
// it in rounds, builds in turn, and pools the rounds (Pool, with bootstrap
// intervals: QuantileCI, RatioCI); docs/benchmarks.md has the commands and
// the figures.
//
// The process scenarios run real `masterjob run` processes (the binary built
// once with go build) on a real store, with the instrumented child of
// package bench/internal/probe as their command. A child reports its start
// with its CLOCK_MONOTONIC reading; the benchmark reads the same clock just
// before it signals a runner, and watches a child's exit through a pidfd, so
// every interval is measured on one system-wide clock with microsecond
// precision and without polling. A starting child also looks at the one the
// benchmark last saw start, so that a watch that wakes late on a busy host
// is not mistaken for two children at once (exitBefore).
//
// The round-trip scenario runs library executors in this process. On
// PostgreSQL the measured executor reaches the server through a TCP proxy
// that parses the frontend protocol and counts round trips (a Sync, or a
// simple Query, each answered by one ReadyForQuery); on SQLite it uses a
// wrapper store that counts calls (each call is one transaction).
//
// Every scenario checks correctness as it goes (a new child started, with a
// greater token, after the old one had exited), so the short smoke test in
// bench_test.go can assert correctness and leave timing to the long runs.
package bench
