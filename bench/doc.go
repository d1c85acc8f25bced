// Package bench compares Exchange with what a Go user would build instead:
// a raw gRPC bidirectional stream with hand-rolled correlation, and NATS
// request-reply through an in-process nats-server. Every contender runs in this
// process over loopback TCP, one at a time in the same run, so the figures
// compare as ratios (docs/benchmarks.md).
//
// It is a separate module so that NATS stays out of the library's go.mod.
//
//	cd bench && go test -run '^$' -bench . -benchmem
package bench
