package server

import (
	"crypto/ecdsa"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// outFrame is one queued outgoing frame.
type outFrame struct {
	pm   *websocket.PreparedMessage // shared fan-out frame (and wire, its bytes on the wire), or
	wire []byte                     // written at once as they are (wireFrame), not through gorilla
	data []byte                     // a frame for this session only, or
	ping bool                       // a keepalive ping
	keep bool                       // the welcome: abort does not discard it
	off  uint64                     // a deliver frame's offset in its channel's stream (0: none)
}

// conn is one WebSocket connection and, after welcome, its session. Its
// fields are laid out to fit the 416-byte size class (bools together,
// deadlines as Unix nanoseconds): every idle session holds one.
type conn struct {
	srv         *Server
	ws          *websocket.Conn
	fc          *flushConn // ws's socket (nil in tests that make a conn without one)
	remote      string
	connectedAt time.Time

	// Set once at welcome, read-only afterwards.
	sid, sub string
	jwk      []byte // c.mu: the session key as sent, copied on first use (senderJWK)
	ekey     *ecdsa.PublicKey
	keys     *protocol.KeyRing
	sessKey  *protocol.ContentKey
	welcomed atomic.Bool

	warned atomic.Bool
	exp    atomic.Int64 // token expiry, Unix ms

	// Reader goroutine only.
	sess      *protocol.Session
	rejects   []time.Time
	logIndex  int64      // the audit log index of the frame being handled (-1: none); also the audit pipe's goroutine
	pipe      *auditPipe // sync audit: frames waiting for their entries (made by the first)
	handedOff bool

	mu        sync.Mutex
	writing   bool // a writer goroutine runs, or is held (held)
	held      bool // the welcome is queued but nothing is written until the session is registered and checked
	closed    bool
	stopRead  bool // the server is shutting down: read no more frames
	closeDone bool // the close frame is written or the socket dropped (closeSent is closed)
	// gatherNext: the writer lets the other ready goroutines run before it
	// takes its first batch (a stream, conn_write.go)
	gatherNext bool
	queue      []outFrame
	closeCode  protocol.CloseCode // pending close after the queue drains (0: none)
	closeMsg   string
	closeBy    int64 // read deadline once closing, Unix ns (real time, as every socket deadline)
	helloBy    int64 // read deadline until the hello is handled, Unix ns

	// A stream of deliveries (conn_write.go, streamingLocked): when the
	// last came, until when deliveries are written at once whatever
	// their pace, and for how long the last failed gathering calmed the
	// session (monoNow ns).
	lastDeliver, calmUntil, calmFor int64

	closeSent chan struct{} // made by the first waitCloseSent; closed with closeDone
	channels  map[string]struct{}
	holds     map[string][]outFrame // per channel being subscribed: its fan-out frames, until the sub is answered
	roles     []string
	jti       string
	iat       int64 // of the current token, Unix seconds (as the token's iat)

	seq uint64 // the connection's number on this server (regKey)

	// The sweeper's schedule (schedule.mu): each duty's time, the
	// position + 1 in the expiry heap, and for the ping and the parked
	// idle deadline (the wheels, duty-1) the slot + 1 on the wheel and
	// the position in the slot.
	due       [3]int64
	heapIdx   int
	slot, pos [2]int
}

func newConn(s *Server, ws *websocket.Conn, remote string) *conn {
	fc, _ := ws.NetConn().(*flushConn)
	c := &conn{srv: s, ws: ws, fc: fc, remote: remote, connectedAt: s.cfg.Now(),
		helloBy: time.Now().Add(s.cfg.HelloTimeout).UnixNano(),
		seq:     s.connSeq.Add(1)}
	if fc != nil {
		fc.c = c
	}
	return c
}

// regKey names the connection in the presence's session list.
func (c *conn) regKey() string { return strconv.FormatUint(c.seq, 10) }

var readBufPool = sync.Pool{New: func() any { b := make([]byte, 0, 2048); return &b }}

// run is the reader goroutine.
func (c *conn) run() {
	c.ws.SetPongHandler(func(string) error {
		c.setReadDeadline()
		return nil
	})
	c.setReadDeadline()
	c.loop(true)
}

// loop reads frames. The hello is handled on the first goroutine, whose
// stack grows deep while verifying the token; the session then continues
// on a fresh goroutine so that an idle session parks on a small stack.
func (c *conn) loop(hello bool) {
	handoff := false
	defer func() {
		if !handoff {
			c.finish()
		}
	}()
	for {
		bp, err := c.read()
		if err != nil {
			c.auditWait() // the frames read so far are answered
			var ne net.Error
			switch {
			case c.readStopped():
				// Shutdown: every frame read so far has been answered;
				// the queue is written, then 1001.
				c.close(protocol.CloseGoingAway, "server shutting down", true)
				c.waitCloseSent()
				c.drain()
			case hello && errors.As(err, &ne) && ne.Timeout() && !c.isClosed():
				c.close(protocol.CloseHelloTimeout, "no hello within the deadline", false)
			case errors.Is(err, websocket.ErrReadLimit):
				c.markClosed(protocol.CloseTooBig)
				c.drain()
			case errors.Is(err, errBinary):
				c.close(protocol.CloseUnsupported, "binary frames are not supported", false)
				c.drain()
			case errors.Is(err, errNotUTF8):
				c.close(protocol.CloseInvalidUTF8, "text frame is not valid UTF-8", false)
				c.drain()
			}
			return
		}
		c.srv.frames.Add(1)
		if !c.isClosed() {
			if hello {
				c.hello(*bp)
				hello = false
			} else {
				c.handle(*bp)
			}
		}
		if cap(*bp) <= 64<<10 {
			*bp = (*bp)[:0]
			readBufPool.Put(bp)
		}
		c.setReadDeadline()
		if !hello && c.park() {
			handoff = true // parked: a new reader reads on (conn_park.go)
			return
		}
		if first := !hello && !handoffDone(c); first {
			handoff = true
			c.handedOff = true
			c.resume(false)
			return
		}
	}
}

func handoffDone(c *conn) bool { return c.handedOff }

var (
	errBinary  = errors.New("binary frame")
	errNotUTF8 = errors.New("text frame is not valid UTF-8")
)

// read reads one text message into a pooled buffer. A text message that
// is not valid UTF-8 is errNotUTF8 (RFC 6455 §8.1; gorilla does not check).
func (c *conn) read() (*[]byte, error) {
	mt, r, err := c.ws.NextReader()
	if err != nil {
		return nil, err
	}
	if mt != websocket.TextMessage {
		return nil, errBinary
	}
	bp := readBufPool.Get().(*[]byte)
	b := (*bp)[:0]
	for {
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		b = b[:len(b)+n]
		if err == io.EOF {
			break
		}
		if err != nil {
			*bp = b[:0]
			readBufPool.Put(bp)
			return nil, err
		}
	}
	*bp = b
	if !utf8.Valid(b) {
		*bp = b[:0]
		readBufPool.Put(bp)
		return nil, errNotUTF8
	}
	return bp, nil
}

// setReadDeadline sets the socket's read deadline (real time, not the
// injected clock): the hello deadline, then the idle limit (extended by
// every frame and pong), the wait for the peer's close frame once closing,
// and the past once the server stops reading (stopReading). It runs under
// c.mu, so that stopReading's deadline cannot be overwritten.
func (c *conn) setReadDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	_ = c.ws.SetReadDeadline(c.readDeadlineLocked())
}

