package redis_test

import (
	"context"
	"log"

	goredis "github.com/redis/go-redis/v9"

	"github.com/masterjob/masterjob/store/redis"
)

// It needs a server, so go test compiles it but does not run it.
func ExampleOpen() {
	ctx := context.Background()
	// A client of the store's own, from a URL (rediss:// for TLS).
	st, err := redis.Open(ctx, "redis://app:secret@cache:6379/0?prefix=jobs:")
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close() // then masterjob.New(st, ...)
}

// It needs a server, so go test compiles it but does not run it.
func ExampleNew() {
	ctx := context.Background()
	// The application's own client: a *redis.Client (one server, or
	// Sentinel's failover client) or a *redis.ClusterClient. With
	// ContextTimeoutEnabled, every store call is bounded by the call
	// timeout (WithCallTimeout).
	client := goredis.NewClient(&goredis.Options{Addr: "cache:6379", ContextTimeoutEnabled: true})
	defer client.Close()
	st, err := redis.New(ctx, client, redis.WithPrefix("jobs:"))
	if err != nil {
		log.Fatal(err)
	}
	defer st.Close()
}
