package client

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// Client is a connection to a Sigil server, kept alive across reconnects.
// Create it with Dial. All methods are safe for concurrent use.
type Client struct {
	opts  Options
	wsURL string
	base  string
	log   *slog.Logger

	offset atomic.Int64 // server clock - local clock, ns (from welcome)

	keysMu      sync.Mutex
	keysFetched time.Time

	cbMu sync.Mutex // serialises OnStateChange and OnError

	mu         sync.Mutex
	tok        *Token
	signer     *protocol.ClientSigner // the session's signer: seq continues across reconnects
	fv         *protocol.FrameVerifier
	cur        *conn         // the live connection, nil while reconnecting
	ready      chan struct{} // closed when cur is usable; replaced when it is lost
	state      State
	subs       map[string][]*Subscription // by channel
	inbox      *Subscription
	pending    map[string]chan answer // by cid
	ring       *protocol.KeyRing
	ekey       *ecdsa.PrivateKey
	sessKey    *protocol.ContentKey
	grants     protocol.Grants                 // from the last welcome (nil: not announced)
	chKeys     map[string]*protocol.ContentKey // newest key per channel
	seen       map[string]time.Time            // delivered sender frames, for de-duplication
	streams    map[string]*chanStream          // positions in the streams of channels with history (history.go)
	subCids    map[string]string               // cid of a sub in flight -> its channel
	unacked    map[string]*unacked             // pub and dm frames sent and not answered, by cid (resend.go)
	seenOps    int
	refreshing bool
	// newSession: the session's refresh failed without a refusal, and the
	// client goes on with a new session from the token source (refreshFailed).
	newSession bool
	// presenting is the refresh token an in-band refresh has sent or is
	// sending: until its outcome is known it may be used already, and it
	// is never presented again (renewToken).
	presenting string
	// refreshSeq is the seq of the last in-band refresh frame sent;
	// unhandledAbove, once a refresh was answered unavailable (the server
	// then closes the connection and handles none of its later frames),
	// is that refresh's seq (renewToken).
	refreshSeq, unhandledAbove uint64
	err                        error // why the client closed

	wake   chan struct{}      // tells the supervisor to recompute the refresh time
	done   chan struct{}      // closed when the client is closed
	ctx    context.Context    // canceled when the client is closed
	cancel context.CancelFunc // cancels ctx
	wg     sync.WaitGroup

	stats struct {
		rejected, reconnects, delivered, duplicates, unrouted, refreshes, gaps atomic.Uint64
	}
}

// Stats are counters of a client's life.
type Stats struct {
	Rejected   uint64 // server frames that failed verification and were dropped
	Reconnects uint64 // successful reconnections
	Delivered  uint64 // verified messages handed to subscriptions or the inbox
	Duplicates uint64 // deliveries dropped because they were already delivered
	Unrouted   uint64 // verified deliveries dropped because nothing was open to take them (a direct message before Inbox)
	Refreshes  uint64 // successful token refreshes
	Gaps       uint64 // gaps reported: publications that could not be recovered (Gap)
}

// answer is the server's answer to a request.
type answer struct {
	m   *protocol.Message
	err error
}

// Dial obtains a session token from opts.Tokens, connects to the server at
// url (wss://host/v1/ws or wss://host, https://host or https://host/v1/ws;
// ws:// and http:// to loopback: see Endpoints), performs the hello/welcome
// handshake and returns a connected client. It does not retry: a failure is
// returned. opts must not be nil; its zero fields take their defaults.
func Dial(ctx context.Context, url string, opts *Options) (*Client, error) {
	if opts == nil || opts.Tokens == nil {
		return nil, errors.New("sigil client: Options.Tokens is required")
	}
	o := opts.withDefaults()
	wsURL, base, err := Endpoints(url, o.InsecureAllowPlaintext)
	if err != nil {
		return nil, err
	}
	c := &Client{
		opts: o, wsURL: wsURL, base: base, log: o.Logger,
		ready:   make(chan struct{}),
		subs:    map[string][]*Subscription{},
		pending: map[string]chan answer{},
		ring:    protocol.NewKeyRing(nil),
		chKeys:  map[string]*protocol.ContentKey{},
		seen:    map[string]time.Time{},
		wake:    make(chan struct{}, 1),
		done:    make(chan struct{}),
	}
	c.ctx, c.cancel = context.WithCancel(context.Background())
	keys := o.JWKS
	if keys == nil {
		if keys, err = fetchKeys(ctx, o.HTTPClient, base); err != nil {
			return nil, err
		}
		c.keysFetched = time.Now()
	}
	tok, err := o.Tokens.Token(ctx, c.tokenRequest())
	if err != nil {
		return nil, err
	}
	c.setSession(tok, keys)
	if o.InboxSince != nil {
		c.Inbox() // the recovered direct messages follow the welcome
	}
	cn, w, err := c.connect(ctx)
	if err != nil {
		c.cancel()
		return nil, err
	}
	c.online(cn, w)
	c.setState(StateConnected, nil)
	c.log.Info("sigil: connected", "sid", tok.Session, "sub", tok.Subject)
	c.wg.Add(1)
	go c.supervise(cn)
	return c, nil
}

