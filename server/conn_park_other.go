//go:build !linux

package server

import "time"

// Off Linux (conn_park_linux.go) an idle session's reader blocks in
// gorilla's NextReader, and gorilla reads the socket through its own
// buffer only.

type (
	recvOp    struct{}
	parkState struct{}
)

func (f *flushConn) canPeek() bool                 { return false }
func (f *flushConn) park() bool                    { return false }
func (f *flushConn) waitRead() (int, error)        { return 0, nil }
func (f *flushConn) shortDeadline(time.Time) bool  { return false }
func (f *flushConn) restoreDeadline()              {}
func (f *flushConn) ownDeadlineAhead() bool        { return false }
func (f *flushConn) noteDeadline(time.Time)        {}
func (f *flushConn) parked() bool                  { return false }
func (f *flushConn) expired()                      {}
func (f *flushConn) canReadAhead() bool            { return false }
func (f *flushConn) readNow([]byte) (int, error)   { return 0, nil }
func (f *flushConn) newRecvFn() func(uintptr) bool { return nil }