// readDeadlineLocked is the read deadline setReadDeadline sets; the
// caller holds c.mu.
func (c *conn) readDeadlineLocked() time.Time {
	switch {
	case c.stopRead:
		return time.Unix(1, 0)
	case c.closed:
		return time.Unix(0, c.closeBy)
	case !c.welcomed.Load():
		return time.Unix(0, c.helloBy)
	default:
		return time.Now().Add(c.idleLimit())
	}
}

// noteReadDeadline is setReadDeadline for a reader waiting in waitFrame
// while its short deadline holds the socket's: the session's deadline is
// recorded, and set on the socket when the wait ends.
func (c *conn) noteReadDeadline() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fc.noteDeadline(c.readDeadlineLocked())
}

// idleLimit is how long a session may stay silent (no frame, no pong)
// before it is dropped: its read deadline after each.
func (c *conn) idleLimit() time.Duration { return c.srv.cfg.PingInterval + c.srv.cfg.PongTimeout }

// closing reports whether the session's reader is to meet a deadline
// other than the idle one: closing, or the server stopping.
func (c *conn) closing() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed || c.stopRead
}

// stopReading makes the reader stop after the frame it is handling, if
// any: Shutdown's first step. The reader then closes with 1001 once the
// queue, with the answer to every frame it read, is written.
func (c *conn) stopReading() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.stopRead = true
	_ = c.ws.SetReadDeadline(time.Unix(1, 0))
}

