// Package bench compares Exchange with what a Go user would build instead,
// side by side in one process: a raw gRPC bidirectional stream with
// hand-rolled correlation, NATS request-reply through an in-process
// nats-server, raw Go channels with a pending map (for the embedded twin),
// local Send (for a forwarded Send in a 3-node cluster), controller.Send (for
// the batch runner), and a raw gRPC server holding idle streams (for the
// controller's memory per idle connector).
//
// TestCompare is the runner: each round measures every contender one after
// the other, each figure is the median over the rounds, and the figures are
// merged into results/latest.json (package results) and printed as markdown.
// It is configured by the environment (see runner_test.go); without it, it
// runs one tiny round into a temporary file, as a test of itself.
//
//	make bench         # from the repository root: 5 rounds of 3 s
//	make bench-quick   # 3 rounds of 0.7 s
//
// The benchmarks (testing.B) measure the same contenders one at a time, with
// allocations: go test -run '^$' -bench . -benchmem
//
// Two commands go with it: ./scale (one controller process and N real
// connectors, make bench-scale) and ./machine (what this machine charges for
// a page fault and a system call, to compare scale figures across machines).
//
// It is a separate module so that NATS stays out of the library's go.mod.
package bench