func (c *Client) tokenRequest() *TokenRequest {
	return &TokenRequest{BaseURL: c.base, HTTPClient: c.opts.HTTPClient, Algorithm: c.opts.Algorithm}
}

// setSession makes tok the current session: a new signer and frame
// verifier if the sid changed.
func (c *Client) setSession(tok *Token, keys *protocol.KeySet) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.signer != nil && c.tok.Session == tok.Session && c.tok.Key == tok.Key {
		c.tok = tok
		return
	}
	if keys == nil {
		keys = c.fv.Keys
	}
	c.tok = tok
	c.signer = &protocol.ClientSigner{Key: tok.Key, Session: tok.Session, Subject: tok.Subject,
		Now: c.opts.Now}
	c.signer.SetSeq(tok.Seq)
	c.signer.SetClockOffset(time.Duration(c.offset.Load()))
	c.fv = &protocol.FrameVerifier{Keys: keys, Session: tok.Session, Subject: tok.Subject, Now: c.now}
}

// now is the local clock corrected by the server's offset.
func (c *Client) now() time.Time { return c.opts.Now().Add(time.Duration(c.offset.Load())) }

// online installs cn as the live connection and starts its reader.
func (c *Client) online(cn *conn, w *welcome) {
	c.mu.Lock()
	if w.body.Skew > 0 {
		cn.fv.Skew = time.Duration(w.body.Skew) * time.Millisecond
	}
	c.grants = w.body.Grants
	if w.sessKey != nil {
		c.sessKey = w.sessKey
		c.ring.Add(w.sessKey, time.Time{})
	}
	if c.err != nil {
		cn.close()
	} else {
		c.cur = cn
	}
	c.wg.Add(1) // under c.mu, so that Close cannot miss it
	c.mu.Unlock()
	go c.read(cn)
}

// dropConn takes cn out of service once its reader has ended, so that
// requests wait for the next connection instead of trying this one.
func (c *Client) dropConn(cn *conn) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.cur != cn {
		return
	}
	c.cur = nil
	select {
	case <-c.ready: // close the gate; a gate not yet open stays as it is
		c.ready = make(chan struct{})
	default:
	}
}

// setReady opens the gate for requests waiting for a connection.
func (c *Client) setReady() {
	c.mu.Lock()
	select {
	case <-c.ready:
	default:
		close(c.ready)
	}
	c.mu.Unlock()
}

// State returns the connection state.
func (c *Client) State() State {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state
}

// Done is closed when the client is closed, by Close or for good (a revoked
// session, a failed refresh, a close code that forbids reconnecting).
func (c *Client) Done() <-chan struct{} { return c.done }

// Err returns why the client closed: ErrClosed after Close, or the cause.
// It returns nil while the client is open.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Session returns the session id and subject.
func (c *Client) Session() (sid, sub string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.tok.Session, c.tok.Subject
}

// Token returns a copy of the current token with the last seq used. It
// carries secrets; a program that stores it must protect the file.
func (c *Client) Token() Token {
	c.mu.Lock()
	defer c.mu.Unlock()
	t := *c.tok
	t.Seq = c.signer.Seq()
	return t
}

// Stats returns the client's counters.
func (c *Client) Stats() Stats {
	return Stats{
		Rejected: c.stats.rejected.Load(), Reconnects: c.stats.reconnects.Load(),
		Delivered: c.stats.delivered.Load(), Duplicates: c.stats.duplicates.Load(),
		Unrouted:  c.stats.unrouted.Load(),
		Refreshes: c.stats.refreshes.Load(),
		Gaps:      c.stats.gaps.Load(),
	}
}

