package cli

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/storeurl"
)

const serveUsage = `usage: masterjob serve --http ADDR [--store URL] [--http-token TOKEN] [flags]

Serves, on ADDR, for operators and monitoring, without running a job:

  /api/mastercontrols  the control API: every lock's master, token, lease
                       and control; disable, enable; the history
  /                    the dashboard, a page on that API
  /metrics             Prometheus metrics: the store's view of every lock
                       (masterjob_lock_has_master, _disabled, _token,
                       _ttl_seconds), Go runtime and process
  /healthz             liveness: 200 while the process serves
  /readyz              readiness: 200 while the store answers

Settings: a flag wins over the environment. The store is --store, else
$` + EnvStore + `, else sqlite:masterjob.db; while it cannot be reached the
server logs the error and keeps retrying, and /readyz answers 503. The
token is --http-token, else $` + EnvHTTPToken + `.

SIGINT or SIGTERM shuts the server down gracefully (requests still running
get a few seconds) with exit status 0.

` + httpSecurityHelp

// serveFlags are the flags of serve.
type serveFlags struct {
	fs        *flag.FlagSet
	store     string
	http      httpFlags
	logFormat choiceValue
	logLevel  choiceValue
}

func newServeFlags() *serveFlags {
	f := &serveFlags{
		fs:        newFlagSet("serve"),
		logFormat: choiceValue{"text", []string{"text", "json"}},
		logLevel:  choiceValue{"info", []string{"debug", "info", "warn", "error"}},
	}
	f.http.register(f.fs, true)
	f.fs.StringVar(&f.store, "store", "", "the store `URL` (default $"+EnvStore+", else "+storeurl.DefaultURL+")")
	f.fs.Var(&f.logFormat, "log-format", "log format on stderr: `text|json`")
	f.fs.Var(&f.logLevel, "log-level", "least level logged: `debug|info|warn|error`")
	return f
}

var serveCommand = &command{
	name:     "serve",
	synopsis: "serve the control API, dashboard and metrics without running a job",
	usage:    serveUsage,
	flags:    func() *flag.FlagSet { return newServeFlags().fs },
	run:      serveMain,
}

func serveMain(e *cmdEnv, c *command, args []string) int {
	f := newServeFlags()
	if ok, code := parse(e, c, f.fs, args); !ok {
		return code
	}
	if f.fs.NArg() > 0 {
		return reportUsage(e, c, unexpectedArg(f.fs))
	}
	hc, err := f.http.resolve(e, f.fs, true)
	if err != nil {
		return reportUsage(e, c, err)
	}
	u, err := storeurl.Parse(storeURL(e, f.store, storeurl.DefaultURL))
	if err != nil {
		return reportUsage(e, c, usageError("--store: %w", err))
	}
	log := newLogger(e.stderr, f.logFormat.value, f.logLevel.value)
	defer flushLog(log)
	hc.warnInsecure(log)

	ctx, cancel := context.WithCancelCause(e.ctx)
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case s := <-sigs:
			log.Info("signal received: shutting down", "signal", s.String())
			cancel(fmt.Errorf("%w %v", errSignal, s))
		case <-ctx.Done():
		}
	}()

	reg := newRegistry()
	hs, err := listenHTTP(ctx, hc, startingHandler(reg, log), log)
	if err != nil {
		log.Error("cannot serve HTTP", "err", err)
		return ExitFailure
	}
	defer hs.shutdown()

	st, err := openStore(ctx, u, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the store could be opened", "reason", context.Cause(ctx))
			return ExitOK
		}
		log.Error("cannot open the store", "store", u.String(), "err", err)
		return ExitFailure
	}
	closeStore := sync.OnceFunc(func() {
		if err := st.Close(); err != nil {
			log.Warn("closing the store", "err", err)
		}
	})
	defer closeStore()
	// The control API gets a store handle of its own, apart from the
	// readiness check's.
	apiSt, err := openStore(ctx, u, log)
	if err != nil {
		if ctx.Err() != nil {
			log.Info("stopped before the store could be opened", "reason", context.Cause(ctx))
			return ExitOK
		}
		log.Error("cannot open the store for the control API", "store", u.String(), "err", err)
		return ExitFailure
	}
	closeAPIStore := sync.OnceFunc(func() { _ = apiSt.Close() })
	defer closeAPIStore()
	api, err := controlapi.New(apiSt, controlAPIOptions(hc, log)...)
	if err != nil {
		log.Error("cannot create the control API", "err", err)
		return ExitFailure
	}
	if err := registerStoreMetrics(reg, st); err != nil {
		log.Error("cannot create the metrics", "err", err)
		return ExitFailure
	}
	hs.setHandler(httpserver.New(httpserver.Config{
		Logger:       log,
		API:          api,
		Gatherer:     reg,
		Ready:        health.StorePing(st),
		ReadyOptions: []health.Option{health.WithLogger(log)},
	}))
	log.Info("serving the control API", "store", u.String(), "http_addr", hs.addr.String(), "token", hc.token != "")

	code := ExitOK
	select {
	case <-ctx.Done():
	case <-hs.stopped():
		code = ExitFailure // logged by shutdown
	}
	hs.shutdown() // before the store closes: running requests use it
	closeAPIStore()
	closeStore()
	log.Info("stopped", "reason", context.Cause(ctx), "exit_code", code)
	return code
}
