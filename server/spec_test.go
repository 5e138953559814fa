package server_test

// Tests for the server behaviour that spec.md states (§4.3, §9, §12.4,
// §13.2, §13.4–§13.7) and that the other tests do not already check. They
// drive a real server over real sockets; Appendix A of spec.md names them.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// httpDo sends one request and returns the status, headers and body.
func (e *env) httpDo(method, path, body string, hdr ...string) (int, http.Header, []byte) {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	must(e.t, err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	must(e.t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, resp.Header, data
}

// checkAPIError checks the shape of an HTTP error response (spec.md §13.4):
// the status, JSON with no-store, and exactly the members error and message.
func checkAPIError(t *testing.T, what string, status int, hdr http.Header, body []byte, wantStatus int, wantCode string) {
	t.Helper()
	if status != wantStatus {
		t.Errorf("%s: status %d, want %d (%s)", what, status, wantStatus, body)
		return
	}
	if ct := hdr.Get("Content-Type"); ct != "application/json" {
		t.Errorf("%s: Content-Type %q", what, ct)
	}
	if cc := hdr.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("%s: Cache-Control %q", what, cc)
	}
	var obj map[string]json.RawMessage
	if err := json.Unmarshal(body, &obj); err != nil {
		t.Errorf("%s: body is not a JSON object: %s", what, body)
		return
	}
	var code, msg string
	if len(obj) != 2 || json.Unmarshal(obj["error"], &code) != nil || json.Unmarshal(obj["message"], &msg) != nil || msg == "" {
		t.Errorf("%s: body must be exactly {error, message}: %s", what, body)
		return
	}
	if code != wantCode {
		t.Errorf("%s: error %q, want %q", what, code, wantCode)
	}
}

type reservedAuth struct{}

func (reservedAuth) Authenticate(context.Context, server.Credentials) (*server.Identity, error) {
	return &server.Identity{Subject: protocol.ServerSubject, Roles: []string{"user"}}, nil
}

func TestSpecHTTPErrors(t *testing.T) {
	e := newEnv(t, nil)
	k, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	jwk, _ := k.Public().MarshalJSON()
	good := `{"grant_type":"password","username":"alice","password":"pw","jwk":` + string(jwk) + `}`
	ctJSON := []string{"Content-Type", "application/json"}

	st, h, b := e.httpDo(http.MethodGet, "/v1/token", "")
	checkAPIError(t, "GET /v1/token", st, h, b, 405, server.ErrCodeInvalidRequest)
	st, h, b = e.httpDo(http.MethodPost, "/v1/token", good, "Content-Type", "text/plain")
	checkAPIError(t, "text/plain token request", st, h, b, 400, server.ErrCodeInvalidRequest)
	big := `{"grant_type":"password","username":"alice","password":"` + strings.Repeat("p", 33<<10) + `","jwk":` + string(jwk) + `}`
	st, h, b = e.httpDo(http.MethodPost, "/v1/token", big, ctJSON...)
	checkAPIError(t, "token request over 32 KiB", st, h, b, 400, server.ErrCodeInvalidRequest)
	st, h, b = e.httpDo(http.MethodPost, "/v1/token", `{"grant_type":"password","username":"alice","password":"x","jwk":`+string(jwk)+`}`, ctJSON...)
	checkAPIError(t, "bad password", st, h, b, 401, server.ErrCodeInvalidGrant)
	st, h, b = e.httpDo(http.MethodGet, "/v1/refresh", "")
	checkAPIError(t, "GET /v1/refresh", st, h, b, 405, server.ErrCodeInvalidRequest)
	st, h, b = e.httpDo(http.MethodPost, "/v1/refresh", `{"refresh_token":"x","proof":"y"}`, ctJSON...)
	checkAPIError(t, "unknown refresh token", st, h, b, 401, server.ErrCodeInvalidGrant)
	st, h, b = e.httpDo(http.MethodPost, "/.well-known/jwks.json", "{}", ctJSON...)
	checkAPIError(t, "POST jwks", st, h, b, 405, server.ErrCodeInvalidRequest)
	// Admin: the operation, the method and the body are checked before
	// authentication; authentication failures are 401 unauthorized.
	st, h, b = e.httpDo(http.MethodGet, "/v1/admin/nothing", "")
	checkAPIError(t, "unknown admin op", st, h, b, 404, server.ErrCodeNotFound)
	st, h, b = e.httpDo(http.MethodGet, "/v1/admin/kick", "")
	checkAPIError(t, "GET kick", st, h, b, 405, server.ErrCodeInvalidRequest)
	st, h, b = e.httpDo(http.MethodPost, "/v1/admin/kick", `{"sid":"a","sid":"b"}`, ctJSON...)
	checkAPIError(t, "kick with a duplicate member", st, h, b, 400, server.ErrCodeInvalidRequest)
	st, h, b = e.httpDo(http.MethodGet, "/v1/admin/sessions", "")
	checkAPIError(t, "sessions without credentials", st, h, b, 401, server.ErrCodeUnauthorized)

	// No authenticator: every grant is unsupported_grant_type.
	none := newEnv(t, func(c *server.Config) { c.Authenticator = nil })
	st, h, b = none.httpDo(http.MethodPost, "/v1/token", good, ctJSON...)
	checkAPIError(t, "no authenticator", st, h, b, 400, server.ErrCodeUnsupported)
	// An authenticator that yields the reserved subject "server": invalid_grant.
	res := newEnv(t, func(c *server.Config) { c.Authenticator = reservedAuth{} })
	st, h, b = res.httpDo(http.MethodPost, "/v1/token", good, ctJSON...)
	checkAPIError(t, "reserved subject", st, h, b, 401, server.ErrCodeInvalidGrant)

	// Shutting down: readiness and new upgrades are 503 unavailable.
	must(t, e.srv.Shutdown(context.Background()))
	st, h, b = e.httpDo(http.MethodGet, "/readyz", "")
	checkAPIError(t, "readyz while draining", st, h, b, 503, server.ErrCodeUnavailable)
	st, h, b = e.httpDo(http.MethodGet, "/v1/ws", "", "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Sec-WebSocket-Protocol", protocol.Subprotocol)
	checkAPIError(t, "upgrade while draining", st, h, b, 503, server.ErrCodeUnavailable)
	st, h, b = e.httpDo(http.MethodGet, "/v1/ws", "")
	checkAPIError(t, "non-upgrade while draining", st, h, b, 503, server.ErrCodeUnavailable)
}

func TestSpecWebSocketUpgrade(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.AllowedOrigins = []string{"https://chat.example"} })
	// Not an upgrade: 400 invalid_request.
	st, h, b := e.httpDo(http.MethodGet, "/v1/ws", "")
	checkAPIError(t, "plain GET /v1/ws", st, h, b, 400, server.ErrCodeInvalidRequest)
	// No subprotocol: 400 invalid_request.
	st, h, b = e.httpDo(http.MethodGet, "/v1/ws", "", "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
	checkAPIError(t, "upgrade without subprotocol", st, h, b, 400, server.ErrCodeInvalidRequest)
	// A foreign Origin: 403 forbidden.
	st, h, b = e.httpDo(http.MethodGet, "/v1/ws", "", "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==",
		"Sec-WebSocket-Protocol", protocol.Subprotocol, "Origin", "https://evil.example")
	checkAPIError(t, "foreign origin", st, h, b, 403, server.ErrCodeForbidden)
	// The server's own host under a scheme that is not a web origin: 403.
	host := strings.TrimPrefix(e.url, "http://")
	for _, o := range []string{"ws://" + host, "null", "file://" + host} {
		st, h, b = e.httpDo(http.MethodGet, "/v1/ws", "", "Connection", "Upgrade", "Upgrade", "websocket",
			"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==",
			"Sec-WebSocket-Protocol", protocol.Subprotocol, "Origin", o)
		checkAPIError(t, "origin "+o, st, h, b, 403, server.ErrCodeForbidden)
	}
	// The subprotocol is checked before the Origin.
	st, h, b = e.httpDo(http.MethodGet, "/v1/ws", "", "Connection", "Upgrade", "Upgrade", "websocket",
		"Sec-WebSocket-Version", "13", "Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==", "Origin", "https://evil.example")
	checkAPIError(t, "foreign origin without subprotocol", st, h, b, 400, server.ErrCodeInvalidRequest)

	// Allowed: no Origin (a non-browser client), the server's own host, a
	// listed origin. The server selects sigil.v1 and, although the client
	// offers it, does not negotiate compression.
	d := websocket.Dialer{Subprotocols: []string{"other", protocol.Subprotocol}, EnableCompression: true}
	for _, origin := range []string{"", e.url, "https://chat.example"} {
		hdr := http.Header{}
		if origin != "" {
			hdr.Set("Origin", origin)
		}
		ws, resp, err := d.Dial(e.wsURL(), hdr)
		if err != nil {
			t.Fatalf("origin %q: %v", origin, err)
		}
		if p := resp.Header.Get("Sec-WebSocket-Protocol"); p != protocol.Subprotocol {
			t.Errorf("origin %q: subprotocol %q", origin, p)
		}
		if x := resp.Header.Get("Sec-WebSocket-Extensions"); x != "" {
			t.Errorf("origin %q: extensions negotiated: %q", origin, x)
		}
		ws.Close()
	}
}

