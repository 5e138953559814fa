//go:build !linux

package server

// parkSupported: see conn_park_linux.go. Elsewhere an idle session's
// reader blocks in gorilla's NextReader, and gorilla reads the socket
// through its own buffer only.
const parkSupported = false

type recvOp struct{}

func (f *flushConn) canPeek() bool                 { return false }
func (f *flushConn) peekWait() (int, error)        { return 0, nil }
func (f *flushConn) discard(int) error             { return nil }
func (f *flushConn) readable() bool                { return false }
func (f *flushConn) canReadAhead() bool            { return false }
func (f *flushConn) readNow([]byte) (int, error)   { return 0, nil }
func (f *flushConn) newRecvFn() func(uintptr) bool { return nil }
