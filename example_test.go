package masterjob_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// Example is a whole program: README.md shows it as package main, with
// main for Example. It runs one job on whichever instance the store elects.
func Example() {
	// Run until SIGINT or SIGTERM: then the job stops, the lease is released
	// and another instance takes over at once.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	// memstore lives in this process only. Instances that elect one master
	// share a store: sqlite.Open("masterjob.db") on one host,
	// postgres.Open(ctx, dsn) beyond.
	st := memstore.New()
	defer st.Close()

	ex, err := masterjob.New(st, masterjob.WithLogger(slog.Default()), masterjob.WithInitDelay(0))
	if err != nil {
		fmt.Println(err) // an invalid setting: the message names it and its source
		return
	}

	// The job runs while this instance is master, until its context is
	// cancelled; Lease.Token is its fencing token.
	err = ex.StartMaster("JOB-SCHEDULER", masterjob.JobFunc(func(ctx context.Context, l masterjob.Lease) error {
		fmt.Printf("master of %s with token %d\n", l.Lock, l.Token)
		stop() // this example stops itself; a program runs until a signal
		<-ctx.Done()
		fmt.Println("stopped:", masterjob.StopReason(ctx))
		return nil
	}))
	if err != nil {
		fmt.Println(err)
		return
	}

	// Run elects, runs and renews until ctx is done, then stops the jobs,
	// releases their leases and returns.
	if err := ex.Run(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// master of JOB-SCHEDULER with token 1
	// stopped: masterjob: executor shutting down
}
