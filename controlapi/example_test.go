package controlapi_test

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"

	"github.com/masterjob/masterjob/controlapi"
	"github.com/masterjob/masterjob/store/memstore"
)

// ExampleNew mounts the control API in an application's own ServeMux,
// protected by a token, and disables a lock through it.
func ExampleNew() {
	st := memstore.New() // in production: sqlite.Open or postgres.Open

	h, err := controlapi.New(st, controlapi.WithToken("change-me"))
	if err != nil {
		log.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle("/api/mastercontrols", h)
	mux.Handle("/api/mastercontrols/", h)
	// ... the application's own routes ...

	req := httptest.NewRequest("POST", "/api/mastercontrols/disable",
		strings.NewReader(`{"lockName": "JOB-SCHEDULER", "reason": "testing"}`))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer change-me")
	rec := httptest.NewRecorder()
	mux.ServeHTTP(rec, req)

	var res controlapi.ControlResult
	if err := json.NewDecoder(rec.Body).Decode(&res); err != nil {
		log.Fatal(err)
	}
	fmt.Println(rec.Code, res.Changed, res.Lock.Disabled, res.Lock.Reason)
	// Output: 200 true true testing
}

// ExampleCheckListenAddr shows the check a server makes before it listens.
func ExampleCheckListenAddr() {
	fmt.Println(controlapi.CheckListenAddr("127.0.0.1:8080", false, false))
	fmt.Println(controlapi.CheckListenAddr(":8080", true, false))
	fmt.Println(controlapi.CheckListenAddr(":8080", false, false) != nil)
	// Output:
	// <nil>
	// <nil>
	// true
}