func TestSpecRefreshFamilyLifetime(t *testing.T) {
	e := newEnvClock(t, nil) // default lifetimes: 15 min tokens, 24 h families
	c := e.login("alice")
	login := c.tok
	if login.RefreshExpiresAt <= login.ExpiresAt {
		t.Fatalf("refresh family ends before the token: %+v", login)
	}
	// The session token has expired; the refresh token still works.
	e.clock.Advance(time.UnixMilli(login.ExpiresAt).Sub(e.clock.Now()) + time.Second)
	c.dial().write(c.helloFrame(login.Token))
	c.expectHelloError(protocol.CodeTokenExpired)
	var r2 server.TokenResponse
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": login.RefreshToken, "proof": c.refreshProof(login.RefreshToken)}, &r2); st != 200 {
		t.Fatalf("refresh after token expiry: %d", st)
	}
	// Rotation does not extend the family; the new token keeps sid, sub and
	// cnf.jkt, with a new jti.
	if r2.RefreshExpiresAt != login.RefreshExpiresAt {
		t.Fatalf("rotation moved the family's end from %d to %d", login.RefreshExpiresAt, r2.RefreshExpiresAt)
	}
	tv := &protocol.TokenVerifier{Keys: e.srv.KeySet(), Issuer: "sigil", Audience: "sigil.v1", Now: e.clock.Now}
	claims, err := tv.Verify(context.Background(), r2.Token)
	must(t, err)
	if claims.Session != login.Session || claims.Subject != "alice" || claims.Confirm.JKT != c.key.Public().Thumbprint() || r2.WSURL != e.wsURL() {
		t.Fatalf("refreshed token %+v", claims)
	}
	// Once the family has ended, its newest refresh token is refused.
	e.clock.Advance(time.UnixMilli(login.RefreshExpiresAt).Sub(e.clock.Now()) + time.Second)
	var ae apiErr
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r2.RefreshToken, "proof": c.refreshProof(r2.RefreshToken)}, &ae); st != 401 || ae.Error != server.ErrCodeInvalidGrant {
		t.Fatalf("refresh after the family's end: %d %v", st, ae)
	}
}