func (c *conn) readStopped() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.stopRead
}

// signalCloseSent records that the close frame was written or the socket
// dropped.
func (c *conn) signalCloseSent() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if !c.closeDone {
		c.closeDone = true
		if c.closeSent != nil {
			close(c.closeSent)
		}
	}
}

// waitCloseSent waits until the close frame is written (after the queue)
// or the socket dropped, or the server gave up waiting (Shutdown's context).
// Only a session that shuts down waits: the channel is made then.
func (c *conn) waitCloseSent() {
	c.mu.Lock()
	if c.closeDone {
		c.mu.Unlock()
		return
	}
	if c.closeSent == nil {
		c.closeSent = make(chan struct{})
	}
	ch := c.closeSent
	c.mu.Unlock()
	select {
	case <-ch:
	case <-c.srv.ctx.Done():
	}
}

// drain reads and discards what the peer still sends for a moment, so that
// closing the socket does not reset it before the close frame is read.
func (c *conn) drain() {
	nc := c.ws.NetConn()
	_ = nc.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, _ = io.Copy(io.Discard, io.LimitReader(nc, 8<<20))
}

// finish runs when the reader goroutine ends.
func (c *conn) finish() {
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	c.mu.Unlock()
	_ = c.ws.Close()
	c.signalCloseSent()
	c.srv.sched.remove(c)
	if c.welcomed.Load() {
		c.srv.hub.unregister(c)
	}
	c.srv.m.connections.Dec()
	c.srv.removeConn(c)
}

func (c *conn) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

func (c *conn) markClosed(code protocol.CloseCode) {
	c.mu.Lock()
	c.closed = true
	c.queue = nil
	c.mu.Unlock()
	c.srv.m.closes.WithLabelValues(strconv.Itoa(int(code))).Inc()
}

// close starts the closing handshake with code. With drain, queued frames
// are written first. The reader goroutine keeps reading (and discarding)
// until the peer answers or a short deadline passes.
func (c *conn) close(code protocol.CloseCode, reason string, drain bool) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	c.closeBy = time.Now().Add(2 * time.Second).UnixNano()
	if drain && c.writing {
		c.closeCode, c.closeMsg = code, reason
		start := c.held
		c.held = false
		c.mu.Unlock()
		if start {
			c.startWriter()
		}
		return
	}
	c.queue = nil
	c.mu.Unlock()
	c.sendClose(code, reason)
}

