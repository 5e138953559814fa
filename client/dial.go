package client

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// maxServerFrame is the largest server frame the client reads (spec.md §2.6).
const maxServerFrame = 1 << 20

// Endpoints derives the WebSocket URL and the HTTP base URL (for
// /v1/token, /v1/refresh and the JWKS) from a server URL, as Dial does,
// and refuses plain ws:// or http:// to a host that is not a loopback
// address unless insecure (spec.md §2.3). Every scheme takes the server's base or its WebSocket
// endpoint: "wss://host" and "https://host" (with or without a path
// prefix: /v1/ws is added), or "wss://host/v1/ws" and "https://host/v1/ws"
// themselves; ws:// and http:// likewise. The HTTP base is the URL
// without /v1/ws. A ws(s) URL with another path is used as it is, with the
// host's root as the HTTP base.
func Endpoints(raw string, insecure bool) (wsURL, base string, err error) {
	u, err := url.Parse(raw)
	if err != nil {
		return "", "", fmt.Errorf("sigil client: bad URL: %w", err)
	}
	if u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return "", "", errors.New("sigil client: the URL must not carry user info, a query or a fragment")
	}
	var httpScheme string
	switch u.Scheme {
	case "wss", "https":
		httpScheme = "https"
	case "ws", "http":
		httpScheme = "http"
	default:
		return "", "", fmt.Errorf("sigil client: URL scheme %q: want wss, ws, https or http", u.Scheme)
	}
	if httpScheme == "http" && !insecure && !isLoopback(u.Hostname()) {
		return "", "", fmt.Errorf("sigil client: plain %s:// to %s: TLS is required except to loopback (spec.md §2.3); see Options.InsecureAllowPlaintext", u.Scheme, u.Hostname())
	}
	if u.Host == "" {
		return "", "", fmt.Errorf("sigil client: URL %q has no host", raw)
	}
	path := strings.TrimSuffix(u.EscapedPath(), "/")
	prefix, isWS := strings.CutSuffix(path, "/v1/ws")
	switch {
	case isWS:
	case u.Scheme == "http" || u.Scheme == "https" || path == "":
		prefix, path = path, path+"/v1/ws"
	default:
		prefix = "" // a WebSocket endpoint of its own; the API at the root
	}
	wsScheme := "wss"
	if httpScheme == "http" {
		wsScheme = "ws"
	}
	return wsScheme + "://" + u.Host + path, httpScheme + "://" + u.Host + prefix, nil
}

// isLoopback reports whether host is localhost or a loopback IP.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// fetchKeys gets the server's JWKS. base is already checked for TLS.
func fetchKeys(ctx context.Context, hc *http.Client, base string) (*protocol.KeySet, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/.well-known/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("sigil client: fetching the JWKS: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("sigil client: fetching the JWKS: HTTP %d", resp.StatusCode)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("sigil client: fetching the JWKS: %w", err)
	}
	ks, err := protocol.ParseKeySet(data)
	if err != nil {
		return nil, fmt.Errorf("sigil client: the server's JWKS: %w", err)
	}
	return ks, nil
}

// conn is one WebSocket connection of a client.
type conn struct {
	ws     *websocket.Conn
	fv     *protocol.FrameVerifier // the session's verifier (shared across its connections)
	out    chan []byte             // signed frames in seq order, for the writer
	done   chan struct{}           // closed when the reader has ended
	closed chan struct{}           // closed by close: the writer stops
	once   sync.Once
	code   protocol.CloseCode // close code, valid after done
	reason string             // the server's close reason, valid after done
	err    error              // why the reader ended, valid after done
}

// sendQueue is how many signed frames may wait for the writer; senders
// block (under the signer's lock, so seq order is kept) when it is full.
const sendQueue = 256

// close closes the socket and stops the writer. Safe to call more than once.
func (cn *conn) close() {
	cn.once.Do(func() {
		close(cn.closed)
		_ = cn.ws.Close()
	})
}

// welcome is what the handshake learns.
type welcome struct {
	body    protocol.WelcomeBody
	sessKey *protocol.ContentKey
}

