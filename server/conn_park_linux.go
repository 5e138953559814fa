package server

import "syscall"

// parkSupported: peeking at a socket without blocking (MSG_PEEK,
// MSG_DONTWAIT) is available.
const parkSupported = true

// canPeek reports whether the session's socket can be waited on and
// peeked at by a waiter (conn_park.go).
func (f *flushConn) canPeek() bool { return f.raw != nil && f.br != nil }

// peekWait waits until the socket has bytes to read (or EOF, an error,
// the read deadline, or the socket is closed), and returns how many of
// its first bytes it copied into f.peek without consuming them. Only the
// waiter calls it, while gorilla does not read.
func (f *flushConn) peekWait() (int, error) {
	f.peekFlags = syscall.MSG_PEEK | syscall.MSG_DONTWAIT
	f.peekLen = len(f.peek)
	if err := f.raw.Read(f.peekFn); err != nil {
		return 0, err
	}
	return f.peekN, f.peekErr
}

// readable reports whether the socket has a byte to read now (or EOF, or
// an error, which the reader then meets at once).
func (f *flushConn) readable() bool {
	f.peekFlags = syscall.MSG_PEEK | syscall.MSG_DONTWAIT
	f.peekLen = 1
	f.peekNow = true
	if err := f.raw.Control(f.peekCtl); err != nil {
		return true
	}
	return f.peekNow
}

// discard consumes the first n bytes of the socket, which peekWait saw.
func (f *flushConn) discard(n int) error {
	f.peekFlags = syscall.MSG_DONTWAIT
	f.peekLen = n
	if err := f.raw.Read(f.peekFn); err != nil {
		return err
	}
	if f.peekErr == nil && f.peekN != n {
		return syscall.EIO // fewer bytes than peeked: cannot happen on a stream socket
	}
	return f.peekErr
}

// newPeekCtl is the function raw.Control calls for readable, made once per
// socket: peekNow is left true unless the socket has nothing yet.
func (f *flushConn) newPeekCtl() func(fd uintptr) {
	return func(fd uintptr) { f.peekNow = f.peekFn(fd) }
}

// newPeekFn is the function raw.Read calls for peekWait and discard, made
// once per socket: one recv that does not block; false (wait for the
// socket to be readable, then call again) when there is nothing yet.
func (f *flushConn) newPeekFn() func(fd uintptr) bool {
	return func(fd uintptr) bool {
		for {
			n, _, err := syscall.Recvfrom(int(fd), f.peek[:f.peekLen], f.peekFlags)
			switch err {
			case syscall.EINTR:
				continue
			case syscall.EAGAIN:
				return false
			}
			f.peekN, f.peekErr = max(n, 0), err
			return true
		}
	}
}

// canReadAhead reports whether Read can take what the socket holds with a
// read that does not block (conn_read.go).
func (f *flushConn) canReadAhead() bool { return f.raw != nil }

// readNow reads what the socket holds into b, up to len(b), with one
// read(2) that does not block: n > 0, or 0 and nil at EOF, or an error
// (syscall.EAGAIN when there is nothing yet, or the read deadline's).
func (f *flushConn) readNow(b []byte) (int, error) {
	f.rdBuf = b
	err := f.raw.Read(f.rdFn)
	f.rdBuf = nil
	if err != nil {
		return 0, err
	}
	return f.rdN, f.rdErr
}

// newReadFn is the function raw.Read calls for readNow, made once per
// socket: one attempt, never a wait.
func (f *flushConn) newReadFn() func(fd uintptr) bool {
	return func(fd uintptr) bool {
		for {
			n, err := syscall.Read(int(fd), f.rdBuf)
			if err == syscall.EINTR {
				continue
			}
			f.rdN, f.rdErr = max(n, 0), err
			return true
		}
	}
}
