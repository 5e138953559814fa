package server

import (
	"bufio"
	"encoding/binary"
	"errors"
	"net"
	"net/http"
	"os"
	"runtime"
	"sync"
	"syscall"
	"time"

	"github.com/gorilla/websocket"
)

// flushConn is the socket under a session's gorilla Conn. gorilla writes
// every message with its own Write and sets the socket's write deadline
// before each one; flushConn makes both cheap without changing a byte on
// the wire:
//
//   - While the writer goroutine writes a batch of queued frames
//     (gather … flush), gorilla's writes, one per frame, are collected in
//     a pooled buffer and reach the socket in one Write: several frames,
//     one syscall. Between batches nothing is buffered, and the buffer
//     goes back to the pool, so an idle session holds none.
//
//   - A write deadline is re-armed only when the one armed is earlier than
//     asked; it is armed slack later than asked, so a busy connection
//     re-arms the socket's timer about once per slack rather than per
//     frame. A write is given at least the deadline asked for, and at
//     most slack more.
//
//   - A fan-out frame for a session whose writer is idle is written at
//     once by the goroutine delivering it (tryWrite … endTry), with one
//     write that does not block: what the socket does not take is kept
//     (rest) and written by the session's writer goroutine, before any
//     other byte. A fan-out so costs one syscall per subscriber and no
//     hand-over to a writer goroutine, as a plain broadcast loop does,
//     and still never waits for a slow socket. A keepalive ping is
//     written so by the sweeper (conn.ping): one syscall per ping, and no
//     writer goroutine started, run and parked for it.
//
// All writes, gathered or not, are serialised by mu, so a control frame
// written by another goroutine (a ping, a close) is ordered with the
// gathered frames as gorilla ordered it.
type flushConn struct {
	net.Conn
	slack time.Duration
	raw   syscall.RawConn // the socket's, for writes that must not block (nil: none, tryWrite is never used)

	mu       sync.Mutex
	buf      *[]byte   // non-nil while gathering
	deadline time.Time // the deadline gorilla asked for while gathering
	armed    time.Time // the socket's write deadline (zero: none)
	err      error     // a failed flush: every later write fails
	try      bool      // between tryWrite and endTry
	closed   bool      // a close frame was written: nothing may follow it (RFC 6455 §5.5.1)
	rest     []byte    // what a write that must not block left: written before any other byte

	// The non-blocking write, made once: write p with one write(2).
	p     []byte
	n     int
	errno error
	once  func(fd uintptr) bool

	// The read side: a parked session (conn_park.go) and the read-ahead.
	c    *conn         // the session whose socket this is (nil: none parks)
	br   *bufio.Reader // gorilla's read buffer (nil: gorilla has its own)
	peek [8]byte       // what the parker reads of a parked session
	parkState
	// Read-ahead (conn_read.go): gorilla's reads only, one at a time.
	ahead              *[]byte // pooled, non-nil while it holds unread bytes
	aheadOff, aheadEnd int
	// The read-ahead's socket reads (the session's reader only).
	op   recvOp
	opFn func(fd uintptr) bool
}

// maxGather bounds a gathered write; a longer batch is flushed in parts.
const maxGather = 64 << 10

var gatherPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

func (f *flushConn) Write(p []byte) (int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return 0, f.err
	}
	if len(p) > 0 && p[0] == closeFrameStart {
		// gorilla writes nothing after a close frame, and neither does
		// writeWire. (The first byte of a payload gorilla writes apart
		// from its header may look the same: then frames go through
		// gorilla, which knows.)
		f.closed = true
	}
	if f.buf != nil {
		*f.buf = append(*f.buf, p...)
		return len(p), nil
	}
	if f.try || len(f.rest) > 0 {
		// A write that must not block, or one that must follow bytes
		// the writer goroutine has yet to write (a close frame, say):
		// it does not wait for the socket either.
		return f.writeOnceLocked(p)
	}
	return f.Conn.Write(p)
}

// writeOnceLocked writes p with one write that does not block and keeps
// what the socket did not take in rest: to gorilla, p is written.
func (f *flushConn) writeOnceLocked(p []byte) (int, error) {
	n := 0
	if len(f.rest) == 0 {
		f.p, f.n, f.errno = p, 0, nil
		err := f.raw.Write(f.once)
		n, f.p = f.n, nil
		switch {
		case errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(f.errno, syscall.EAGAIN) || errors.Is(f.errno, syscall.EINTR):
			n = 0 // the writer goroutine writes it, under a deadline of its own
		case err != nil:
			f.err = err
			return 0, err
		case f.errno != nil:
			f.err = f.errno
			return 0, f.errno
		}
	}
	f.rest = append(f.rest, p[n:]...)
	return len(p), nil
}

