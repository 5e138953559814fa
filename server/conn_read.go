package server

import (
	"io"
	"sync"
	"syscall"
)

// Read-ahead: how a busy session's frames come off the socket.
//
// gorilla reads a session's frames through a 288-byte buffer
// (readBufferSize), kept small because every idle session holds one. A
// busy session with frames waiting in the socket would so cost a read(2)
// per 288 bytes, about two per publish. Instead, when the buffer asks for
// bytes, flushConn first takes everything the socket holds, up to
// readAheadSize, into a pooled buffer with one read that does not block,
// and hands it out from memory; the pooled buffer goes back as soon as it
// is empty, so an idle session holds none. When the socket has nothing
// yet, the read blocks as before, straight into gorilla's buffer. Bytes
// are handed out in the order the socket gave them, and a read that does
// not block still fails at once once the read deadline has passed.

// readAheadSize is the most a read-ahead takes from the socket at once.
const readAheadSize = 16 << 10

var readAheadPool = sync.Pool{New: func() any { b := make([]byte, readAheadSize); return &b }}

// Read is gorilla's read of the socket.
func (f *flushConn) Read(p []byte) (int, error) {
	if f.ahead != nil {
		n := copy(p, (*f.ahead)[f.aheadOff:f.aheadEnd])
		if f.aheadOff += n; f.aheadOff == f.aheadEnd {
			readAheadPool.Put(f.ahead)
			f.ahead = nil
		}
		return n, nil
	}
	if !f.canReadAhead() || len(p) >= readAheadSize {
		return f.Conn.Read(p)
	}
	bp := readAheadPool.Get().(*[]byte)
	n, err := f.readNow(*bp)
	switch {
	case n > 0:
		f.ahead, f.aheadOff, f.aheadEnd = bp, 0, n
		return f.Read(p)
	case err == nil: // n == 0: the peer closed its side
		readAheadPool.Put(bp)
		return 0, io.EOF
	default: // nothing yet, or an error the socket's own read reports
		readAheadPool.Put(bp)
		return f.Conn.Read(p)
	}
}

// fillAhead takes what the socket holds now into the read-ahead buffer,
// without blocking: false if there is nothing yet; true if there are
// bytes, or EOF or an error, which the next Read then meets.
func (f *flushConn) fillAhead() bool {
	bp := readAheadPool.Get().(*[]byte)
	n, err := f.readNow(*bp)
	if n > 0 {
		f.ahead, f.aheadOff, f.aheadEnd = bp, 0, n
		return true
	}
	readAheadPool.Put(bp)
	return err != syscall.EAGAIN
}

// unread puts p, bytes read from the socket by waitFrame, ahead of
// anything Read reads next. The read-ahead buffer is empty then.
func (f *flushConn) unread(p []byte) {
	bp := readAheadPool.Get().(*[]byte)
	f.ahead, f.aheadOff, f.aheadEnd = bp, 0, copy(*bp, p)
}

// buffered reports whether bytes read from the socket wait in the
// read-ahead buffer.
func (f *flushConn) buffered() bool { return f.ahead != nil }
