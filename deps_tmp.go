package masterjob

import (
	_ "github.com/jackc/pgx/v5/pgxpool"
	_ "go.uber.org/goleak"
	_ "golang.org/x/sys/unix"
	_ "modernc.org/sqlite"
)
