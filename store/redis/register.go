package redis

import "github.com/masterjob/masterjob/storeurl"

// init makes redis:// and rediss:// store URLs open this store wherever
// the package is linked (the masterjob command blank-imports it).
func init() {
	for _, scheme := range []string{SchemeRedis, SchemeRediss} {
		storeurl.Register(scheme, storeurl.Engine{Usage: URLUsage, Check: CheckURL, Open: OpenURL})
	}
}
