//go:build !linux

package sigiltest

import "os/exec"

// dieWithParent does nothing here: only Linux can tie a child's life to
// its parent's. A test that panics may leave its redis-server running.
func dieWithParent(*exec.Cmd) {}