func (c *conn) sendClose(code protocol.CloseCode, reason string) {
	c.srv.m.closes.WithLabelValues(strconv.Itoa(int(code))).Inc()
	if code == protocol.CloseSlowConsumer {
		c.srv.m.slowDrops.Inc()
	}
	if c.sid != "" {
		c.srv.log.Info("session closed", "sid", c.sid, "sub", c.sub, "code", code, "reason", reason)
	}
	_ = c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(code), reason), time.Now().Add(time.Second))
	c.signalCloseSent()
	_ = c.ws.NetConn().SetReadDeadline(time.Now().Add(2 * time.Second))
}

// enqueue queues f; an overflow closes the session with 4005.
func (c *conn) enqueue(f outFrame) bool { return c.enqueueIn("", f) }

// enqueueIn queues f, a frame of channel ch (or of none, ""): while c's
// sub of ch is not answered, the frame is held (holdChannel). An overflow
// closes the session with 4005.
func (c *conn) enqueueIn(ch string, f outFrame) bool {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return false
	}
	if held, ok := c.holds[ch]; ok && ch != "" {
		if len(held) >= c.srv.cfg.SendQueue {
			c.mu.Unlock()
			go c.close(protocol.CloseSlowConsumer, "send queue overflow", false)
			return false
		}
		c.holds[ch] = append(held, f)
		c.mu.Unlock()
		return true
	}
	return c.pushLocked(f)
}

// pushLocked appends fs to the queue and starts the writer; the caller
// holds c.mu, which pushLocked releases. An overflow closes the session
// with 4005.
func (c *conn) pushLocked(fs ...outFrame) bool {
	if len(c.queue)+len(fs) > c.srv.cfg.SendQueue {
		c.mu.Unlock()
		go c.close(protocol.CloseSlowConsumer, "send queue overflow", false)
		return false
	}
	c.queue = append(c.queue, fs...)
	start := !c.writing
	c.writing = true
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
	return true
}

// holdChannel starts holding the fan-out frames of channel ch (deliveries,
// join, leave, key) that reach c, so that they follow the answer to the sub
// that is subscribing c (releaseChannel). The hub calls it as it adds c
// to the channel.
func (c *conn) holdChannel(ch string) {
	c.mu.Lock()
	if c.holds == nil {
		c.holds = map[string][]outFrame{}
	}
	c.holds[ch] = []outFrame{}
	c.mu.Unlock()
}

// releaseChannel queues answer (the sub's reply; nil for none), then the
// frames held for ch, and stops holding them.
func (c *conn) releaseChannel(ch string, answer []byte) {
	c.mu.Lock()
	held := c.holds[ch]
	c.unholdLocked(ch)
	if c.closed {
		c.mu.Unlock()
		return
	}
	if answer != nil {
		held = append([]outFrame{{data: answer}}, held...)
	}
	if len(held) == 0 {
		c.mu.Unlock()
		return
	}
	c.pushLocked(held...)
}

// dropHold discards the frames held for ch: the sub failed, c is not
// subscribed.
func (c *conn) dropHold(ch string) {
	c.mu.Lock()
	c.unholdLocked(ch)
	c.mu.Unlock()
}

// unholdLocked stops holding ch's frames; with no channel held, holds
// goes (nil), so that a delivery does not look it up (deliverIn).
func (c *conn) unholdLocked(ch string) {
	delete(c.holds, ch)
	if len(c.holds) == 0 {
		c.holds = nil
	}
}

// sendSigned signs env (with body v) for this session and queues it.
func (c *conn) sendSigned(env *protocol.Envelope, v any) { c.sendChannel("", env, v) }

// sendChannel is sendSigned for a frame of channel ch (see enqueueIn).
func (c *conn) sendChannel(ch string, env *protocol.Envelope, v any) {
	if frame := c.sign(env, v); frame != nil {
		c.enqueueIn(ch, outFrame{data: frame})
	}
}

