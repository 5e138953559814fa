//go:build !linux

package server

// parkSupported: see conn_park_linux.go. Elsewhere an idle session's
// reader blocks in gorilla's NextReader.
const parkSupported = false

func (f *flushConn) canPeek() bool                 { return false }
func (f *flushConn) peekWait() (int, error)        { return 0, nil }
func (f *flushConn) discard(int) error             { return nil }
func (f *flushConn) readable() bool                { return false }
func (f *flushConn) newPeekCtl() func(uintptr)     { return nil }
func (f *flushConn) newPeekFn() func(uintptr) bool { return nil }

func (f *flushConn) canReadAhead() bool            { return false }
func (f *flushConn) readNow([]byte) (int, error)   { return 0, nil }
func (f *flushConn) newReadFn() func(uintptr) bool { return nil }
