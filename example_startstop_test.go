package masterjob_test

import (
	"context"
	"fmt"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/store/memstore"
)

// The seed's shape: start may return at once and leave work running; stop
// is called once when mastership ends, and only after a start that
// succeeded.
func ExampleStartStop() {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	ex, err := masterjob.New(memstore.New(), masterjob.WithInitDelay(0))
	if err != nil {
		fmt.Println(err)
		return
	}
	start := func(ctx context.Context, l masterjob.Lease) error {
		fmt.Println("start: scheduling jobs with token", l.Token)
		go func() {
			<-ctx.Done() // cancelled when mastership ends: stop the work
		}()
		cancel() // this example stops itself
		return nil
	}
	stop := func(ctx context.Context, l masterjob.Lease) error {
		fmt.Println("stop:", masterjob.StopReason(ctx))
		return nil
	}
	if err := ex.StartMaster("JOB-SCHEDULER", masterjob.StartStop(start, stop)); err != nil {
		fmt.Println(err)
		return
	}
	if err := ex.Run(ctx); err != nil {
		fmt.Println(err)
	}
	// Output:
	// start: scheduling jobs with token 1
	// stop: masterjob: executor shutting down
}
