package postgres_test

import (
	"context"
	"log"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/masterjob/masterjob/store/postgres"
)

// It needs a server, so go test compiles it but does not run it.
func ExampleOpen() {
	ctx := context.Background()
	// A pool of the store's own; the tables are created, or migrated, on
	// first use.
	st, err := postgres.Open(ctx, "postgres://app@db:5432/app", postgres.WithSchema("masterjob"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close() // then masterjob.New(st, ...)
}

// It needs a server, so go test compiles it but does not run it.
func ExampleNew() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@db:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	// The application's own pool: every store call is bounded by a timeout
	// (WithCallTimeout), so renewals cannot starve behind its queries.
	st, err := postgres.New(ctx, pool, postgres.WithSchema("masterjob"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
}