func TestSpecRefreshProofPipeline(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice").connect()
	c.ping()
	c.ping()
	rt := c.tok.RefreshToken
	body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: rt})
	refresh := func(proof []byte) int {
		var ae apiErr
		st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": string(proof)}, &ae)
		if st != 200 && ae.Error != server.ErrCodeInvalidGrant {
			t.Fatalf("refresh %d %v", st, ae)
		}
		return st
	}
	// The proof shares the session's replay state: a seq already used on
	// the WebSocket is replay_seq, hence invalid_grant.
	if st := refresh(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActRefresh, Body: body}, 1))); st != 401 {
		t.Fatalf("replayed seq: %d", st)
	}
	// Freshness.
	if st := refresh(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, TS: time.Now().Add(-time.Hour).UnixMilli()}, c.nextSeq()))); st != 401 {
		t.Fatalf("stale proof: %d", st)
	}
	// act must be refresh.
	if st := refresh(c.sign(&protocol.Envelope{Action: protocol.ActPing, Body: body})); st != 401 {
		t.Fatalf("ping as proof: %d", st)
	}
	// Strict claims: an unknown envelope claim.
	p := strings.Replace(string(c.payload(&protocol.Envelope{Action: protocol.ActRefresh, Body: body}, c.nextSeq())), `"act"`, `"x":1,"act"`, 1)
	if st := refresh(c.signRaw([]byte(p))); st != 401 {
		t.Fatalf("unknown claim in proof: %d", st)
	}
	// Reuse is acted on only under a valid proof: a used refresh token with
	// a proof from another key changes nothing.
	var r2 server.TokenResponse
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": c.refreshProof(rt)}, &r2); st != 200 {
		t.Fatalf("valid proof: %d", st)
	}
	other := e.login("alice")
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": other.refreshProof(rt)}, nil); st != 401 {
		t.Fatalf("used token, foreign proof: %d", st)
	}
	c.ping() // not revoked
	var r3 server.TokenResponse
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r2.RefreshToken, "proof": c.refreshProof(r2.RefreshToken)}, &r3); st != 200 {
		t.Fatalf("family still usable: %d", st)
	}
	// Revocation (step 9): once the subject is revoked, the family's newest
	// refresh token is refused too.
	if _, err := e.srv.RevokeSubject(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	c.expectClose(protocol.CloseRevoked)
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r3.RefreshToken, "proof": c.refreshProof(r3.RefreshToken)}, nil); st != 401 {
		t.Fatalf("refresh after revocation: %d", st)
	}
}