// tryWrite makes the writes until endTry ones that do not block; it
// reports false if this socket cannot write so, or if another write holds
// it (a pong gorilla writes from the reader goroutine, which may wait for
// a full socket): the caller, which holds conn.mu, must not wait for it.
func (f *flushConn) tryWrite() bool {
	if f.raw == nil || !f.mu.TryLock() {
		return false
	}
	f.try = true
	f.noDeadlineLocked()
	f.mu.Unlock()
	return true
}

// noDeadlineLocked clears the socket's write deadline before a write that
// does not block: nothing waits. The writer arms one again.
func (f *flushConn) noDeadlineLocked() {
	if !f.armed.IsZero() && f.err == nil {
		f.armed = time.Time{}
		_ = f.Conn.SetWriteDeadline(time.Time{})
	}
}

// endTry ends tryWrite and reports whether bytes are left for the
// writer goroutine (drain).
func (f *flushConn) endTry() (left bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.try = false
	return len(f.rest) > 0
}

// drain writes what the writes that did not block left, under deadline.
// It holds mu only while it writes, not while it waits for the socket, so
// that a control frame written meanwhile (a close) joins rest instead of
// waiting for a slow peer.
func (f *flushConn) drain(deadline time.Time) error {
	f.mu.Lock()
	if len(f.rest) == 0 || f.err != nil {
		defer f.mu.Unlock()
		return f.err
	}
	err := f.armLocked(deadline)
	f.mu.Unlock()
	if err != nil {
		return err
	}
	var werr error
	err = f.raw.Write(func(fd uintptr) bool {
		f.mu.Lock()
		defer f.mu.Unlock()
		for len(f.rest) > 0 {
			n, e := writeNB(fd, f.rest)
			if n > 0 {
				f.rest = f.rest[n:]
			}
			switch {
			case e == syscall.EINTR:
			case e == syscall.EAGAIN:
				return false // wait until the socket takes more
			case e != nil:
				werr = e
				return true
			}
		}
		f.rest = nil
		return true
	})
	if err == nil {
		err = werr
	}
	if err != nil {
		f.mu.Lock()
		f.err = err
		f.mu.Unlock()
	}
	return err
}

// hasRest reports whether drain has bytes to write.
func (f *flushConn) hasRest() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.rest) > 0 && f.err == nil
}

func (f *flushConn) SetWriteDeadline(t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.try {
		return nil // a write that does not block needs no deadline
	}
	if f.buf != nil {
		f.deadline = t
		return nil
	}
	return f.armLocked(t)
}

// SetDeadline sets the read deadline, and the write deadline as
// SetWriteDeadline does.
func (f *flushConn) SetDeadline(t time.Time) error {
	if err := f.SetReadDeadline(t); err != nil {
		return err
	}
	return f.SetWriteDeadline(t)
}

// armLocked makes the socket's write deadline at least t.
func (f *flushConn) armLocked(t time.Time) error {
	switch {
	case t.IsZero() && f.armed.IsZero():
		return nil
	case !t.IsZero() && !f.armed.IsZero() && !t.After(f.armed):
		return nil // the armed deadline already gives the write its time
	case !t.IsZero():
		t = t.Add(f.slack)
	}
	f.armed = t
	return f.Conn.SetWriteDeadline(t)
}

// gather starts collecting writes; flush ends it.
func (f *flushConn) gather() {
	f.mu.Lock()
	if f.buf == nil {
		f.buf = gatherPool.Get().(*[]byte)
	}
	f.mu.Unlock()
}

// full reports whether the gathered bytes should be flushed before more
// are added.
func (f *flushConn) full() bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.buf != nil && len(*f.buf) >= maxGather
}

// flush writes what was gathered in one Write, under the deadline asked
// for last; with more, gathering goes on.
func (f *flushConn) flush(more bool) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	bp := f.buf
	if bp == nil {
		return f.err
	}
	err := f.err
	if err == nil && len(*bp) > 0 {
		if err = f.armLocked(f.deadline); err == nil {
			_, err = f.Conn.Write(*bp)
		}
		if err != nil {
			f.err = err
		}
	}
	*bp = (*bp)[:0]
	if more && err == nil {
		return nil
	}
	f.buf = nil
	if cap(*bp) <= maxGather*2 {
		gatherPool.Put(bp)
	}
	return err
}

