//go:build !unix

package clusterbench

import "time"

// processCPU is not measured here: the CPU figures report zero.
func processCPU() time.Duration { return 0 }