func TestSpecInBandRefreshFailure(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice").connect()
	other := e.login("bob")
	for _, rt := range []string{"unknown", other.tok.RefreshToken} {
		body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: rt})
		sent := c.send(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, Corr: "r"})
		m := c.recvAct(protocol.ActError)
		var eb protocol.ErrorBody
		must(t, json.Unmarshal(m.Body, &eb))
		if eb.Code != protocol.CodeBadToken || eb.Ref != sent.ID || m.Corr != "r" {
			t.Fatalf("in-band refresh with %q: %s cid %q", rt, m.Body, m.Corr)
		}
		c.ping() // the session carries on
	}
	// alice presenting bob's refresh token did not consume it: bob's own
	// refresh still works and is not mistaken for reuse.
	b := other.connect()
	body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: other.tok.RefreshToken})
	b.send(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, Corr: "own"})
	m := b.recvAct(protocol.ActRefreshed)
	var rb protocol.RefreshedBody
	must(t, json.Unmarshal(m.Body, &rb))
	if m.Corr != "own" || rb.Token == "" || rb.RefreshToken == other.tok.RefreshToken {
		t.Fatalf("bob's own refresh after alice presented it: %s", m.Body)
	}
	b.ping()
}

func TestSpecAdminAPI(t *testing.T) {
	e := newEnv(t, nil)
	adm := e.login("admin").connect()
	alice := e.login("alice").connect()
	alice.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a"})
	alice.recvAct(protocol.ActReply)

	// Admin proofs have a replay state of their own: a second signer of the
	// same session key starting again at seq 1 is accepted.
	own := &protocol.ClientSigner{Key: adm.key, Session: adm.tok.Session, Subject: adm.tok.Subject}
	fresh := &client{t: t, e: e, key: adm.key, jwk: adm.jwk, tok: adm.tok, signer: own}
	if st, data := fresh.admin(http.MethodGet, "sessions", ""); st != 200 {
		t.Fatalf("own admin seq: %d %s", st, data)
	}
	adm.ping() // the WebSocket's sequence is unaffected

	// The session list: exactly these members per session.
	st, data := adm.admin(http.MethodGet, "sessions", "")
	var list struct {
		Sessions []map[string]json.RawMessage `json:"sessions"`
	}
	must(t, json.Unmarshal(data, &list))
	if st != 200 || len(list.Sessions) != 2 {
		t.Fatalf("sessions %d %s", st, data)
	}
	for _, s := range list.Sessions {
		var sid string
		must(t, json.Unmarshal(s["sid"], &sid))
		if len(s) != 9 {
			t.Fatalf("session members: %s", data)
		}
		for _, k := range []string{"sid", "sub", "roles", "jti", "remote", "connected_at", "expires_at", "channels", "encrypted"} {
			if _, ok := s[k]; !ok {
				t.Fatalf("session lacks %s: %s", k, data)
			}
		}
		var at time.Time
		must(t, json.Unmarshal(s["connected_at"], &at))
		if sid == alice.tok.Session && string(s["channels"]) != `["rooms.a"]` {
			t.Fatalf("channels %s", s["channels"])
		}
	}

	// The proof's jwk must be the key the bearer token is bound to.
	send := func(tok, method, op, body string, proof []byte) (int, http.Header, []byte) {
		return e.httpDo(method, "/v1/admin/"+op, body, "Authorization", "Bearer "+tok, server.ProofHeader, string(proof))
	}
	mallory := e.login("admin")
	ab, _ := json.Marshal(server.AdminBody{JWK: mallory.jwk, Req: json.RawMessage(`{}`)})
	st2, h, b := send(adm.tok.Token, http.MethodGet, "sessions", "", mallory.sign(&protocol.Envelope{Action: "admin.sessions", Body: ab}))
	checkAPIError(t, "proof by another key", st2, h, b, 401, server.ErrCodeUnauthorized)
	// A proof with a body other than {jwk, req}.
	ab = []byte(`{"jwk":` + string(adm.jwk) + `,"req":{},"x":1}`)
	st2, h, b = send(adm.tok.Token, http.MethodGet, "sessions", "", adm.sign(&protocol.Envelope{Action: "admin.sessions", Body: ab}))
	checkAPIError(t, "proof body with an extra member", st2, h, b, 401, server.ErrCodeUnauthorized)
	// A non-admin with a valid proof: 403 forbidden.
	ab, _ = json.Marshal(server.AdminBody{JWK: alice.jwk, Req: json.RawMessage(`{}`)})
	st2, h, b = send(alice.tok.Token, http.MethodGet, "sessions", "", alice.sign(&protocol.Envelope{Action: "admin.sessions", Body: ab}))
	checkAPIError(t, "non-admin", st2, h, b, 403, server.ErrCodeForbidden)

	// Bad bodies: 400 invalid_request.
	for op, body := range map[string]string{"revoke": `{}`, "kick": `{"sid":""}`} {
		st, data := adm.admin(http.MethodPost, op, body)
		var ae apiErr
		if json.Unmarshal(data, &ae) != nil || st != 400 || ae.Error != server.ErrCodeInvalidRequest {
			t.Fatalf("%s %s: %d %s", op, body, st, data)
		}
	}

	// A kick closes with 4004 but does not revoke: the token still opens a
	// session.
	if st, data := adm.admin(http.MethodPost, "kick", `{"sid":"`+alice.tok.Session+`"}`); st != 200 || string(data) != "{\"closed\":1}\n" {
		t.Fatalf("kick %d %s", st, data)
	}
	alice.expectClose(protocol.CloseKicked)
	again := &client{t: t, e: e, key: alice.key, raw: alice.raw, jwk: alice.jwk, tok: alice.tok, signer: alice.signer, fv: alice.fv}
	again.connect().ping()
	// Revoking a subject with no live session closes nothing.
	if st, data := adm.admin(http.MethodPost, "revoke", `{"sub":"nobody"}`); st != 200 || string(data) != "{\"closed\":0}\n" {
		t.Fatalf("revoke nobody %d %s", st, data)
	}
}

