// Package cpuprio lowers the CPU priority of a process whose remaining
// work is not urgent: a runner that has released its leases and is
// shutting down, or a supervisor whose command has exited. On a host that
// also runs the successor, its start (a store round trip, then the
// command's exec) must not wait behind their exit: tearing down the
// address space of a Go process alone costs a few milliseconds of CPU.
package cpuprio

// Step is how many nice levels Lower adds, up to 19: enough that a task
// at the default priority gets about nine tenths of a CPU both want
// (weights 1024 against 110), not so many that the lowered process
// starves on a host busy with other work.
const Step = 10
