package server

import "bufio"

// An idle session's reader parks on a small stack.
//
// A session's frames are read and handled on its reader goroutine, whose
// stack grows to what verifying a frame needs (about 8 KiB). A goroutine
// blocked in gorilla's NextReader keeps that stack, or the 4 KiB the
// collector shrinks it to, for as long as the session is idle: at 10,000
// idle sessions, 41 MB of stacks.
//
// So once a frame is handled, and neither gorilla's buffer nor the
// socket (a read that does not block, into the read-ahead) holds a byte
// of the next one, the reader does not block in NextReader. (A busy session, whose next frame is already there, reads
// on: a new goroutine per frame would copy its stack up to the verifier's
// depth every time.) It starts a waiter
// goroutine and ends; the waiter waits for the socket to become readable
// (the runtime's poller, as any socket read, honouring the read
// deadline), a few hundred bytes deep, and then becomes the reader:
// gorilla reads the next frame on it, its stack grows as needed, and the
// cycle repeats.
//
// Keepalive pongs are what an idle session receives most. A pong that
// answers the server's ping is exactly 6 bytes from a client: 0x8A (FIN,
// opcode pong), 0x80 (masked, no payload) and the 4-byte mask. The
// waiter reads what arrives, a few bytes at a time, and when it is those
// 6 bytes it does what the pong handler does (extend the read deadline),
// without becoming the reader: gorilla would handle the pong and then
// block for the next frame on the reader's stack. Anything else (a data
// frame, a close, a ping, a pong with a payload, a partial frame, an
// error, EOF, the deadline) is left to gorilla on the reader, which
// answers it exactly as before; nothing on the wire changes.
//
// Parking needs the socket itself (not TLS, whose bytes only crypto/tls
// can read) and Linux (conn_park_linux.go: recv with MSG_DONTWAIT);
// otherwise the reader blocks in NextReader as before.

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
// on a waiter goroutine (see above): true if it started one, and the
// caller must return at once without touching the reader's state.
func (c *conn) park() bool {
	f := c.fc
	if f == nil || !f.canPeek() || f.br.Buffered() > 0 || f.buffered() || f.fillAhead() {
		return false // the next frame is here: read it on this stack
	}
	go c.waitFrame()
	return true
}

// waitFrame is the waiter: it consumes the empty pongs that arrive, and
// becomes the reader when anything else does. It reads at most
// len(f.peek) bytes at a time, into the socket's own small array (a
// parked session holds no pooled buffer); bytes that are not a pong are
// handed to gorilla through the read-ahead (unread), in order.
func (c *conn) waitFrame() {
	f := c.fc
	for {
		n, err := f.waitRead()
		if err != nil || n == 0 {
			break // the deadline, a close, an error or EOF: the reader meets it
		}
		k := 0 // the empty pongs read
		for n-k >= emptyPong && isEmptyPong(f.peek[k:n]) {
			k += emptyPong
		}
		if k > 0 {
			c.setReadDeadline() // what the pong handler does
		}
		if k == n {
			continue
		}
		f.unread(f.peek[k:n])
		break
	}
	c.loop(false)
}