func TestSpecRejectionThreshold(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice").connect()
	// Errors answered after a frame was accepted do not count.
	for i := 0; i < 30; i++ {
		c.send(&protocol.Envelope{Action: protocol.ActDM, To: "nobody", Body: json.RawMessage(`1`)})
		c.expectError(protocol.CodeNotFound)
	}
	// 20 rejected frames within the window are tolerated ...
	for i := 0; i < 20; i++ {
		c.write([]byte("junk"))
		c.expectError(protocol.CodeMalformed)
	}
	c.ping()
	// ... the 21st is answered, then the connection closes with 1008.
	c.write([]byte("junk"))
	c.expectError(protocol.CodeMalformed)
	c.expectClose(websocket.ClosePolicyViolation)
}

// TestSpecActionFields: a built-in action's frame with a field missing or
// one too many (§9.1) — a ping or a sub that carries a body among them — is
// answered bad_request after it was accepted, with its cid and ref; it has
// no effect (nothing is subscribed) and does not count toward the 1008
// threshold (§9.5). (A sub or presence without ch does not get that far
// under the default policy, whose rules for them name channels: forbidden,
// §9.3.)
func TestSpecActionFields(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.MaxViolations = 2 })
	a := e.login("alice").connect()
	e.login("bob").connect()
	body := json.RawMessage(`{"x":1}`)
	for i, env := range []*protocol.Envelope{
		{Action: protocol.ActPing, Body: body},
		{Action: protocol.ActPing, Channel: "rooms.a"},
		{Action: protocol.ActSub, Channel: "rooms.a", Body: body},
		{Action: protocol.ActSub, Channel: "rooms.a", To: "bob"},
		{Action: protocol.ActUnsub, Channel: "rooms.a", Body: body},
		{Action: protocol.ActPresence, Channel: "rooms.a", Body: body},
		{Action: protocol.ActPub, Channel: "rooms.a"},
		{Action: protocol.ActPub, Channel: "rooms.a", To: "bob", Body: body},
		{Action: protocol.ActDM, To: "bob"},
		{Action: protocol.ActDM, To: "bob", Channel: "rooms.a", Body: body},
		{Action: protocol.ActRefresh, Channel: "rooms.a", Body: json.RawMessage(`{"refresh_token":"x"}`)},
	} {
		env.Corr = fmt.Sprint("m", i)
		a.send(env)
		m := a.recv()
		if m.Action != protocol.ActError {
			t.Fatalf("%s %+v: answered %s %s, want bad_request", env.Action, env, m.Action, m.Body)
		}
		var eb protocol.ErrorBody
		must(t, json.Unmarshal(m.Body, &eb))
		if eb.Code != protocol.CodeBadRequest || m.Corr != env.Corr || eb.Ref != env.ID {
			t.Fatalf("%s: error %s (%s), cid %q ref %q; want bad_request, cid %q ref %q", env.Action, eb.Code, eb.Message, m.Corr, eb.Ref, env.Corr, env.ID)
		}
	}
	// The sub with a body subscribed nothing.
	a.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.a", Corr: "p"})
	var pb protocol.PresenceBody
	must(t, json.Unmarshal(a.recvAct(protocol.ActReply).Body, &pb))
	if len(pb.Members) != 0 {
		t.Fatalf("members %v after a refused sub", pb.Members)
	}
	a.ping()
}