// hijacker hands gorilla's Upgrader a flushConn instead of the raw
// socket.
type hijacker struct {
	http.ResponseWriter
	slack time.Duration
}

func (h hijacker) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	nc, brw, err := http.NewResponseController(h.ResponseWriter).Hijack()
	if err != nil {
		return nil, nil, err
	}
	f := &flushConn{Conn: nc, slack: h.slack}
	if sc, ok := nc.(syscall.Conn); ok {
		if f.raw, err = sc.SyscallConn(); err != nil {
			f.raw = nil
		}
	}
	if f.raw != nil {
		f.once = func(fd uintptr) bool {
			f.n, f.errno = writeNB(fd, f.p)
			if f.n < 0 {
				f.n = 0
			}
			return true // one attempt: never wait for the socket
		}
		f.opFn = f.newRecvFn()
	}
	if brw.Reader.Buffered() == 0 {
		// gorilla reads from this reader (Upgrader.ReadBufferSize is 0);
		// with bytes buffered it refuses the upgrade anyway.
		brw = bufio.NewReadWriter(f.newReadBuffer(), brw.Writer)
	}
	return f, brw, nil
}

// writerLinger is how long a writer goroutine that has drained its
// session's queue waits to be handed another session before it exits.
const writerLinger = time.Second

// startWriter runs c's writeLoop on a writer goroutine; the caller has
// set c.writing. A writer that drained its session's queue within the
// last writerLinger and waits is handed c; only when none waits does a
// new goroutine start. A fan-out to many sessions, or a steady stream to
// one, so reuses goroutines whose stacks have already grown to the write
// path's depth: starting one per idle-to-busy transition cost a goroutine
// and the copies of its growing stack (about 10% of the server's CPU in
// a fan-out to 1,000). A writer is handed a session only while it waits,
// so a session never waits behind another's slow socket; and an idle
// server keeps no writer past writerLinger.
func (c *conn) startWriter() {
	c.srv.hub.writerRuns.Add(1)
	select {
	case c.srv.hub.writers <- c:
	default:
		go c.srv.hub.writer(c)
	}
}

// writer runs c's writeLoop, then the writeLoops of the sessions it is
// handed, until it has waited writerLinger for one or the server stops.
func (h *hub) writer(c *conn) {
	var t *time.Timer
	for {
		c.writeLoop()
		c = nil // not kept alive while lingering
		var ok bool
		if c, ok = linger(h.s.ctx, h.writers, &t, writerLinger); !ok {
			return
		}
	}
}

// writeLoop drains the queue and exits when it is empty. Frames queued
// together are written as one batch: with a flushConn under gorilla, in
// one write to the socket.
func (c *conn) writeLoop() {
	var batch []outFrame
	fc := c.fc
	gathering := false
	for {
		c.mu.Lock()
		if c.gatherNext {
			// A stream: let the other ready goroutines queue their
			// frames first.
			c.gatherNext, gathering = false, true
			c.mu.Unlock()
			runtime.Gosched()
			continue
		}
		if len(c.queue) == 0 && (fc == nil || !fc.hasRest()) {
			c.writing = false
			code, msg := c.closeCode, c.closeMsg
			c.closeCode = 0
			c.queue = nil
			c.mu.Unlock()
			if code != 0 {
				c.sendClose(code, msg)
			}
			return
		}
		batch, c.queue = c.queue, batch[:0]
		if gathering {
			gathering = false
			if len(batch) < 2 { // nothing joined
				c.calmFor = min(max(2*c.calmFor, int64(streamCalm)), int64(streamCalmMax))
				c.calmUntil = monoNow() + c.calmFor
			} else {
				c.calmFor = 0
			}
		}
		c.mu.Unlock()
		if err := c.writeBatch(fc, batch); err != nil {
			c.writeFailed()
			return
		}
	}
}

// writeBatch writes frames under one deadline, gathered into one socket
// write when there are several (and fc is not nil), and clears them.
func (c *conn) writeBatch(fc *flushConn, frames []outFrame) error {
	deadline := time.Now().Add(c.srv.cfg.WriteTimeout)
	_ = c.ws.SetWriteDeadline(deadline)
	if fc != nil {
		if err := fc.drain(deadline); err != nil {
			return err
		}
	}
	gather := fc != nil && len(frames) > 1
	if gather {
		fc.gather()
	}
	var err error
	for i, f := range frames {
		if err == nil {
			err = c.writeFrame(f)
			if err == nil && gather && fc.full() {
				err = fc.flush(true)
			}
		}
		frames[i] = outFrame{}
	}
	if gather {
		if ferr := fc.flush(false); err == nil {
			err = ferr
		}
	}
	return err
}