// connect dials the server, says hello as the current session and checks
// the welcome. It does not start the reader.
func (c *Client) connect(ctx context.Context) (_ *conn, _ *welcome, rerr error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.HandshakeTimeout)
	defer cancel()
	c.mu.Lock()
	tok, signer, fv := c.tok, c.signer, c.fv
	c.mu.Unlock()

	d := websocket.Dialer{
		Subprotocols:     []string{protocol.Subprotocol},
		HandshakeTimeout: c.opts.HandshakeTimeout,
		Proxy:            http.ProxyFromEnvironment,
	}
	if t, ok := c.opts.HTTPClient.Transport.(*http.Transport); ok && t.TLSClientConfig != nil {
		d.TLSClientConfig = t.TLSClientConfig.Clone()
	}
	ws, resp, err := d.DialContext(ctx, c.wsURL, nil)
	if err != nil {
		if resp != nil {
			return nil, nil, fmt.Errorf("sigil client: WebSocket upgrade: HTTP %d: %w", resp.StatusCode, err)
		}
		return nil, nil, fmt.Errorf("sigil client: dial: %w", err)
	}
	if ws.Subprotocol() != protocol.Subprotocol {
		ws.Close()
		return nil, nil, fmt.Errorf("sigil client: server selected subprotocol %q, want %q", ws.Subprotocol(), protocol.Subprotocol)
	}
	ws.SetReadLimit(maxServerFrame)
	stop := context.AfterFunc(ctx, func() { ws.NetConn().Close() })
	defer stop()
	cn := &conn{ws: ws, fv: fv, done: make(chan struct{}), closed: make(chan struct{}), out: make(chan []byte, sendQueue)}
	c.wg.Add(1)
	go c.writeLoop(cn)
	defer func() {
		if rerr != nil {
			cn.close()
		}
	}()

	// hello: token, session key, and an agreement key for encryption.
	jwk, err := tok.Key.Public().MarshalJSON()
	if err != nil {
		ws.Close()
		return nil, nil, err
	}
	hb := protocol.HelloBody{Token: tok.Token, JWK: jwk, InboxSince: c.inboxSince()}
	var ekey *ecdsa.PrivateKey
	if c.opts.Encrypt {
		if ekey, err = protocol.GenerateAgreementKey(nil); err == nil {
			hb.EKey, err = protocol.AgreementJWK(ekey)
		}
		if err != nil {
			ws.Close()
			return nil, nil, err
		}
	}
	body, err := json.Marshal(hb)
	if err != nil {
		ws.Close()
		return nil, nil, err
	}
	cid := uuid.NewString()
	if err := c.write(ctx, cn, signer, &protocol.Envelope{Action: protocol.ActHello, Corr: cid, Body: body}); err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("sigil client: sending hello: %w", err)
	}

	// welcome. Its freshness is checked with a wide window because the
	// clock offset is learned from it; it is bound to this hello by the cid.
	// A fresh verifier has not seen a welcome, so it also accepts the error
	// without sid that answers a rejected hello (spec.md §8.2).
	hv := &protocol.FrameVerifier{Keys: fv.Keys, Session: tok.Session, Subject: tok.Subject, Skew: 24 * time.Hour, Now: c.now}
	_ = ws.SetReadDeadline(time.Now().Add(c.opts.HandshakeTimeout))
	mt, data, err := ws.ReadMessage()
	arrived := c.opts.Now()
	if err != nil {
		ws.Close()
		var ce *websocket.CloseError
		if errors.As(err, &ce) {
			return nil, nil, &CloseError{Code: protocol.CloseCode(ce.Code), Reason: ce.Text}
		}
		return nil, nil, fmt.Errorf("sigil client: waiting for welcome: %w", err)
	}
	m, err := firstFrame(hv, mt, data, cid)
	if protocol.IsCode(err, protocol.CodeUnknownKey) {
		// A key the client does not know: the server may have rotated
		// its keys since the JWKS was fetched. Fetch it again, once for
		// this attempt, and check the frame again. No reader runs yet,
		// so fv is this goroutine's.
		if ks := c.refetchKeys(ctx, false); ks != nil {
			hv.Keys, fv.Keys = ks, ks
			m, err = firstFrame(hv, mt, data, cid)
		}
	}
	if err != nil {
		var ce *CloseError
		if !errors.As(err, &ce) {
			c.report(err)
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseProtocolError), "protocol violation"), time.Now().Add(time.Second))
		}
		ws.Close()
		return nil, nil, err
	}
	w := &welcome{}
	if err := protocol.DecodeBody(m.Body, &w.body); err != nil {
		ws.Close()
		return nil, nil, fmt.Errorf("sigil client: welcome body: %w", err)
	}
	if w.body.Session != tok.Session || w.body.Subject != tok.Subject {
		ws.Close()
		return nil, nil, errors.New("sigil client: welcome names another session")
	}
	if c.opts.Encrypt {
		if w.body.Key == "" {
			ws.Close()
			return nil, nil, ErrNotEncrypted
		}
		k, err := protocol.UnwrapContentKey(w.body.Key, ekey)
		if err != nil || k.Scope != protocol.ScopeSession {
			ws.Close()
			return nil, nil, fmt.Errorf("sigil client: welcome content key: %v", err)
		}
		w.sessKey = k
		c.mu.Lock()
		c.ekey = ekey
		c.mu.Unlock()
	}
	// Clock offset (spec.md §8.3), then the welcome's id joins the replay
	// state of the session.
	c.offset.Store(int64(time.UnixMilli(w.body.Time).Sub(arrived)))
	signer.SetClockOffset(time.Duration(c.offset.Load()))
	signer.SetSeq(w.body.LastSeq)
	fv.Remember(m.ID, m.Time())
	c.onWelcomeInbox(&w.body, cid)
	_ = ws.SetReadDeadline(time.Time{})
	return cn, w, nil
}