func TestSpecIdleTimeout(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		// A pong timeout a loaded 2-core machine meets (300 ms once
		// dropped the live session under a full test run).
		c.PingInterval = 200 * time.Millisecond
		c.PongTimeout = 2 * time.Second
		c.SweepInterval = 50 * time.Millisecond
	})
	live := e.login("alice").connect()
	silent := e.login("bob").connect()
	// live reads (so gorilla answers the server's pings with pongs) but sends
	// no frame; silent neither reads nor sends.
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := live.ws.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	sigiltest.Eventually(t, "the silent session to be dropped", func() bool { return len(e.srv.Sessions()) == 1 }) // about 2 s
	ss := e.srv.Sessions()
	if len(ss) != 1 || ss[0].ID != live.tok.Session {
		t.Fatalf("sessions after the idle timeout: %+v", ss)
	}
	select {
	case err := <-ended:
		t.Fatalf("the live session ended: %v", err)
	case <-time.After(600 * time.Millisecond):
	}
	// The silent one was dropped without a close frame: 1006.
	_ = silent.ws.SetReadDeadline(time.Now().Add(5 * time.Second))
	for {
		_, _, err := silent.ws.ReadMessage()
		if err == nil {
			continue
		}
		// No close frame: gorilla reports 1006 (or the reset itself).
		var ce *websocket.CloseError
		if errors.As(err, &ce) && ce.Code != websocket.CloseAbnormalClosure {
			t.Fatalf("idle close: %v", err)
		}
		break
	}
}