// writeFailed ends the session whose socket failed a write.
func (c *conn) writeFailed() {
	c.mu.Lock()
	c.closed = true
	c.writing = false
	c.queue = nil
	c.mu.Unlock()
	_ = c.ws.NetConn().Close()
	c.signalCloseSent()
}

// closeFrameStart is the first byte of a close frame: FIN and opcode 8
// (RFC 6455 §5.2, §5.5.1).
const closeFrameStart = 0x88

// wireFrame is payload as one server frame (RFC 6455 §5.2): FIN and
// opcode, the length, unmasked, then the payload; the bytes gorilla
// writes for it, uncompressed (TestWireFrameMatchesGorilla). A fan-out
// makes it once for all its subscribers, as it makes the PreparedMessage.
func wireFrame(opcode byte, payload []byte) []byte {
	n := len(payload)
	b := make([]byte, 0, n+10)
	b = append(b, 0x80|opcode)
	switch {
	case n < 126:
		b = append(b, byte(n))
	case n <= 0xFFFF:
		b = binary.BigEndian.AppendUint16(append(b, 126), uint16(n))
	default:
		b = binary.BigEndian.AppendUint64(append(b, 127), uint64(n))
	}
	return append(b, payload...)
}

// pingWire is the keepalive ping as written at once: an empty ping frame.
var pingWire = wireFrame(websocket.PingMessage, nil)

// pingMessage is the keepalive ping, an empty ping frame, encoded once.
// Written with WritePreparedMessage, a ping costs no timer, select or
// buffer, which WriteControl costs each time; its bytes are those of
// WriteControl(PingMessage, nil, …) (TestPingsWrittenBySweeper). Only the
// session's one data writer (the writer goroutine, or writeAtOnce) writes
// it, as any prepared message.
var pingMessage = func() *websocket.PreparedMessage {
	pm, err := websocket.NewPreparedMessage(websocket.PingMessage, nil)
	if err != nil {
		panic(err)
	}
	return pm
}()

// writeFrame writes f with gorilla, under the write deadline last set on
// c.ws.
func (c *conn) writeFrame(f outFrame) error {
	switch {
	case f.pm != nil:
		return c.ws.WritePreparedMessage(f.pm)
	case f.ping:
		return c.ws.WritePreparedMessage(pingMessage)
	default:
		return c.ws.WriteMessage(websocket.TextMessage, f.data)
	}
}

// deliverIn hands c a fan-out frame of channel ch, if c is (being)
// subscribed to ch: queued (enqueueIn) or, when c's writer is idle and
// its queue empty and c is not receiving a stream (streamingLocked),
// written at once (writeWire, writeAtOnce). member says
// that c was in ch's subscribers when the fan-out listed them and none
// has left ch since: c's own list of channels need not be looked up. It
// reports whether the frame was queued or written.
func (c *conn) deliverIn(ch string, f outFrame, member bool) bool {
	fc := c.fc
	c.mu.Lock()
	held := false
	if c.holds != nil {
		_, held = c.holds[ch]
	}
	if !member && !held {
		if _, in := c.channels[ch]; !in {
			c.mu.Unlock()
			return false // c left ch after the fan-out listed it
		}
	}
	switch {
	case held:
	case c.streamingLocked():
	case f.wire != nil && c.claimWireLocked(fc):
		c.mu.Unlock()
		return c.writeWire(fc, f.wire)
	case f.wire == nil && c.claimAtOnceLocked(fc):
		c.mu.Unlock()
		return c.writeAtOnce(fc, f)
	}
	c.mu.Unlock()
	return c.enqueueIn(ch, f)
}

// Streams. A delivery written at once costs a syscall of its own: right
// for a fan-out, where each subscriber gets one frame, and for a quiet
// session, where the frame should leave now. A session that receives a
// stream, deliveries less than streamGap apart, has its deliveries queued
// instead: the writer goroutine first lets the other ready goroutines run
// (runtime.Gosched), so the frames they deliver to it meanwhile join its
// batch, one write for all (with one subscriber to 64 publishers flat
// out, 527–654 writes a round of 9,600 deliveries, against 9,664: 15 to
// 18 frames a write). A writer that found only its one frame so
// gathered nothing: the session's deliveries are then written at once
// again for streamCalm, twice that after another such writer, and so on
// up to streamCalmMax, until a writer gathers again. A steady stream that
// comes one frame at a time (a fan-out to a few subscribers, one publish
// after another, each frame a few hundred µs after the last) so pays a
// hand-over to a writer about once a second, not once per streamCalm.
const (
	streamGap     = time.Millisecond
	streamCalm    = 20 * time.Millisecond
	streamCalmMax = time.Second
)

