package health_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"

	"github.com/masterjob/masterjob/health"
	"github.com/masterjob/masterjob/store"
)

// ExampleReadiness mounts both probes. A real instance passes its
// executor's Ready method; here a check reports a store outage.
func ExampleReadiness() {
	storeDown := func(context.Context) error { return fmt.Errorf("dial: %w", store.ErrUnavailable) }

	mux := http.NewServeMux()
	mux.Handle("/healthz", health.Liveness())
	mux.Handle("/readyz", health.Readiness(storeDown))

	for _, path := range []string{"/healthz", "/readyz"} {
		rec := httptest.NewRecorder()
		mux.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		fmt.Print(rec.Code, " ", rec.Body)
	}
	// Output:
	// 200 ok
	// 503 not ready: store unreachable
}
