// Package cputime reads the CPU time this process has used, for the
// benchmarks that report CPU per operation beside wall time (on a shared
// 2-core machine, wall time also counts what other processes and the
// benchmark's own goroutines did meanwhile).
package cputime

import "time"

// Self returns the user and system CPU time this process has used so far,
// or 0 where the platform does not say (the figures then report zero).
func Self() time.Duration { return self() }