// monoEpoch is the origin of monoNow: the monotonic clock, in ns.
var monoEpoch = time.Now()

func monoNow() int64 { return int64(time.Since(monoEpoch)) }

// streamingLocked notes a delivery to c and reports whether it comes in a
// stream: then the caller queues it (enqueueIn) and the writer gathers. The
// caller holds c.mu.
func (c *conn) streamingLocked() bool {
	now := monoNow()
	last := c.lastDeliver
	c.lastDeliver = now
	if c.closed || c.writing || len(c.queue) > 0 || now-last >= int64(streamGap) || now < c.calmUntil {
		return false // queued anyway, or not a stream
	}
	c.gatherNext = true
	return true
}

// ping hands c its keepalive ping, as deliverIn a fan-out frame: the
// sweeper writes it at once when c's writer is idle, and otherwise queues
// it for the writer goroutine, so that a peer that does not read holds up
// its own ping only, never the sweeper. It reports whether the ping was
// queued or written.
func (c *conn) ping() bool {
	fc := c.fc
	c.mu.Lock()
	if !c.claimWireLocked(fc) {
		c.mu.Unlock()
		return c.enqueue(outFrame{ping: true})
	}
	c.mu.Unlock()
	return c.writeWire(fc, pingWire)
}

// claimAtOnceLocked reports whether a frame may be written at once by the
// calling goroutine: the session is open, its writer idle, its queue
// empty, and its socket takes a write that does not block
// (flushConn.tryWrite). If so, it marks the writer busy, and the caller
// must call writeAtOnce. The caller holds c.mu.
func (c *conn) claimAtOnceLocked(fc *flushConn) bool {
	if c.closed || c.writing || len(c.queue) > 0 || fc == nil || !fc.tryWrite() {
		return false
	}
	c.writing = true
	return true
}

// claimWireLocked is claimAtOnceLocked for a frame written as its bytes
// (writeWire) rather than through gorilla: also the socket's lock is free
// now (a write another goroutine makes through gorilla, a pong or a
// close, may wait for a full socket), nothing is left to write before,
// and no close frame was written. If so, it marks the writer busy and
// holds the socket's lock, and the caller must call writeWire. The caller
// holds c.mu.
func (c *conn) claimWireLocked(fc *flushConn) bool {
	if c.closed || c.writing || len(c.queue) > 0 || fc == nil || fc.raw == nil || !fc.mu.TryLock() {
		return false
	}
	if fc.closed || fc.err != nil || len(fc.rest) > 0 || fc.buf != nil {
		fc.mu.Unlock()
		return false
	}
	c.writing = true
	return true
}

// writeWire writes p, a whole frame, after claimWireLocked: one write
// that does not block, without gorilla (whose lock, deadline and
// prepared-frame lookup cost more than the rest of a delivery). What the
// socket does not take, what was queued meanwhile and a pending close are
// left to a writer goroutine. It reports whether p was written (or left
// to the writer).
func (c *conn) writeWire(fc *flushConn, p []byte) bool {
	fc.noDeadlineLocked()
	_, err := fc.writeOnceLocked(p)
	left := len(fc.rest) > 0
	fc.mu.Unlock()
	return c.doneAtOnce(left, err)
}

// writeAtOnce writes f after claimAtOnceLocked, with a write that does
// not block; what the socket does not take, what was queued meanwhile
// and a pending close are left to a writer goroutine. It reports whether
// f was written (or left to the writer).
func (c *conn) writeAtOnce(fc *flushConn, f outFrame) bool {
	err := c.writeFrame(f)
	return c.doneAtOnce(fc.endTry(), err)
}

// doneAtOnce ends a write at once: the writer goes idle again, or a
// writer goroutine is started for what is left (left: bytes the socket
// did not take).
func (c *conn) doneAtOnce(left bool, err error) bool {
	if err != nil {
		c.writeFailed()
		return false
	}
	c.mu.Lock()
	if !left && len(c.queue) == 0 && c.closeCode == 0 {
		c.writing = false
		c.mu.Unlock()
		return true
	}
	c.mu.Unlock()
	c.startWriter() // the rest, what was queued meanwhile, a pending close
	return true
}
