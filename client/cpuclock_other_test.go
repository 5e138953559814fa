//go:build !linux

package client

import "time"

var clockStart = time.Now()

// threadCPU is the wall clock off Linux: there the benchmark's ratio also
// counts the time other threads took from it.
func threadCPU() time.Duration { return time.Since(clockStart) }