func TestSpecChannelSemantics(t *testing.T) {
	e := newEnv(t, nil)
	bob := e.login("bob").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a"})
	bob.recvAct(protocol.ActReply)
	bob.recvAct(protocol.ActJoin)
	// next checks that the next frame c receives is a pong: nothing else
	// (join, leave, deliver, key) was queued before it.
	next := func(c *client, what string) {
		t.Helper()
		c.send(&protocol.Envelope{Action: protocol.ActPing})
		if m := c.recv(); m.Action != protocol.ActPong {
			t.Fatalf("%s: got %s %s before the pong", what, m.Action, m.Body)
		}
	}

	// Publishing without subscribing is allowed; the sender, not being a
	// subscriber, gets no deliver.
	carol := e.login("carol").connect()
	carol.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`"hi"`), Corr: "p"})
	if m := carol.recv(); m.Action != protocol.ActReply || m.Corr != "p" {
		t.Fatalf("pub without sub: %s %s", m.Action, m.Body)
	}
	d := bob.recvAct(protocol.ActDeliver)
	if snd, _, err := protocol.OpenDelivery(d, nil); err != nil || snd.Subject != "carol" {
		t.Fatalf("deliver %v %v", snd, err)
	}
	// A channel without subscribers: success, nothing delivered.
	carol.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.empty", Body: json.RawMessage(`1`), Corr: "e"})
	if m := carol.recv(); m.Action != protocol.ActReply || m.Corr != "e" {
		t.Fatalf("pub to an empty channel: %s %s", m.Action, m.Body)
	}
	// presence without subscribing.
	carol.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.a"})
	var pb protocol.PresenceBody
	must(t, json.Unmarshal(carol.recvAct(protocol.ActReply).Body, &pb))
	if len(pb.Members) != 1 || pb.Members[0] != "bob" {
		t.Fatalf("presence %v", pb.Members)
	}
	// A channel without subscribers has members [], never an absent member
	// (spec.md §9.1, §9.5): a client reads members.length.
	carol.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.nobody", Corr: "n"})
	if m := carol.recvAct(protocol.ActReply); string(m.Body) != `{"members":[]}` {
		t.Fatalf("presence of an empty channel: %s", m.Body)
	}

	// unsub of a channel the session is not in: success, no leave.
	carol.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.a", Corr: "u"})
	if m := carol.recv(); m.Action != protocol.ActReply || m.Corr != "u" || string(m.Body) != `{}` {
		t.Fatalf("unsub when not subscribed: %s %s", m.Action, m.Body)
	}
	carol.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.nowhere"})
	next(carol, "unsub without cid")
	next(bob, "unsub by a non-member")

	// join and leave are per subject: a second session of alice neither
	// joins nor leaves while the first is subscribed.
	alice := e.login("alice").connect()
	alice.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a"})
	alice.recvAct(protocol.ActReply)
	if j := bob.recvAct(protocol.ActJoin); !strings.Contains(string(j.Body), `"alice"`) {
		t.Fatalf("join %s", j.Body)
	}
	alice2 := e.login("alice").connect()
	alice2.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	var sr protocol.SubReplyBody
	must(t, json.Unmarshal(alice2.recvAct(protocol.ActReply).Body, &sr))
	if len(sr.Members) != 2 {
		t.Fatalf("members %v", sr.Members)
	}
	next(alice2, "second session's sub") // its sub has been handled completely
	next(bob, "second session's join")
	alice2.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.a"})
	next(alice2, "second session's unsub")
	next(bob, "second session's leave")
	alice.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.a"})
	if l := bob.recvAct(protocol.ActLeave); !strings.Contains(string(l.Body), `"alice"`) {
		t.Fatalf("leave %s", l.Body)
	}
}

