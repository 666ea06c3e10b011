package childproc

import (
	"os/exec"
	"slices"
	"syscall"
	"testing"
	"time"
)

// BenchmarkStop measures Stop of a child that exits at once on SIGTERM
// (sleep): from the call until the child is reaped (done) and until every
// descendant is gone (Stop's return), against a plain exec.Cmd signalled and
// waited for by its parent.
func BenchmarkStop(b *testing.B) {
	b.Run("supervised", func(b *testing.B) {
		var done, gone []time.Duration
		for b.Loop() {
			p, err := Start(Spec{Path: "sleep", Args: []string{"600"}})
			if err != nil {
				b.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the child has exec'd sleep
			t0 := time.Now()
			ch := make(chan time.Duration, 1)
			go func() { <-p.Done(); ch <- time.Since(t0) }()
			p.Stop(time.Now().Add(10 * time.Second))
			gone = append(gone, time.Since(t0))
			done = append(done, <-ch)
		}
		report(b, "done", done)
		report(b, "gone", gone)
	})
	b.Run("exec", func(b *testing.B) {
		var gone []time.Duration
		for b.Loop() {
			c := exec.Command("sleep", "600")
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond)
			t0 := time.Now()
			_ = c.Process.Signal(syscall.SIGTERM)
			_ = c.Wait()
			gone = append(gone, time.Since(t0))
		}
		report(b, "gone", gone)
	})
}

func report(b *testing.B, name string, ds []time.Duration) {
	slices.Sort(ds)
	b.ReportMetric(float64(ds[len(ds)/2].Microseconds())/1000, name+"-p50-ms")
	b.ReportMetric(float64(ds[len(ds)*99/100].Microseconds())/1000, name+"-p99-ms")
}

// BenchmarkStart measures a start through a standby supervisor (prepared
// ahead, as a follower's runner has one) until Start returns and until the
// command (true) has exited, against exec.Cmd.
func BenchmarkStart(b *testing.B) {
	b.Run("standby", func(b *testing.B) {
		var started, exited []time.Duration
		for b.Loop() {
			sb, err := Prepare(Spec{Path: "true"})
			if err != nil {
				b.Fatal(err)
			}
			time.Sleep(20 * time.Millisecond) // the standby is ready
			t0 := time.Now()
			p, err := sb.Start(nil)
			if err != nil {
				b.Fatal(err)
			}
			started = append(started, time.Since(t0))
			<-p.Done()
			exited = append(exited, time.Since(t0))
			p.Wait()
			sb.Close()
		}
		report(b, "started", started)
		report(b, "exited", exited)
	})
	b.Run("exec", func(b *testing.B) {
		var started, exited []time.Duration
		for b.Loop() {
			t0 := time.Now()
			c := exec.Command("true")
			if err := c.Start(); err != nil {
				b.Fatal(err)
			}
			started = append(started, time.Since(t0))
			_ = c.Wait()
			exited = append(exited, time.Since(t0))
		}
		report(b, "started", started)
		report(b, "exited", exited)
	})
}
