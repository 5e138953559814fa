package server

import (
	"bufio"
	"net"
	"net/http"
	"sync"
	"time"
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
//   - A write deadline is re-armed only when the one armed is earlier than
//     asked; it is armed slack later than asked, so a busy connection
//     re-arms the socket's timer about once per slack rather than per
//     frame. A write is given at least the deadline asked for, and at
//     most slack more.
//
// All writes, gathered or not, are serialised by mu, so a control frame
// written by another goroutine (a ping, a close) is ordered with the
// gathered frames as gorilla ordered it.
type flushConn struct {
	net.Conn
	slack time.Duration

	mu       sync.Mutex
	buf      *[]byte   // non-nil while gathering
	deadline time.Time // the deadline gorilla asked for while gathering
	armed    time.Time // the socket's write deadline (zero: none)
	err      error     // a failed flush: every later write fails
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
	if f.buf != nil {
		*f.buf = append(*f.buf, p...)
		return len(p), nil
	}
	return f.Conn.Write(p)
}

func (f *flushConn) SetWriteDeadline(t time.Time) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.buf != nil {
		f.deadline = t
		return nil
	}
	return f.armLocked(t)
}

// SetDeadline sets the read deadline, and the write deadline as
// SetWriteDeadline does.
func (f *flushConn) SetDeadline(t time.Time) error {
	if err := f.Conn.SetReadDeadline(t); err != nil {
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
	return &flushConn{Conn: nc, slack: h.slack}, brw, nil
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
		c = nil
		if t == nil {
			t = time.NewTimer(writerLinger)
		} else {
			t.Reset(writerLinger)
		}
		select {
		case c = <-h.writers:
		case <-t.C:
			return
		case <-h.s.ctx.Done():
			t.Stop()
			return
		}
	}
}
