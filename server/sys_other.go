//go:build !linux

package server

import "syscall"

// writeNB is write(2) on a socket in non-blocking mode (sys_linux.go).
func writeNB(fd uintptr, p []byte) (int, error) { return syscall.Write(int(fd), p) }
