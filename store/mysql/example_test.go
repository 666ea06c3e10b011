package mysql_test

import (
	"context"
	"database/sql"
	"log"

	"github.com/masterjob/masterjob/store/mysql"
)

// It needs a server, so go test compiles it but does not run it.
func ExampleOpenURL() {
	ctx := context.Background()
	// A pool of the store's own, from a URL (mariadb:// too).
	st, err := mysql.OpenURL(ctx, "mysql://app:secret@db:3306/app?prefix=masterjob_")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close() // then masterjob.New(st, ...)
}

// It needs a server, so go test compiles it but does not run it.
func ExampleNew() {
	ctx := context.Background()
	// The application's *sql.DB: it must allow several statements per
	// query (multiStatements=true), which is why a *sql.DB of the store's
	// own is better. Every store call is bounded by the call timeout
	// (WithCallTimeout), its wait for a connection included.
	db, err := sql.Open("mysql", "app:secret@tcp(db:3306)/app?multiStatements=true")
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	st, err := mysql.New(ctx, db, mysql.WithTablePrefix("masterjob_"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
}
