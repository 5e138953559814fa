package server

import (
	"syscall"
	"unsafe"
)

// writeNB and recvNB are write(2), and recv(2) with MSG_DONTWAIT, on a
// socket in non-blocking mode, made as raw system calls: they never
// block (EAGAIN instead), so the goroutine keeps its P through them and
// the scheduler's system-call bookkeeping is skipped. That bookkeeping
// is not free on a server that goes idle between frames: the first
// system call after an idle spell wakes the runtime's monitor thread
// (sysmon), which then polls every 20 µs for as long as the server is
// busy (5% of the server's CPU at a fixed 2,000 messages a second,
// perf). Every caller runs inside raw.Read or raw.Write, which wait in
// the runtime's poller when the socket is not ready, and which pin the
// descriptor.
//
// As package syscall's, they make the call for an empty p too: a recv of
// nothing tells EAGAIN (nothing there) from 0 (the peer's EOF).
func writeNB(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall(syscall.SYS_WRITE, fd, uintptr(bufPtr(p)), uintptr(len(p)))
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

func recvNB(fd uintptr, p []byte) (int, error) {
	n, _, e := syscall.RawSyscall6(syscall.SYS_RECVFROM, fd, uintptr(bufPtr(p)), uintptr(len(p)), syscall.MSG_DONTWAIT, 0, 0)
	if e != 0 {
		return -1, e
	}
	return int(n), nil
}

// zeroByte is what an empty buffer points to, as in package syscall.
var zeroByte byte

// bufPtr is p's address for a system call, converted to a uintptr in the
// call's own expression (unsafe.Pointer rule 4).
func bufPtr(p []byte) unsafe.Pointer {
	if len(p) == 0 {
		return unsafe.Pointer(&zeroByte)
	}
	return unsafe.Pointer(&p[0])
}