// Close closes the connection with 1000 and ends every subscription and
// pending request with ErrClosed. It waits for the client's goroutines.
func (c *Client) Close() error {
	c.fail(ErrClosed)
	c.wg.Wait()
	return nil
}

// fail closes the client for good with err. Safe to call more than once;
// the first error wins.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	cn := c.cur
	c.cur = nil
	pending := c.pending
	c.pending = map[string]chan answer{}
	var subs []*Subscription
	for _, l := range c.subs {
		subs = append(subs, l...)
	}
	if c.inbox != nil {
		subs = append(subs, c.inbox)
	}
	c.mu.Unlock()
	if cn != nil {
		_ = cn.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseNormal), ""), time.Now().Add(time.Second))
		cn.close()
	}
	for _, ch := range pending {
		ch <- answer{err: err}
	}
	for _, s := range subs {
		s.end(err)
	}
	if errors.Is(err, ErrClosed) {
		c.log.Info("sigil: closed")
	} else {
		c.log.Warn("sigil: closed", "err", err)
	}
	c.setState(StateClosed, err)
	close(c.done)
	c.cancel()
}

func (c *Client) setState(s State, err error) {
	c.mu.Lock()
	if c.state == s || (c.err != nil && s != StateClosed) {
		c.mu.Unlock()
		return
	}
	c.state = s
	c.mu.Unlock()
	if c.opts.OnStateChange != nil {
		c.cbMu.Lock()
		c.opts.OnStateChange(s, err)
		c.cbMu.Unlock()
	}
}

// report passes an asynchronous error to Options.OnError.
func (c *Client) report(err error) {
	c.log.Debug("sigil: frame rejected", "err", err)
	if c.opts.OnError != nil {
		c.cbMu.Lock()
		c.opts.OnError(err)
		c.cbMu.Unlock()
	}
}

// supervise watches the live connection, refreshes the token before it
// expires, and reconnects after a drop as spec.md §12.3 allows.
func (c *Client) supervise(cn *conn) {
	defer c.wg.Done()
	c.setReady()
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	for {
		timer.Reset(c.refreshDelay())
		select {
		case <-c.done:
			cn.close()
			return
		case <-c.wake:
			continue
		case <-timer.C:
			c.wg.Add(1)
			go func() { defer c.wg.Done(); c.refresh() }()
			continue
		case <-cn.done:
		}
		// The connection is lost.
		c.mu.Lock()
		if c.err != nil { // closed: fail closed the socket
			c.mu.Unlock()
			return
		}
		if c.cur == cn {
			c.cur = nil
			c.ready = make(chan struct{})
		}
		c.mu.Unlock()
		rule := cn.code.Reconnect()
		lost := &CloseError{Code: cn.code, Reason: cn.reason}
		if rule == protocol.ReconnectNever || rule == protocol.ReconnectReauthenticate || c.opts.Reconnect.Disable {
			c.fail(lost)
			return
		}
		c.log.Info("sigil: connection lost", "code", cn.code, "err", cn.err)
		c.setState(StateReconnecting, lost)
		next := c.reconnect(rule == protocol.ReconnectNewToken)
		if next == nil {
			return
		}
		cn = next
		c.stats.reconnects.Add(1)
		c.setState(StateConnected, nil)
		c.setReady()
	}
}

// reconnect redials with backoff until it has a connection with restored
// subscriptions, or the client closes (then it returns nil).
func (c *Client) reconnect(newToken bool) *conn {
	p := c.opts.Reconnect
	var lastErr error
	freshTried := false
	for attempt := 0; ; attempt++ {
		if p.MaxAttempts > 0 && attempt >= p.MaxAttempts {
			c.fail(fmt.Errorf("sigil client: giving up after %d reconnect attempts: %w", attempt, lastErr))
			return nil
		}
		t := time.NewTimer(p.backoff(attempt))
		select {
		case <-c.done:
			t.Stop()
			return nil
		case <-t.C:
		}
		ctx, cancel := context.WithTimeout(c.ctx, 2*c.opts.HandshakeTimeout)
		cn, err := c.redial(ctx, newToken)
		cancel()
		if err == nil {
			return cn
		}
		lastErr = err
		var ce *CloseError
		if errors.As(err, &ce) {
			switch ce.Code.Reconnect() {
			case protocol.ReconnectNever, protocol.ReconnectReauthenticate:
				c.fail(ce)
				return nil
			case protocol.ReconnectNewToken:
				if freshTried {
					// A fresh token was rejected too: stop.
					c.fail(ce)
					return nil
				}
				newToken = true
			}
		}
		if c.Err() == nil && errors.Is(err, errTokenUnavailable) { // only a new token (redial) gives it
			c.fail(err)
			return nil
		}
		if newToken {
			freshTried = freshTried || errors.Is(err, errFreshTokenRejected)
		}
		c.log.Info("sigil: reconnect failed", "attempt", attempt+1, "err", err)
	}
}

