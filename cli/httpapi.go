package cli

import (
	"log/slog"

	"github.com/masterjob/masterjob/controlapi"
)

// controlAPIOptions returns the options of the control API that run and
// serve listen with: apiOptions, and, on a listener other machines reach
// without a token (--http-allow-insecure), every Host accepted: the
// controlapi's rule (without a token, loopback hosts and localhost only)
// would refuse the names they reach it by.
func controlAPIOptions(hc *httpConfig, log *slog.Logger) []controlapi.Option {
	opts := apiOptions(hc, log)
	if hc.insecure {
		opts = append(opts, controlapi.WithAllowedHosts("*"))
	}
	return opts
}
