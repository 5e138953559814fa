package server

import "syscall"

// recvOp is one recv(2) on a session's socket that does not block, made
// through the socket's raw.Read (so that the read deadline, and a close,
// are honoured as by any read): one attempt, or while wait, an attempt
// each time the poller says the socket is readable, until one finds
// bytes, EOF or an error.
type recvOp struct {
	buf   []byte
	flags int
	wait  bool
	n     int
	err   error
}

// recv makes a recvOp: n > 0; or 0 and nil at EOF; or an error:
// syscall.EAGAIN when there is nothing yet (never with wait), or the read
// deadline's, or the closed socket's.
func (f *flushConn) recv(buf []byte, flags int, wait bool) (int, error) {
	f.op = recvOp{buf: buf, flags: flags, wait: wait}
	err := f.raw.Read(f.opFn)
	n, rerr := f.op.n, f.op.err
	f.op.buf = nil
	if err != nil {
		return 0, err
	}
	return n, rerr
}

// newRecvFn is the function raw.Read calls for recv, made once per
// socket: false asks raw.Read to wait for the socket and call again.
func (f *flushConn) newRecvFn() func(fd uintptr) bool {
	return func(fd uintptr) bool {
		for {
			n, _, err := syscall.Recvfrom(int(fd), f.op.buf, f.op.flags)
			switch {
			case err == syscall.EINTR:
				continue
			case err == syscall.EAGAIN && f.op.wait:
				return false
			}
			f.op.n, f.op.err = max(n, 0), err
			return true
		}
	}
}

// canPeek reports whether the session's socket can be waited on by a
// waiter (conn_park.go).
func (f *flushConn) canPeek() bool { return f.raw != nil && f.br != nil }

// waitRead waits until the socket has bytes to read (or EOF, an error,
// the read deadline, or the socket is closed), and reads up to
// len(f.peek) of them into f.peek. Only the waiter calls it, while
// gorilla does not read.
func (f *flushConn) waitRead() (int, error) {
	return f.recv(f.peek[:], syscall.MSG_DONTWAIT, true)
}

// canReadAhead reports whether Read can take what the socket holds with a
// read that does not block (conn_read.go).
func (f *flushConn) canReadAhead() bool { return f.raw != nil }

// readNow reads what the socket holds into b, up to len(b), with one
// read that does not block.
func (f *flushConn) readNow(b []byte) (int, error) {
	return f.recv(b, syscall.MSG_DONTWAIT, false)
}
