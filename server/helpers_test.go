package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// env is a server on a random loopback port.
type env struct {
	t     testing.TB
	srv   *server.Server
	hs    *httptest.Server
	url   string
	clock *sigiltest.Clock // the server's clock, if the test drives one
}

// newEnvClock is newEnv with a running sigiltest.Clock as the server's
// clock; clients that env.login makes sign and verify on it too.
func newEnvClock(t testing.TB, mod func(*server.Config)) *env {
	clk := sigiltest.NewClock()
	e := newEnv(t, func(c *server.Config) {
		c.Now = clk.Now
		if mod != nil {
			mod(c)
		}
	})
	e.clock = clk
	return e
}

func testUsers() *server.UsersDoc {
	pwHash := sigiltest.PasswordHash()
	return &server.UsersDoc{Users: []server.User{
		{Name: "alice", Hash: pwHash, Roles: []string{"user"}},
		{Name: "bob", Hash: pwHash, Roles: []string{"user"}},
		{Name: "carol", Hash: pwHash, Roles: []string{"user", "announcer"}},
		{Name: "admin", Hash: pwHash, Roles: []string{"admin"}},
		{Name: "mallory", Hash: pwHash, Roles: []string{}},
	}}
}

func newEnv(t testing.TB, mod func(*server.Config)) *env {
	t.Helper()
	cfg := server.Config{
		Authenticator: server.StaticUsers{Doc: testUsers()},
		Logger:        sigiltest.QuietLogger(),
		HelloTimeout:  10 * time.Second,
	}
	if mod != nil {
		mod(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	e := &env{t: t, srv: srv, hs: hs, url: hs.URL}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
		hs.Close()
	})
	return e
}

func (e *env) wsURL() string { return "ws" + strings.TrimPrefix(e.url, "http") + "/v1/ws" }

// postJSON posts v and decodes the answer into out; it returns the status.
func (e *env) postJSON(path string, v any, out any, hdr ...string) int {
	e.t.Helper()
	var body io.Reader
	switch b := v.(type) {
	case string:
		body = strings.NewReader(b)
	case []byte:
		body = bytes.NewReader(b)
	default:
		data, _ := json.Marshal(v)
		body = bytes.NewReader(data)
	}
	req, _ := http.NewRequest(http.MethodPost, e.url+path, body)
	req.Header.Set("Content-Type", "application/json")
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	if out != nil {
		_ = json.Unmarshal(data, out)
	}
	return resp.StatusCode
}

type apiErr struct {
	Error   string `json:"error"`
	Message string `json:"message"`
}

// client is a real Sigil client over gorilla websocket.
type client struct {
	t      testing.TB
	e      *env
	key    *protocol.PrivateKey
	raw    ed25519.PrivateKey // the EdDSA session key, for hand-made frames
	jwk    json.RawMessage
	tok    server.TokenResponse
	signer *protocol.ClientSigner
	fv     *protocol.FrameVerifier
	ws     *websocket.Conn
	ekey   *ecdsa.PrivateKey
	keys   *protocol.KeyRing
	ck     []*protocol.ContentKey // keys learned, newest last
}

func (c *client) addKey(k *protocol.ContentKey) {
	if c.keys == nil {
		c.keys = protocol.NewKeyRing(nil)
	}
	c.keys.Add(k, time.Time{})
	c.ck = append(c.ck, k)
}

func (c *client) keyFor(scope string) *protocol.ContentKey {
	for i := len(c.ck) - 1; i >= 0; i-- {
		if c.ck[i].Scope == scope {
			return c.ck[i]
		}
	}
	c.t.Fatalf("no key for %s", scope)
	return nil
}

func (e *env) login(user string) *client {
	e.t.Helper()
	return e.loginAlg(user, protocol.EdDSA)
}

func (e *env) loginAlg(user string, alg jose.SignatureAlgorithm) *client {
	e.t.Helper()
	var raw ed25519.PrivateKey
	key, err := protocol.GenerateKey(alg, nil)
	if alg == protocol.EdDSA {
		_, raw, _ = ed25519.GenerateKey(nil)
		key, err = protocol.NewPrivateKey(raw, "")
	}
	if err != nil {
		e.t.Fatal(err)
	}
	jwk, _ := key.Public().MarshalJSON()
	c := &client{t: e.t, e: e, key: key, raw: raw, jwk: jwk}
	var ae apiErr
	var resp json.RawMessage
	st := e.postJSON("/v1/token", map[string]any{"grant_type": "password", "username": user, "password": "pw", "jwk": json.RawMessage(jwk)}, &resp)
	if st != 200 {
		_ = json.Unmarshal(resp, &ae)
		e.t.Fatalf("login %s: %d %v", user, st, ae)
	}
	if err := json.Unmarshal(resp, &c.tok); err != nil {
		e.t.Fatal(err)
	}
	c.signer = &protocol.ClientSigner{Key: key, Session: c.tok.Session, Subject: c.tok.Subject}
	c.fv = &protocol.FrameVerifier{Keys: e.srv.KeySet(), Session: c.tok.Session, Subject: c.tok.Subject}
	if e.clock != nil {
		c.signer.Now, c.fv.Now = e.clock.Now, e.clock.Now
	}
	return c
}

// loginEncrypted logs user in with an agreement key (body encryption),
// ready to connect.
func (e *env) loginEncrypted(user string) *client {
	e.t.Helper()
	c := e.login(user)
	k, err := protocol.GenerateAgreementKey(nil)
	must(e.t, err)
	c.ekey = k
	return c
}

