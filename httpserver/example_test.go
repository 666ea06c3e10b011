package httpserver_test

import (
	"context"
	"fmt"
	"log"
	"net/http/httptest"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/masterjob/masterjob"
	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/dashboard"
	"github.com/masterjob/masterjob/httpserver"
	"github.com/masterjob/masterjob/metrics/prom"
	"github.com/masterjob/masterjob/store/memstore"
)

// ExampleNew composes the control API, metrics, probes and dashboard of an
// instance that runs an executor.
func ExampleNew() {
	st := memstore.New() // in production: sqlite.Open or postgres.Open
	defer st.Close()

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	obs, err := prom.NewObserver(reg, prom.WithLocks("JOB-SCHEDULER"))
	if err != nil {
		log.Fatal(err)
	}
	ex, err := masterjob.New(st, masterjob.WithObserver(obs))
	if err != nil {
		log.Fatal(err)
	}
	// In production the API gets a store handle of its own, a second
	// sqlite.Open or postgres.Open of the same database: its requests then
	// never hold the connections the executor's renewals need. (A second
	// memstore.New would be another store.)
	api, err := controlapi.New(st, controlapi.WithToken("change-me"))
	if err != nil {
		log.Fatal(err)
	}
	h := httpserver.New(httpserver.Config{
		API:       api,
		Gatherer:  reg,
		Ready:     func(context.Context) error { return ex.Ready() },
		Dashboard: []dashboard.Option{dashboard.WithTitle("billing")},
	})
	// httpserver.Listen(ctx, addr, httpserver.ServerConfig{Handler: h}),
	// after controlapi.CheckListenAddr(addr, ...)

	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/readyz", nil))
	fmt.Print(rec.Code, " ", rec.Body) // Run is not running in this example
	// Output: 503 not ready: executor not running
}