// firstFrame checks the first server frame of a connection: it must
// verify and be the welcome answering the hello (cid), or the error
// frame rejecting the hello, which becomes a *CloseError. Anything else
// is a protocol violation (spec.md §8.3): the caller closes with 1002.
func firstFrame(hv *protocol.FrameVerifier, mt int, data []byte, cid string) (*protocol.Message, error) {
	if mt != websocket.TextMessage {
		return nil, fmt.Errorf("%w: a binary message before welcome", ErrProtocolViolation)
	}
	m, err := hv.Verify(data)
	if err != nil {
		return nil, fmt.Errorf("%w: the first frame does not verify: %w", ErrProtocolViolation, err)
	}
	switch {
	case m.Action == protocol.ActWelcome && m.Corr == cid:
		return m, nil
	case m.Action == protocol.ActError && m.Session == "":
		pe := errorFrame(m)
		return nil, &CloseError{Code: protocol.RejectionClose(pe.Code, true), Reason: string(pe.Code), Err: pe}
	case m.Action == protocol.ActWelcome:
		return nil, fmt.Errorf("%w: the welcome does not answer this hello (cid)", ErrProtocolViolation)
	}
	return nil, fmt.Errorf("%w: the first frame is %q, not welcome", ErrProtocolViolation, m.Action)
}

// errorFrame decodes the body of a verified error frame.
func errorFrame(m *protocol.Message) *protocol.Error {
	var eb protocol.ErrorBody
	if err := protocol.DecodeBody(m.Body, &eb); err != nil || eb.Code == "" {
		return &protocol.Error{Code: protocol.CodeInternal, Message: "malformed error frame", Ref: m.ID}
	}
	return &protocol.Error{Code: eb.Code, Message: eb.Message, Ref: eb.Ref}
}

// write signs env as the session and queues it for the connection's
// writer. Signing and queueing happen under the signer's lock, so frames
// leave in seq order (spec.md §6.1) however many goroutines send; the
// socket write itself happens on the writer goroutine, off the caller's
// path.
func (c *Client) write(ctx context.Context, cn *conn, signer *protocol.ClientSigner, env *protocol.Envelope) error {
	_, err := c.writeFrame(ctx, cn, signer, env)
	return err
}

// writeFrame is write, returning the signed frame.
func (c *Client) writeFrame(ctx context.Context, cn *conn, signer *protocol.ClientSigner, env *protocol.Envelope) ([]byte, error) {
	return signer.SignWith(env, func(frame []byte) error {
		select {
		case cn.out <- frame:
			return nil
		case <-cn.closed:
			return ErrConnectionLost
		case <-ctx.Done():
			return ctx.Err()
		}
	})
}

// writeLoop is the connection's only writer. A write error closes the
// connection; the reader then reports it.
func (c *Client) writeLoop(cn *conn) {
	defer c.wg.Done()
	for {
		select {
		case frame := <-cn.out:
			_ = cn.ws.SetWriteDeadline(time.Now().Add(c.opts.WriteTimeout))
			if err := cn.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
				c.log.Debug("sigil: write failed", "err", err)
				cn.close()
				return
			}
		case <-cn.closed:
			return
		}
	}
}