// sign signs env (with body v) for this session; nil if that failed,
// which is logged.
func (c *conn) sign(env *protocol.Envelope, v any) []byte {
	env.Session = c.sid
	var frame []byte
	var err error
	if v == nil {
		frame, err = c.srv.keys().signer.Sign(env)
	} else {
		frame, err = c.srv.keys().signer.SignBody(env, v)
	}
	if err != nil {
		c.srv.log.Error("signing a frame failed", "err", err)
		return nil
	}
	return frame
}

// abort ends the session after a check it could not pass (a store or
// broker failure, fail closed): every queued frame but an unsent welcome
// is discarded, the error frame answering ref (may be nil) is queued, and
// the connection closes with code once it is written.
func (c *conn) abort(ref *protocol.Envelope, pe *protocol.Error, code protocol.CloseCode, reason string) {
	frame, err := c.srv.keys().signer.ErrorFrame(c.sid, ref, pe)
	if err != nil {
		c.srv.log.Error("signing an error frame failed", "err", err)
		c.close(code, reason, false)
		return
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.queue = append(slices.DeleteFunc(c.queue, func(f outFrame) bool { return !f.keep }), outFrame{data: frame})
	c.closed = true
	c.closeBy = time.Now().Add(2 * time.Second).UnixNano()
	c.closeCode, c.closeMsg = code, reason
	start := !c.writing || c.held
	c.writing, c.held = true, false
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
}

// holdWelcome queues the welcome, the session's first frame, and holds
// the writer: frames queued after it (deliveries to the session once it is
// registered) wait until release, so that nothing reaches the client
// before the session passed its last check, and a client that has the
// welcome finds its session registered.
func (c *conn) holdWelcome(welcome []byte) {
	c.mu.Lock()
	c.queue = append(c.queue, outFrame{data: welcome, keep: true})
	c.writing, c.held = true, true
	c.mu.Unlock()
}

// release starts the writer that holdWelcome held.
func (c *conn) release() {
	c.mu.Lock()
	start := c.held
	c.held = false
	c.mu.Unlock()
	if start {
		c.startWriter()
	}
}

// sendError signs an error frame answering ref (may be nil).
func (c *conn) sendError(ref *protocol.Envelope, e *protocol.Error) {
	frame, err := c.srv.keys().signer.ErrorFrame(c.sid, ref, e)
	if err != nil {
		c.srv.log.Error("signing an error frame failed", "err", err)
		return
	}
	c.enqueue(outFrame{data: frame})
}

// hello verifies the first frame and answers welcome, or an error and a
// close.
func (c *conn) hello(frame []byte) {
	s := c.srv
	ks := s.keys()
	t0 := time.Now()
	sess, m, err := ks.verifier.VerifyHello(s.ctx, frame)
	s.m.verifySeconds.Observe(time.Since(t0).Seconds())
	if err != nil {
		pe := asProtoErr(err)
		s.m.reject(pe.Code)
		s.rejected.Add(1)
		c.sendError(nil, pe)
		if pe.Code == protocol.CodeUnavailable || pe.Code == protocol.CodeInternal {
			s.storeError("hello", pe)
		}
		c.close(protocol.RejectionClose(pe.Code, true), string(pe.Code), true)
		return
	}
	s.m.accepted.Inc()
	s.accepted.Add(1)
	c.sess = sess
	c.sid, c.sub = sess.ID(), sess.Subject()
	c.roles, c.jti, c.iat = sess.Roles(), sess.TokenID(), sess.IssuedAt().Unix()
	c.exp.Store(sess.Expiry().UnixMilli())
	c.auditHello(m)
	wb := protocol.WelcomeBody{
		Session: sess.ID(), Subject: sess.Subject(), Roles: sess.Roles(),
		Expiry: sess.Expiry().UnixMilli(), Time: s.cfg.Now().UnixMilli(),
		Skew: s.cfg.Skew.Milliseconds(), Window: s.cfg.Skew.Milliseconds(),
		LastSeq: m.Seq, MaxFrame: s.cfg.MaxFrame, Grants: s.cfg.Policy.Grants(sess.Roles()),
	}
	if len(sess.Agreement()) > 0 {
		ekey, err := protocol.ParseAgreementJWK(sess.Agreement())
		if err == nil {
			var key *protocol.ContentKey
			if key, err = protocol.NewContentKey(protocol.ScopeSession, nil); err == nil {
				wb.Key, err = protocol.WrapContentKey(key, ekey)
			}
			if err == nil {
				c.ekey, c.sessKey, c.keys = ekey, key, protocol.NewKeyRing(s.cfg.Now)
				c.keys.Add(key, time.Time{})
				sess.SetKeys(c.keys)
			}
		}
		if err != nil {
			c.sendError(&m.Envelope, &protocol.Error{Code: protocol.CodeInternal, Message: "could not set up body encryption"})
			c.close(protocol.CloseServerError, "encryption setup failed", true)
			return
		}
	}
	// welcome is the first server frame of the session (spec.md §8.3): it
	// is queued before the session becomes visible to the hub, so no
	// delivery, presence event or expiry warning can overtake it, and
	// nothing is written until the session is registered and checked.
	welcome, err := ks.signer.SignBody(&protocol.Envelope{Action: protocol.ActWelcome, Session: c.sid, Corr: m.Corr}, wb)
	if err != nil {
		s.log.Error("signing a frame failed", "err", err)
		c.close(protocol.CloseServerError, "signing failed", false)
		return
	}
	inbox := c.holdInbox()
	c.holdWelcome(welcome)
	c.welcomed.Store(true)
	c.schedule()
	if perr := s.hub.register(c); perr != nil {
		c.abort(&m.Envelope, perr, protocol.CloseServerError, "broker unavailable")
		return
	}
	// A revocation that raced with this hello must still close it; the
	// queue (the welcome, and anything delivered since) is discarded. If
	// the store cannot tell, the session fails closed.
	revoked, err := s.cfg.Revocations.IsRevoked(s.ctx, sess.TokenID(), sess.Subject(), sess.IssuedAt())
	if err != nil {
		pe := &protocol.Error{Code: protocol.CodeUnavailable, Message: "revocation check failed"}
		s.storeError("welcome revocation check", err)
		c.abort(&m.Envelope, pe, protocol.CloseServerError, "revocation store unavailable")
		return
	}
	if revoked {
		c.close(protocol.CloseRevoked, "revoked", false)
		return
	}
	if inbox {
		if perr := c.recoverInbox(m, &wb); perr != nil {
			c.abort(&m.Envelope, perr, protocol.CloseServerError, "history unavailable")
			return
		}
	}
	c.release()
	s.log.Info("session open", "sid", c.sid, "sub", c.sub, "remote", c.remote, "encrypted", c.ekey != nil)
}

// reject answers a rejected frame and counts the violation.
func (c *conn) reject(frame []byte, err error) {
	s := c.srv
	pe := asProtoErr(err)
	s.m.reject(pe.Code)
	s.rejected.Add(1)
	// The cid of a frame whose signature verified is authentic: the
	// error answers it (protocol.Verifier does not return the envelope
	// with an error).
	var ref *protocol.Envelope
	if afterSignature(pe.Code) {
		if env, err := protocol.UnsafeEnvelope(frame); err == nil {
			ref = &protocol.Envelope{ID: env.ID, Corr: env.Corr}
		}
	}
	if ref != nil && pe.Ref != "" {
		ref.ID = pe.Ref
	}
	c.sendError(ref, pe)
	if code := protocol.RejectionClose(pe.Code, false); code != 0 {
		c.close(code, string(pe.Code), true)
		return
	}
	if pe.Code == protocol.CodeUnavailable || pe.Code == protocol.CodeInternal {
		// The server's failure, not the client's: no violation.
		s.storeError("verify", pe)
		return
	}
	now := s.cfg.Now() // the rejection window is a protocol time (spec.md §12.4)
	cut := 0
	for cut < len(c.rejects) && now.Sub(c.rejects[cut]) > s.cfg.ViolationWindow {
		cut++
	}
	c.rejects = append(c.rejects[cut:], now)
	if len(c.rejects) > s.cfg.MaxViolations {
		c.close(protocol.ClosePolicy, "too many rejected frames", true)
	}
}

// afterSignature: codes of steps after the signature verified, where the
// payload (and its cid) is authentic.
func afterSignature(code protocol.Code) bool {
	switch code {
	case protocol.CodeWrongSession, protocol.CodeStale, protocol.CodeFuture, protocol.CodeReplaySeq,
		protocol.CodeReplayID, protocol.CodeTokenExpired, protocol.CodeTokenRevoked, protocol.CodeForbidden,
		protocol.CodeBadEnc, protocol.CodeBadRequest, protocol.CodeUnavailable:
		return true
	}
	return false
}

// storeError logs and counts a failed store call: err is the store's
// error, or a protocol error that wraps it.
func (s *Server) storeError(op string, err error) {
	s.m.backendErrors.WithLabelValues("store", op).Inc()
	if cause := errors.Unwrap(err); cause != nil {
		err = fmt.Errorf("%w: %w", err, cause)
	}
	s.log.Error("store call failed", "op", op, "err", err)
}

func asProtoErr(err error) *protocol.Error {
	var pe *protocol.Error
	if errors.As(err, &pe) {
		return pe
	}
	return &protocol.Error{Code: protocol.CodeInternal, Message: "internal error"}
}

// schedule puts a welcomed session on the sweeper's schedule: its expiry
// duties, and its first keepalive ping, spread over the second half of
// PingInterval by connection number so that sessions that connected
// together are not all pinged together.
func (c *conn) schedule() {
	s := c.srv
	s.sched.planExpiry(c, s.cfg.Now(), s.cfg.ExpiryWarning)
	first := s.cfg.PingInterval/2 + time.Duration(c.seq%1024)*(s.cfg.PingInterval/2)/1024
	s.sched.set(c, dutyPing, time.Now().Add(first).UnixNano())
}

// tick runs from the sweeper when c's expiry duty is due: the expiry
// warning, or the close at expiry. It reports whether c lives on.
func (c *conn) tick(now time.Time) bool {
	if !c.welcomed.Load() || c.isClosed() {
		return false
	}
	exp := time.UnixMilli(c.exp.Load())
	switch {
	case !now.Before(exp):
		c.close(protocol.CloseTokenExpired, "token expired", false)
		return false
	case !now.Before(exp.Add(-c.srv.cfg.ExpiryWarning)) && !c.warned.Swap(true):
		c.sendSigned(&protocol.Envelope{Action: protocol.ActExpiring}, protocol.ExpiringBody{Expiry: exp.UnixMilli()})
	}
	return true
}

// senderJWK returns the session key as the client sent it, for what the
// session sends (deliveries, direct messages, audit entries). It is copied
// from the session on first use, so that an idle session holds one copy.
func (c *conn) senderJWK() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.jwk == nil {
		c.jwk = c.sess.JWK()
	}
	return c.jwk
}

func (c *conn) tokenID() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.jti
}

// token returns the id and issue time of the session's current token.
func (c *conn) token() (jti string, iat time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.jti, time.Unix(c.iat, 0)
}

func (c *conn) info() SessionInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	chs := slices.AppendSeq(make([]string, 0, len(c.channels)), maps.Keys(c.channels))
	slices.Sort(chs)
	return SessionInfo{
		ID: c.sid, Subject: c.sub, Roles: append([]string{}, c.roles...), TokenID: c.jti,
		Remote: c.remote, ConnectedAt: c.connectedAt, ExpiresAt: time.UnixMilli(c.exp.Load()),
		Channels: chs, Encrypted: c.ekey != nil,
	}
}
