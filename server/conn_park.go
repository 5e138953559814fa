package server

import (
	"bufio"
	"errors"
	"os"
	"time"
)

// An idle session holds no goroutine: it is parked.
//
// A session's frames are read and handled on its reader goroutine, whose
// stack grows to what verifying a frame needs (about 8 KiB). A goroutine
// blocked in gorilla's NextReader keeps that stack, or the 4 KiB the
// collector shrinks it to, for as long as the session is idle: at 10,000
// idle sessions, 41 MB of stacks, and a goroutine's g besides.
//
// So once a frame is handled, and neither gorilla's buffer nor the socket
// (a read that does not block, into the read-ahead) holds a byte of the
// next one, the reader waits for the socket in the runtime's poller
// itself, for up to parkAfter (a second), without gorilla (whose read
// error on a deadline would be final), and reads on when the next frame
// arrives: a session with a frame a second or more pays nothing else, no
// goroutine started and no stack grown or copied. A session still idle
// after parkAfter goes to the parker (conn_park_linux.go): one epoll set
// for the whole process, whose descriptor waits in the runtime's poller
// like any socket, and one goroutine that takes its events; its reader
// goroutine ends, or lingers to be handed another session (resume). A
// parked session costs a slot in the set and a place on the sweeper's idle
// wheel (schedule.go), no goroutine, no stack and no timer; waking it
// costs two epoll calls and a hand-over to a reader goroutine, which a
// session idle for a second can afford.
//
// Keepalive pongs are what an idle session receives most. A pong that
// answers the server's ping is exactly 6 bytes from a client: 0x8A (FIN,
// opcode pong), 0x80 (masked, no payload) and the 4-byte mask. A reader
// waiting for its next frame (waitFrame) and the parker read what arrives,
// a few bytes at a time, and when it is those 6 bytes they do what the
// pong handler does (move the idle deadline), and the session goes on
// waiting. Anything else (a data frame, a close, a ping, a pong with a
// payload, a partial frame, an error, EOF) starts a new reader goroutine
// (conn.resume) or, within parkAfter, lets the reader read on, and the
// bytes read are handed to gorilla ahead of the socket's, so gorilla
// answers them exactly as before: nothing on the wire changes. So do the
// socket's read deadline set by another goroutine (a close waiting for the
// peer's close frame, Shutdown), the socket's close (a failed write,
// Shutdown's last resort) and the idle deadline passing (the sweeper's
// idle wheel): the new reader meets them as a reader blocked in a read
// would.
//
// Parking needs the socket itself (not TLS, whose bytes only crypto/tls
// can read) and Linux (epoll, and recv with MSG_DONTWAIT); otherwise the
// reader blocks in NextReader.

// emptyPong is the size of a client's pong frame with no payload.
const emptyPong = 6

// isEmptyPong reports whether p starts with a client's pong frame with
// no payload (RFC 6455 §5.2, §5.5.3: FIN, opcode 0xA, masked, length 0).
func isEmptyPong(p []byte) bool {
	return len(p) >= emptyPong && p[0] == 0x8A && p[1] == 0x80
}

// readBufferSize is the size of the read buffer gorilla gets for each
// session, which every idle session holds: the smallest gorilla reuses
// (over 256 bytes; it needs a control frame's 125 bytes), in the
// allocator's 288-byte class. What is larger, a frame's payload, is read
// straight into the frame's own buffer; and a busy session's bytes come
// from the read-ahead (conn_read.go), so a small buffer costs copies, not
// syscalls.
const readBufferSize = 288

// newReadBuffer is the buffered reader of a hijacked socket that gorilla
// reads frames from (it reuses the one the hijacker returns when the
// Upgrader's ReadBufferSize is 0); flushConn keeps it to see whether
// gorilla holds bytes of a frame not yet read.
func (f *flushConn) newReadBuffer() *bufio.Reader {
	f.br = bufio.NewReaderSize(f, readBufferSize)
	return f.br
}

// park ends the reader's turn if the session can wait for its next frame
// without it (see above): true if it is waiting, and the caller must
// return at once without touching the reader's state (another reader may
// run already).
func (c *conn) park() bool {
	f := c.fc
	if f == nil || !f.canPeek() || f.br.Buffered() > 0 || f.buffered() || f.fillAhead() {
		return false // the next frame is here: read it
	}
	return c.waitFrame()
}

// parkAfter is how long a session's reader waits for its next frame
// before the session goes to the parker.
const parkAfter = time.Second

// waitFrame waits for the next frame on the reader's goroutine: for up
// to parkAfter (a read deadline of its own, the session's being recorded
// meanwhile) it waits for the socket in the runtime's poller, consuming
// the empty pongs that arrive, and returns false, for the reader to read
// on, when anything else arrives (a busy session so pays no epoll call
// and no goroutine), or the session's own deadline, a close or an error
// comes, which the reader then meets. A session still idle then goes to
// the parker, and waitFrame returns true: the reader must return at once.
// It reads at most len(f.peek) bytes at a time, into the socket's own
// small array; bytes that are not a pong are handed to gorilla through
// the read-ahead (unread), in order.
func (c *conn) waitFrame() (parked bool) {
	f := c.fc
	until := time.Now().Add(parkAfter)
	short := f.shortDeadline(until)
	for {
		n, err := f.waitRead()
		if err != nil || n == 0 {
			if short && errors.Is(err, os.ErrDeadlineExceeded) && f.ownDeadlineAhead() {
				// Idle for parkAfter, and its own deadline is still
				// ahead: to the parker.
				f.restoreDeadline()
				if f.park() {
					return true
				}
				short = false
				continue
			}
			break // the deadline, a close, an error or EOF: the reader meets it
		}
		k := 0 // the empty pongs read
		for n-k >= emptyPong && isEmptyPong(f.peek[k:n]) {
			k += emptyPong
		}
		if k > 0 { // what the pong handler does
			if short {
				c.noteReadDeadline()
			} else {
				c.setReadDeadline()
			}
		}
		if k == n {
			continue
		}
		f.unread(f.peek[k:n])
		break
	}
	if short {
		f.restoreDeadline()
	}
	return false
}

// resumed is a parked session woken: with fresh, bytes arrived (a frame,
// or pongs), and the read deadline is set anew, as the pong handler and
// the frame before did; otherwise the reader meets the deadline, or the
// close, that woke it.
type resumed struct {
	c     *conn
	fresh bool
}

// readerLinger is how long a reader goroutine whose session parked waits
// to be handed another one before it exits.
const readerLinger = time.Second

// resume starts the reader of a parked session: a reader goroutine that
// parked its own session within the last readerLinger and waits is handed
// it; only when none waits does a new goroutine start. A busy server's
// sessions, each parked between two frames, are so read on goroutines
// whose stacks have already grown to what verifying a frame needs,
// instead of each growing a new one (copying it twice) for every frame.
func (c *conn) resume(fresh bool) {
	select {
	case c.srv.hub.readers <- resumed{c, fresh}:
	default:
		go c.srv.hub.reader(resumed{c, fresh})
	}
}

// reader reads r's session until it parks or ends, then the sessions it
// is handed, until it has waited readerLinger for one or the server stops.
func (h *hub) reader(r resumed) {
	var t *time.Timer
	for {
		if r.fresh {
			r.c.setReadDeadline()
		}
		r.c.loop(false)
		r = resumed{} // not kept alive while lingering
		var ok bool
		if r, ok = linger(h.s.ctx, h.readers, &t, readerLinger); !ok {
			return
		}
	}
}