func (c *client) dial() *client {
	c.t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 20 * time.Second}
	ws, resp, err := d.Dial(c.e.wsURL(), nil)
	if err != nil {
		c.t.Fatalf("dial: %v (%v)", err, resp)
	}
	c.ws = ws
	c.t.Cleanup(func() { ws.Close() })
	return c
}

func (c *client) helloFrame(token string) []byte {
	c.t.Helper()
	hb := protocol.HelloBody{Token: token, JWK: c.jwk}
	if c.ekey != nil {
		hb.EKey, _ = protocol.AgreementJWK(c.ekey)
	}
	body, _ := json.Marshal(hb)
	fr, err := c.signer.Sign(&protocol.Envelope{Action: protocol.ActHello, Body: body})
	if err != nil {
		c.t.Fatal(err)
	}
	return fr
}

// connect dials, says hello and reads welcome.
func (c *client) connect() *client {
	c.t.Helper()
	c.dial()
	c.write(c.helloFrame(c.tok.Token))
	m := c.recv()
	if m.Action != protocol.ActWelcome {
		c.t.Fatalf("want welcome, got %s %s", m.Action, m.Body)
	}
	var wb protocol.WelcomeBody
	if err := json.Unmarshal(m.Body, &wb); err != nil {
		c.t.Fatal(err)
	}
	if c.ekey != nil {
		k, err := protocol.UnwrapContentKey(wb.Key, c.ekey)
		if err != nil {
			c.t.Fatal(err)
		}
		c.addKey(k)
	}
	return c
}

func (c *client) write(frame []byte) {
	c.t.Helper()
	if err := c.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		c.t.Fatal(err)
	}
}

// send signs and writes a frame; it returns the envelope as sent.
func (c *client) send(env *protocol.Envelope) *protocol.Envelope {
	c.t.Helper()
	fr, err := c.signer.Sign(env)
	if err != nil {
		c.t.Fatal(err)
	}
	c.write(fr)
	return env
}

func (c *client) sign(env *protocol.Envelope) []byte {
	c.t.Helper()
	fr, err := c.signer.Sign(env)
	if err != nil {
		c.t.Fatal(err)
	}
	return fr
}

// recv reads and verifies one server frame (pongs and pings are handled by
// gorilla).
func (c *client) recv() *protocol.Message {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	mt, data, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	if mt != websocket.TextMessage {
		c.t.Fatalf("binary frame from server")
	}
	m, err := c.fv.Verify(data)
	if err != nil {
		c.t.Fatalf("server frame does not verify: %v", err)
	}
	return m
}

// recvAct reads frames until one with act arrives (skipping presence noise).
func (c *client) recvAct(act string) *protocol.Message {
	c.t.Helper()
	for i := 0; i < 50; i++ {
		m := c.recv()
		if m.Action == act {
			return m
		}
		if m.Action == protocol.ActError && act != protocol.ActError {
			c.t.Fatalf("want %s, got error %s", act, m.Body)
		}
	}
	c.t.Fatalf("no %s frame", act)
	return nil
}

func (c *client) expectError(code protocol.Code) protocol.ErrorBody {
	c.t.Helper()
	m := c.recvAct(protocol.ActError)
	var eb protocol.ErrorBody
	if err := json.Unmarshal(m.Body, &eb); err != nil {
		c.t.Fatal(err)
	}
	if eb.Code != code {
		c.t.Fatalf("want error %s, got %s (%s)", code, eb.Code, eb.Message)
	}
	return eb
}

// expectClose reads until the connection closes and checks the code.
func (c *client) expectClose(code protocol.CloseCode) {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	for {
		_, _, err := c.ws.ReadMessage()
		if err == nil {
			continue
		}
		ce, ok := err.(*websocket.CloseError)
		if !ok {
			c.t.Fatalf("want close %d, got %v", code, err)
		}
		if ce.Code != int(code) {
			c.t.Fatalf("want close %d, got %d %q", code, ce.Code, ce.Text)
		}
		return
	}
}

// expectCloseFirst checks that the next thing to arrive is the close with code.
func (c *client) expectCloseFirst(code protocol.CloseCode) {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := c.ws.ReadMessage()
	if err == nil {
		c.t.Fatalf("want close %d, got a frame %.80s", code, data)
	}
	if ce, ok := err.(*websocket.CloseError); !ok || ce.Code != int(code) {
		c.t.Fatalf("want close %d, got %v", code, err)
	}
}

// ping checks that the connection is usable.
func (c *client) ping() {
	c.t.Helper()
	env := c.send(&protocol.Envelope{Action: protocol.ActPing, Corr: "p"})
	m := c.recvAct(protocol.ActPong)
	if m.Corr != env.Corr {
		c.t.Fatalf("pong cid %q", m.Corr)
	}
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// expectHelloError reads the error frame that answers a rejected hello: it
// names no session, which a FrameVerifier accepts only before welcome.
func (c *client) expectHelloError(code protocol.Code) {
	c.t.Helper()
	_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, data, err := c.ws.ReadMessage()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	fv := &protocol.FrameVerifier{Keys: c.e.srv.KeySet(), Session: c.tok.Session, Subject: c.tok.Subject, Now: c.fv.Now}
	m, err := fv.Verify(data)
	must(c.t, err)
	var eb protocol.ErrorBody
	must(c.t, json.Unmarshal(m.Body, &eb))
	if m.Action != protocol.ActError || m.Session != "" || eb.Code != code {
		c.t.Fatalf("want hello error %s, got %s %s", code, m.Action, m.Body)
	}
}
