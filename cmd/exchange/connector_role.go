package main

import "log/slog"

// onPrimary returns the connector's OnPrimary callback: it prints the
// PRIMARY/REPLICA line on stdout (through say; e2e tests parse it) and logs
// the change, so that --log-format json sees it too. id is called at each
// change (the connector's id is known once it is built).
func onPrimary(say func(format string, args ...any), log *slog.Logger, id func() string, target string) func(bool, uint64) {
	return func(primary bool, epoch uint64) {
		connector := id()
		if primary {
			say("PRIMARY connector=%s target=%s epoch=%d: this connector is now the primary", connector, target, epoch)
			log.Info("primary: this connector is now the target's primary", "connector", connector, "target", target, "epoch", epoch)
			return
		}
		say("REPLICA connector=%s target=%s epoch=%d: this connector is not the primary", connector, target, epoch)
		log.Info("replica: this connector is not the target's primary", "connector", connector, "target", target, "epoch", epoch)
	}
}