func TestSpecEncryptedLeaveRotates(t *testing.T) {
	e := newEnv(t, nil)
	enc := func(user string) *client {
		c := e.loginEncrypted(user).connect()
		c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.s"})
		var sr protocol.SubReplyBody
		must(t, json.Unmarshal(c.recvAct(protocol.ActReply).Body, &sr))
		ck, err := protocol.UnwrapContentKey(sr.Key, c.ekey)
		must(t, err)
		c.addKey(ck)
		return c
	}
	alice, bob := enc("alice"), enc("bob")
	first := bob.keyFor("ch:rooms.s")
	if alice.keyFor("ch:rooms.s").ID != first.ID {
		t.Fatal("subscribers do not share the channel key")
	}
	// A session without encryption subscribing and leaving rotates nothing.
	plain := e.login("carol").connect()
	plain.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.s", Corr: "s"})
	var sr protocol.SubReplyBody
	must(t, json.Unmarshal(plain.recvAct(protocol.ActReply).Body, &sr))
	if sr.Key != "" {
		t.Fatal("a session without ekey got a channel key")
	}
	plain.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.s"})
	plain.ping()
	bob.send(&protocol.Envelope{Action: protocol.ActPing})
	for {
		m := bob.recv()
		if m.Action == protocol.ActKey {
			t.Fatal("a plaintext session's leave rotated the key")
		}
		if m.Action == protocol.ActPong {
			break
		}
	}
	// An encrypted session that disconnects (no unsub) rotates the key.
	alice.ws.Close()
	kf := bob.recvAct(protocol.ActKey)
	var kb protocol.KeyBody
	must(t, json.Unmarshal(kf.Body, &kb))
	nk, err := protocol.UnwrapContentKey(kb.Key, bob.ekey)
	must(t, err)
	if nk.ID == first.ID || nk.Scope != "ch:rooms.s" || kf.Session != bob.tok.Session || kf.Channel != "rooms.s" {
		t.Fatalf("key frame: %+v", kf.Envelope)
	}
}

func TestSpecMetricNames(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice").connect()
	c.ping()
	e.postJSON("/v1/token", map[string]any{"grant_type": "password", "username": "alice", "password": "bad", "jwk": json.RawMessage(c.jwk)}, nil)
	_, _, m := e.httpDo(http.MethodGet, "/metrics", "")
	for _, want := range []string{
		"sigil_connections 1", "sigil_connections_total 1", "sigil_frames_accepted_total 2",
		"# TYPE sigil_frames_rejected_total counter", "sigil_verify_seconds_count 2", "sigil_deliveries_total 0",
		"sigil_slow_consumer_drops_total 0",
		`sigil_token_requests_total{result="ok"} 1`, `sigil_token_requests_total{result="invalid_grant"} 1`,
	} {
		if !strings.Contains(string(m), want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// A server-side close is counted by code.
	must(t, c.ws.WriteMessage(websocket.BinaryMessage, []byte{1}))
	c.expectClose(websocket.CloseUnsupportedData)
	deadline := time.Now().Add(5 * time.Second)
	for !strings.Contains(string(m), `sigil_closes_total{code="1003"} 1`) && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
		_, _, m = e.httpDo(http.MethodGet, "/metrics", "")
	}
	if !strings.Contains(string(m), `sigil_closes_total{code="1003"} 1`) {
		t.Error(`metrics lack sigil_closes_total{code="1003"} 1`)
	}
	st, h, b := e.httpDo(http.MethodGet, "/healthz", "")
	if st != 200 || string(b) != "{\"status\":\"ok\"}\n" || h.Get("Content-Type") != "application/json" {
		t.Fatalf("healthz %d %s", st, b)
	}
	if st, _, b := e.httpDo(http.MethodGet, "/readyz", ""); st != 200 || string(b) != "{\"status\":\"ready\"}\n" {
		t.Fatalf("readyz %d %s", st, b)
	}
}
