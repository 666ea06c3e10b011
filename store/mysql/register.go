package mysql

import "github.com/masterjob/masterjob/storeurl"

// init makes mysql:// and mariadb:// store URLs open this store wherever
// the package is linked (the masterjob command blank-imports it).
func init() {
	for _, scheme := range URLSchemes {
		storeurl.Register(scheme, storeurl.Engine{Usage: URLUsage, Check: CheckURL, Open: OpenURL})
	}
}