var (
	errRefreshInFlight    = errors.New("sigil client: an in-band refresh is in flight")
	errTokenUnavailable   = errors.New("sigil client: no new token available")
	errFreshTokenRejected = errors.New("sigil client: a new token was rejected")
)

// redial obtains a new token if needed, connects, and restores the
// subscriptions.
func (c *Client) redial(ctx context.Context, newToken bool) (*conn, error) {
	fresh := false
	c.mu.Lock()
	newToken = newToken || c.newSession
	c.mu.Unlock()
	if newToken {
		if err := c.renewToken(ctx); err != nil {
			return nil, err
		}
		fresh = true
	}
	cn, w, err := c.connect(ctx)
	if err != nil {
		if fresh {
			var ce *CloseError
			if errors.As(err, &ce) && ce.Code.Reconnect() == protocol.ReconnectNewToken {
				return nil, fmt.Errorf("%w: %w", errFreshTokenRejected, err)
			}
		}
		return nil, err
	}
	c.online(cn, w)
	c.mu.Lock()
	abandoned := c.newSession
	c.mu.Unlock()
	if abandoned {
		// The session's refresh failed while this connection was made
		// (refreshFailed): the next attempt starts a new session.
		cn.close()
		<-cn.done
		return nil, errors.New("sigil client: the session was given up while reconnecting")
	}
	if err := c.resubscribe(ctx, cn); err != nil {
		cn.close()
		<-cn.done
		return nil, err
	}
	if err := c.resend(ctx, cn); err != nil {
		cn.close()
		<-cn.done
		return nil, err
	}
	return cn, nil
}

// renewToken gets a token the server will accept after 4001/4002: the
// refresh token renews the session over HTTP (same sid and key); failing
// that, the token source starts a new session.
func (c *Client) renewToken(ctx context.Context) error {
	c.mu.Lock()
	tok, signer, presenting := c.tok, c.signer, c.presenting
	c.mu.Unlock()
	if tok.RefreshToken != "" && tok.RefreshToken == presenting {
		// An in-band refresh presented this refresh token, and its answer
		// has not come: the server may have used it, and presenting it
		// again would be reuse, which revokes the family (spec.md §12.2).
		// Its outcome decides (refresh, refreshFailed); try again then.
		return errRefreshInFlight
	}
	if tok.RefreshToken != "" {
		nt, err := refreshHTTP(ctx, c.base, c.opts.HTTPClient, signer, tok)
		if err == nil {
			c.setSession(nt, nil)
			c.stats.refreshes.Add(1)
			c.notifyRefresh()
			return nil
		}
		c.log.Info("sigil: refresh over HTTP failed; asking the token source", "err", err)
	}
	nt, err := c.opts.Tokens.Token(ctx, c.tokenRequest())
	if err != nil {
		var he *HTTPError
		if errors.As(err, &he) && he.Status >= 400 && he.Status < 500 && he.Status != 429 {
			return fmt.Errorf("%w: %w", errTokenUnavailable, err)
		}
		return err
	}
	if nt.Token == tok.Token {
		return fmt.Errorf("%w: the token source returned the rejected token", errTokenUnavailable)
	}
	c.setSession(nt, nil)
	c.mu.Lock()
	c.newSession = false
	if nt.Session != tok.Session {
		// A new session cannot send the old one's frames again (resend):
		// whether the server accepted them cannot be known any more, and
		// their requests return ErrConnectionLost.
		for cid, u := range c.unacked {
			delete(c.unacked, cid)
			// Sent after a refresh answered unavailable: never handled,
			// so it is signed again on the new session.
			u.notAccepted = c.unhandledAbove > 0 && u.seq > c.unhandledAbove
			close(u.expired)
		}
		c.unhandledAbove = 0
	}
	c.mu.Unlock()
	return nil
}

