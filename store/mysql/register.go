package mysql

import (
	"context"

	"github.com/masterjob/masterjob/store"
	"github.com/masterjob/masterjob/storeurl"
)

// init makes mysql:// and mariadb:// store URLs open this store wherever
// the package is linked (the masterjob command blank-imports it). A URL
// marked storeurl.URL.WithoutMigrate opens with WithoutMigrate.
func init() {
	for _, scheme := range URLSchemes {
		storeurl.Register(scheme, storeurl.Engine{Usage: URLUsage, Check: CheckURL, Open: OpenURL,
			OpenExisting: func(ctx context.Context, raw string) (store.Store, error) {
				return openURL(ctx, raw, WithoutMigrate())
			}})
	}
}
