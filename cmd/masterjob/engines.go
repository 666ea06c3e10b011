package main

// The engines kept in modules of their own register their store URL
// schemes (storeurl.Register) when imported. SQLite and PostgreSQL are
// built into package storeurl.
import (
	_ "github.com/masterjob/masterjob/store/etcd"  // etcd:// and etcds://
	_ "github.com/masterjob/masterjob/store/mysql" // mysql:// and mariadb://
	_ "github.com/masterjob/masterjob/store/redis" // redis:// and rediss://
)