func (c *Client) notifyRefresh() {
	if c.opts.OnRefresh != nil {
		c.opts.OnRefresh(c.Token())
	}
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

// refreshDelay is how long until the token should be refreshed in-band:
// a third of its remaining life before expiry, at most a minute before.
func (c *Client) refreshDelay() time.Duration {
	c.mu.Lock()
	tok := c.tok
	c.mu.Unlock()
	if tok.RefreshToken == "" || tok.Expiry.IsZero() {
		return 24 * time.Hour
	}
	left := tok.Expiry.Sub(c.opts.Now())
	lead := min(left/3, time.Minute)
	if d := left - lead; d > 100*time.Millisecond {
		return d
	}
	return 100 * time.Millisecond
}

// refreshFailed ends the session sid, whose in-band refresh failed with
// err. The client fails closed, unless the failure refused nothing (the
// server answered unavailable: a store it needs did not answer; or the
// answer was lost with the connection) and every token of the source
// starts a session of its own (Password, External, LoginSessions): then it
// stops sending as sid, never presents sid's refresh token again (it may
// have been used), and goes on with a new session from the source, as
// after a reconnect (spec.md §12.2). A source that cannot give one fails
// the client then.
func (c *Client) refreshFailed(sid string, err error) {
	_, fresh := c.opts.Tokens.(newSessions)
	if code := protocol.CodeOf(err); !fresh || c.opts.Reconnect.Disable || (code != "" && code != protocol.CodeUnavailable) {
		c.fail(err)
		return
	}
	c.mu.Lock()
	if c.err != nil || c.tok.Session != sid {
		c.mu.Unlock()
		return
	}
	nt := *c.tok
	nt.RefreshToken = ""
	c.tok = &nt
	c.newSession = true
	if protocol.CodeOf(err) == protocol.CodeUnavailable {
		c.unhandledAbove = c.refreshSeq
	}
	cn := c.cur
	c.mu.Unlock()
	c.log.Warn("sigil: refresh failed; going on with a new session", "sid", sid, "err", err)
	c.report(err)
	if cn != nil {
		cn.close() // the supervisor reconnects with a new session (redial)
	}
}

// refresh renews the token in-band (spec.md §12.2). If it fails the client
// fails closed (refreshFailed): it closes with ErrRefreshFailed rather than
// carry on with a token that will expire, or goes on with a new session.
func (c *Client) refresh() {
	c.mu.Lock()
	if c.refreshing || c.err != nil || c.tok.RefreshToken == "" {
		c.mu.Unlock()
		return
	}
	c.refreshing = true
	rt, sid := c.tok.RefreshToken, c.tok.Session
	c.presenting = rt
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.refreshing = false
		c.presenting = "" // refreshed, given up (refreshFailed), or never sent
		c.mu.Unlock()
	}()
	ctx, cancel := context.WithTimeout(c.ctx, 2*c.opts.HandshakeTimeout)
	defer cancel()
	body, err := json.Marshal(protocol.RefreshBody{RefreshToken: rt})
	if err != nil {
		c.fail(fmt.Errorf("%w: %w", ErrRefreshFailed, err))
		return
	}
	m, err := c.request(ctx, protocol.ActRefresh, "", "", body, true)
	if err != nil {
		if errors.Is(err, errNotSent) {
			// Never sent (no connection): the refresh token is unused. The
			// supervisor tries again once connected; an expired token is
			// renewed over HTTP on reconnect (close 4002).
			c.log.Info("sigil: refresh postponed", "err", err)
			return
		}
		if c.Err() == nil {
			c.refreshFailed(sid, fmt.Errorf("%w: %w", ErrRefreshFailed, err))
		}
		return
	}
	var rb protocol.RefreshedBody
	if m.Action != protocol.ActRefreshed {
		c.fail(fmt.Errorf("%w: answered %q", ErrRefreshFailed, m.Action))
		return
	}
	if err := protocol.DecodeBody(m.Body, &rb); err != nil || rb.Token == "" || rb.RefreshToken == "" {
		c.fail(fmt.Errorf("%w: bad refreshed body", ErrRefreshFailed))
		return
	}
	c.mu.Lock()
	if c.tok.Session == sid {
		nt := *c.tok
		nt.Token, nt.RefreshToken, nt.Expiry = rb.Token, rb.RefreshToken, time.UnixMilli(rb.Expiry)
		c.tok = &nt
	}
	c.mu.Unlock()
	c.stats.refreshes.Add(1)
	c.log.Info("sigil: token refreshed", "sid", sid)
	c.notifyRefresh()
}
