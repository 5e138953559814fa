package server_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

func TestTokenEndpointErrors(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.LoginFailuresPerAccount = 3; c.LoginFailuresPerAddress = 1000 })
	k, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	jwk, _ := k.Public().MarshalJSON()
	var ae apiErr
	cases := []struct {
		body   string
		status int
		code   string
	}{
		{`not json`, 400, server.ErrCodeInvalidRequest},
		{`{"grant_type":"password","username":"alice","password":"pw","jwk":` + string(jwk) + `,"extra":1}`, 400, server.ErrCodeInvalidRequest},
		{`{"grant_type":"password","username":"alice","username":"bob","password":"pw","jwk":` + string(jwk) + `}`, 400, server.ErrCodeInvalidRequest},
		{`{"grant_type":"magic","jwk":` + string(jwk) + `}`, 400, server.ErrCodeUnsupported},
		{`{"grant_type":"password","Username":"alice","password":"pw","jwk":` + string(jwk) + `}`, 400, server.ErrCodeInvalidRequest},
		{`{"grant_type":"external","assertion":"x","jwk":` + string(jwk) + `}`, 400, server.ErrCodeUnsupported},
		{`{"grant_type":"password","username":"alice","password":"pw"}`, 400, server.ErrCodeInvalidRequest},
		{`{"grant_type":"password","username":"alice","password":"pw","jwk":{"kty":"oct","k":"AAAA"}}`, 400, server.ErrCodeInvalidRequest},
		{`{"grant_type":"password","username":"alice","password":"wrong","jwk":` + string(jwk) + `}`, 401, server.ErrCodeInvalidGrant},
		{`{"grant_type":"password","username":"nobody","password":"pw","jwk":` + string(jwk) + `}`, 401, server.ErrCodeInvalidGrant},
	}
	for i, tc := range cases {
		ae = apiErr{}
		if st := e.postJSON("/v1/token", tc.body, &ae); st != tc.status || ae.Error != tc.code {
			t.Errorf("case %d: %d %v, want %d %s", i, st, ae, tc.status, tc.code)
		}
	}
	// The uniform error does not reveal whether the user exists.
	var a1, a2 apiErr
	e.postJSON("/v1/token", `{"grant_type":"password","username":"bob","password":"x","jwk":`+string(jwk)+`}`, &a1)
	e.postJSON("/v1/token", `{"grant_type":"password","username":"ghost","password":"x","jwk":`+string(jwk)+`}`, &a2)
	if a1 != a2 {
		t.Fatalf("errors differ: %v %v", a1, a2)
	}
	// Rate limit per account: alice had one failure above; two more, then 429
	// even with the right password.
	for i := 0; i < 2; i++ {
		e.postJSON("/v1/token", `{"grant_type":"password","username":"alice","password":"bad","jwk":`+string(jwk)+`}`, nil)
	}
	req, _ := http.NewRequest("POST", e.url+"/v1/token", strings.NewReader(`{"grant_type":"password","username":"alice","password":"pw","jwk":`+string(jwk)+`}`))
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 429 || resp.Header.Get("Retry-After") == "" || !strings.Contains(string(body), `"rate_limited"`) {
		t.Fatalf("rate limit: %d %q %s", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	// Other accounts still work.
	e.login("bob")
}

func TestRateLimitPerAddress(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.LoginFailuresPerAddress = 2 })
	k, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	jwk, _ := k.Public().MarshalJSON()
	for _, u := range []string{"u1", "u2"} {
		e.postJSON("/v1/token", `{"grant_type":"password","username":"`+u+`","password":"x","jwk":`+string(jwk)+`}`, nil)
	}
	var ae apiErr
	if st := e.postJSON("/v1/token", `{"grant_type":"password","username":"bob","password":"pw","jwk":`+string(jwk)+`}`, &ae); st != 429 || ae.Error != "rate_limited" {
		t.Fatalf("%d %v", st, ae)
	}
}

func TestTokenResponse(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("carol")
	if c.tok.Subject != "carol" || len(c.tok.Roles) != 2 || c.tok.RefreshToken == "" || c.tok.WSURL != e.wsURL() ||
		c.tok.ExpiresAt <= time.Now().UnixMilli() || c.tok.RefreshExpiresAt <= c.tok.ExpiresAt {
		t.Fatalf("%+v", c.tok)
	}
	claims, err := (&protocol.TokenVerifier{Keys: e.srv.KeySet(), Issuer: "sigil", Audience: "sigil.v1"}).Verify(context.Background(), c.tok.Token)
	must(t, err)
	if claims.Confirm.JKT != c.key.Public().Thumbprint() || claims.Session != c.tok.Session {
		t.Fatal("token not bound to the key")
	}
}

func (c *client) refreshProof(rt string) string {
	body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: rt})
	return string(c.sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: body}))
}

func TestRefreshHTTPRotationAndReuse(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice").connect()
	rt1 := c.tok.RefreshToken
	var r2 server.TokenResponse
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt1, "proof": c.refreshProof(rt1)}, &r2); st != 200 {
		t.Fatalf("refresh %d", st)
	}
	if r2.Session != c.tok.Session || r2.RefreshToken == rt1 || r2.Token == c.tok.Token {
		t.Fatal("refresh did not rotate")
	}
	// A proof signed by another key is refused.
	other := e.login("alice")
	var ae apiErr
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r2.RefreshToken, "proof": other.refreshProof(r2.RefreshToken)}, &ae); st != 401 || ae.Error != "invalid_grant" {
		t.Fatalf("foreign proof: %d %v", st, ae)
	}
	// A proof for another refresh token is refused.
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r2.RefreshToken, "proof": c.refreshProof("other")}, &ae); st != 401 {
		t.Fatalf("mismatched proof: %d", st)
	}
	// Reusing the rotated token revokes the family and closes the session.
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt1, "proof": c.refreshProof(rt1)}, &ae); st != 401 || ae.Error != "invalid_grant" {
		t.Fatalf("reuse: %d %v", st, ae)
	}
	c.expectClose(protocol.CloseRevoked)
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r2.RefreshToken, "proof": c.refreshProof(r2.RefreshToken)}, &ae); st != 401 {
		t.Fatalf("family not revoked: %d", st)
	}
	// The token issued by the revoked family no longer opens a session.
	c2 := &client{t: t, e: e, key: c.key, raw: c.raw, jwk: c.jwk, tok: r2, signer: c.signer, fv: c.fv}
	c2.dial().write(c2.helloFrame(r2.Token))
	c2.expectHelloError(protocol.CodeTokenRevoked)
	c2.expectClose(protocol.CloseRevoked)
	// Garbage.
	if st := e.postJSON("/v1/refresh", `{"refresh_token":"x"}`, &ae); st != 400 {
		t.Fatalf("missing proof: %d", st)
	}
}

// In-band refresh, reuse and expiry, on the server's injected clock: no
// test waits through a real token lifetime.
func TestInBandRefreshAndExpiry(t *testing.T) {
	clk := sigiltest.NewStoppedClock()
	e := newEnv(t, func(c *server.Config) { c.Now, c.SweepInterval = clk.Now, 20*time.Millisecond })
	c := e.loginOn("alice", clk).connect()
	d := e.loginOn("bob", clk).connect()
	clk.Advance(15*time.Minute - 59*time.Second) // inside the default 60 s warning
	m := c.recvAct(protocol.ActExpiring)
	var xb protocol.ExpiringBody
	must(t, json.Unmarshal(m.Body, &xb))
	if xb.Expiry != c.tok.ExpiresAt {
		t.Fatalf("expiring %d vs %d", xb.Expiry, c.tok.ExpiresAt)
	}
	body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: c.tok.RefreshToken})
	c.send(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, Corr: "r"})
	m = c.recvAct(protocol.ActRefreshed)
	var rb protocol.RefreshedBody
	must(t, json.Unmarshal(m.Body, &rb))
	if m.Corr != "r" || rb.Token == "" || rb.RefreshToken == c.tok.RefreshToken {
		t.Fatal("refreshed")
	}
	if rb.Expiry != clk.Now().Add(15*time.Minute).Truncate(time.Second).UnixMilli() {
		t.Fatalf("refreshed token expires at %d, want 15 min from the server's clock", rb.Expiry)
	}
	// Reusing the old refresh token in-band fails with bad_token.
	c.send(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, Corr: "r2"})
	c.expectError(protocol.CodeBadToken)
	// which revoked the family: the session closes with 4003.
	c.expectClose(protocol.CloseRevoked)

	// Without refresh: expiring, then close 4002 at exp.
	d.recvAct(protocol.ActExpiring)
	d.ping()
	clk.Advance(time.Minute)
	d.expectClose(protocol.CloseTokenExpired)
}

func TestJWKSRotation(t *testing.T) {
	e := newEnv(t, nil)
	old := e.login("alice")
	newKey, _ := protocol.GenerateKey(protocol.ES256, nil)
	must(t, e.srv.RotateKey(newKey))
	resp, err := http.Get(e.url + "/.well-known/jwks.json")
	must(t, err)
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	ks, err := protocol.ParseKeySet(data)
	must(t, err)
	if len(ks.Keys()) != 2 || resp.Header.Get("Content-Type") != "application/jwk-set+json" {
		t.Fatalf("jwks %s", data)
	}
	fresh := e.login("bob")
	if !strings.Contains(fresh.tok.Token, "") {
		t.Fatal()
	}
	hdr, _ := b64.DecodeString(strings.Split(fresh.tok.Token, ".")[0])
	if !strings.Contains(string(hdr), newKey.KeyID()) {
		t.Fatalf("new key does not sign: %s", hdr)
	}
	old.fv.Keys = e.srv.KeySet()
	old.connect() // old token still verifies
	// Retire the old key: its tokens stop working.
	for _, k := range ks.Keys() {
		if k.KeyID() != newKey.KeyID() {
			must(t, e.srv.RetireKey(k.KeyID()))
		}
	}
	if e.srv.RetireKey(newKey.KeyID()) == nil {
		t.Fatal("retired the signing key")
	}
	old2 := &client{t: t, e: e, key: old.key, jwk: old.jwk, tok: old.tok, signer: old.signer, fv: &protocol.FrameVerifier{Keys: e.srv.KeySet(), Session: old.tok.Session, Subject: "alice"}}
	old2.dial().write(old2.helloFrame(old.tok.Token))
	old2.expectHelloError(protocol.CodeBadToken)
	fresh.fv.Keys = e.srv.KeySet()
	fresh.connect().ping()
}

// admin signs an admin request with c's session key.
func (c *client) admin(method, op string, body string) (int, []byte) {
	c.t.Helper()
	req := body
	if req == "" {
		req = "{}"
	}
	ab, _ := json.Marshal(server.AdminBody{JWK: c.jwk, Req: json.RawMessage(req)})
	proof := c.sign(&protocol.Envelope{Action: "admin." + op, Body: ab})
	r, _ := http.NewRequest(method, c.e.url+"/v1/admin/"+op, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+c.tok.Token)
	r.Header.Set(server.ProofHeader, string(proof))
	resp, err := http.DefaultClient.Do(r)
	must(c.t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, data
}

func TestAdminAPI(t *testing.T) {
	e := newEnv(t, nil)
	adm := e.login("admin")
	// No session yet: the list is [], never null (spec §13.6).
	if st, data := adm.admin("GET", "sessions", ""); st != 200 || string(bytes.TrimSpace(data)) != `{"sessions":[]}` {
		t.Fatalf("empty sessions: %d %s", st, data)
	}
	alice := e.login("alice").connect()
	bob := e.login("bob").connect()
	bob2 := e.login("bob").connect()
	carol := e.login("carol").connect()

	st, data := adm.admin("GET", "sessions", "")
	var list struct{ Sessions []server.SessionInfo }
	must(t, json.Unmarshal(data, &list))
	if st != 200 || len(list.Sessions) != 4 {
		t.Fatalf("sessions %d %s", st, data)
	}
	// Non-admin: 403. No proof: 401. Proof for another op: 401. Replayed proof: 401.
	if st, _ := alice.admin("GET", "sessions", ""); st != 403 {
		t.Fatalf("non-admin %d", st)
	}
	r, _ := http.NewRequest("GET", e.url+"/v1/admin/sessions", nil)
	r.Header.Set("Authorization", "Bearer "+adm.tok.Token)
	resp, _ := http.DefaultClient.Do(r)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("no proof %d", resp.StatusCode)
	}
	ab, _ := json.Marshal(server.AdminBody{JWK: adm.jwk, Req: json.RawMessage(`{}`)})
	proof := adm.sign(&protocol.Envelope{Action: "admin.kick", Body: ab})
	for i, want := range []int{401, 401} {
		r, _ = http.NewRequest("GET", e.url+"/v1/admin/sessions", nil)
		r.Header.Set("Authorization", "Bearer "+adm.tok.Token)
		r.Header.Set(server.ProofHeader, string(proof))
		resp, _ = http.DefaultClient.Do(r)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("wrong-op proof %d: %d", i, resp.StatusCode)
		}
	}
	// Proof body must match the request body.
	ab, _ = json.Marshal(server.AdminBody{JWK: adm.jwk, Req: json.RawMessage(`{"sid":"x"}`)})
	proof = adm.sign(&protocol.Envelope{Action: "admin.kick", Body: ab})
	r, _ = http.NewRequest("POST", e.url+"/v1/admin/kick", strings.NewReader(`{"sid":"`+alice.tok.Session+`"}`))
	r.Header.Set("Authorization", "Bearer "+adm.tok.Token)
	r.Header.Set(server.ProofHeader, string(proof))
	resp, _ = http.DefaultClient.Do(r)
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("body mismatch %d", resp.StatusCode)
	}

	// Kick alice: 4004.
	if st, data := adm.admin("POST", "kick", `{"sid":"`+alice.tok.Session+`"}`); st != 200 || string(data) != "{\"closed\":1}\n" {
		t.Fatalf("kick %d %s", st, data)
	}
	alice.expectClose(protocol.CloseKicked)
	if st, _ := adm.admin("POST", "kick", `{"sid":"00000000-0000-4000-8000-000000000000"}`); st != 404 {
		t.Fatalf("kick unknown %d", st)
	}
	// Revoke bob by subject: both sessions close 4003.
	if st, data := adm.admin("POST", "revoke", `{"sub":"bob"}`); st != 200 || string(data) != "{\"closed\":2}\n" {
		t.Fatalf("revoke sub %d %s", st, data)
	}
	bob.expectClose(protocol.CloseRevoked)
	bob2.expectClose(protocol.CloseRevoked)
	// Revoke carol's token by jti.
	claims, err := (&protocol.TokenVerifier{Keys: e.srv.KeySet(), Issuer: "sigil", Audience: "sigil.v1"}).Verify(context.Background(), carol.tok.Token)
	must(t, err)
	if st, _ := adm.admin("POST", "revoke", `{"jti":"`+claims.ID+`"}`); st != 200 {
		t.Fatalf("revoke jti %d", st)
	}
	carol.expectClose(protocol.CloseRevoked)
	if st, _ := adm.admin("POST", "revoke", `{"jti":"a","sub":"b"}`); st != 400 {
		t.Fatalf("revoke both %d", st)
	}
	if st, _ := adm.admin("GET", "nothing", ""); st != 404 {
		t.Fatalf("unknown op %d", st)
	}
}

func TestHealthReadyMetrics(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice").connect()
	c.ping()
	c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "nope.x"})
	c.expectError(protocol.CodeForbidden)
	get := func(p string) (int, string) {
		resp, err := http.Get(e.url + p)
		must(t, err)
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if st, _ := get("/healthz"); st != 200 {
		t.Fatal("healthz")
	}
	if st, _ := get("/readyz"); st != 200 {
		t.Fatal("readyz")
	}
	_, m := get("/metrics")
	for _, want := range []string{"sigil_connections 1", "sigil_frames_accepted_total 2", `sigil_frames_rejected_total{code="forbidden"} 1`,
		"sigil_verify_seconds_bucket", "sigil_deliveries_total", "sigil_slow_consumer_drops_total 0",
		"sigil_idle_memory_returns_total", "sigil_idle_memory_returned_bytes_total"} {
		if !strings.Contains(m, want) {
			t.Errorf("metrics lack %q", want)
		}
	}
	// Shutdown: 1001 to every session, readyz 503, new upgrades refused.
	done := make(chan error)
	go func() { done <- e.srv.Shutdown(context.Background()) }()
	c.expectClose(websocket.CloseGoingAway)
	must(t, <-done)
	if st, _ := get("/readyz"); st != 503 {
		t.Fatal("readyz after shutdown")
	}
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	if _, resp, err := d.Dial(e.wsURL(), nil); err == nil || resp.StatusCode != 503 {
		t.Fatal("upgrade after shutdown")
	}
}

// /metrics carries the standard Go runtime and process collectors, on the
// server's private registry and on one that already has them.
func TestMetricsRuntimeCollectors(t *testing.T) {
	shared := prometheus.NewRegistry()
	shared.MustRegister(collectors.NewGoCollector())
	for name, reg := range map[string]*prometheus.Registry{"private": nil, "shared": shared} {
		e := newEnv(t, func(c *server.Config) {
			if reg != nil {
				c.Registerer, c.Gatherer = reg, reg
			}
		})
		resp, err := http.Get(e.url + "/metrics")
		must(t, err)
		m, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		for _, want := range []string{"go_goroutines ", "go_memstats_heap_inuse_bytes ", "process_resident_memory_bytes ", "process_open_fds "} {
			if !strings.Contains(string(m), "\n"+want) {
				t.Errorf("%s registry: /metrics lacks %q", name, want)
			}
		}
	}
}

func TestBinaryFrameAndSlowConsumer(t *testing.T) {
	// The write deadline is far longer than it takes to overflow the
	// queue, so that the slow consumer is dropped by the overflow (4005)
	// and not, on a busy machine, by a write that times out first.
	e := newEnv(t, func(c *server.Config) { c.SendQueue, c.WriteTimeout = 8, 30*time.Second })
	c := e.login("alice").connect()
	must(t, c.ws.WriteMessage(websocket.BinaryMessage, []byte{1, 2, 3}))
	c.expectClose(websocket.CloseUnsupportedData)

	// A slow consumer (never reads) is closed with 4005; others carry on.
	slow := e.login("bob").connect()
	slow.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.flood"})
	fast := e.login("carol").connect()
	fast.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.flood"})
	fast.recvAct(protocol.ActReply)
	big := json.RawMessage(`"` + strings.Repeat("z", 30000) + `"`)
	go func() {
		// Drain fast's socket in the background so that it keeps up.
		for {
			if _, _, err := fast.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	pub := e.login("alice").connect()
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		if len(e.srv.Sessions()) < 3 {
			break
		}
		pub.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.flood", Body: big})
		// One publish at a time (the pong follows its fan-out), so that
		// only the consumer that does not read falls behind: an unpaced
		// flood can overflow a reading consumer's 8-frame queue too.
		pub.ping()
	}
	if n := len(e.srv.Sessions()); n != 2 {
		t.Fatalf("slow consumer not dropped (%d sessions)", n)
	}
	// The close frame usually cannot reach a consumer whose socket is full:
	// it sees 4005 or an abnormal closure (1006).
	_ = slow.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
	for {
		_, _, err := slow.ws.ReadMessage()
		if err == nil {
			continue
		}
		if ce, ok := err.(*websocket.CloseError); ok && ce.Code != int(protocol.CloseSlowConsumer) && ce.Code != websocket.CloseAbnormalClosure {
			t.Fatalf("slow consumer closed with %d", ce.Code)
		}
		break
	}
	pub.ping()
	resp, err := http.Get(e.url + "/metrics")
	must(t, err)
	m, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !strings.Contains(string(m), "sigil_slow_consumer_drops_total 1") || !strings.Contains(string(m), `sigil_closes_total{code="4005"} 1`) {
		t.Fatalf("slow consumer metrics:\n%s", grepLines(string(m), "sigil_slow_consumer_drops_total", "sigil_closes_total"))
	}
}

func TestExternalGrant(t *testing.T) {
	idpKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	jwks := &jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &idpKey.PublicKey, KeyID: "idp-1", Algorithm: "ES256", Use: "sig"}}}
	x := &server.ExternalIssuer{Issuer: "https://idp.example", Audience: "sigil", Keys: jwks, RoleMap: map[string][]string{"staff": {"user"}, "ops": {"user", "admin"}}}
	e := newEnv(t, func(c *server.Config) {
		c.Authenticator = server.Authenticators{Password: server.StaticUsers{Doc: testUsers()}, External: x}
	})
	sign := func(key any, kid string, cl map[string]any) string {
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		must(t, err)
		tok, err := jwt.Signed(s).Claims(cl).Serialize()
		must(t, err)
		return tok
	}
	k, _ := protocol.GenerateKey(protocol.ES256, nil)
	jwk, _ := k.Public().MarshalJSON()
	now := time.Now().Unix()
	good := map[string]any{"iss": "https://idp.example", "aud": "sigil", "sub": "dave", "exp": now + 60, "iat": now, "roles": []string{"staff", "other"}}
	var res server.TokenResponse
	if st := e.postJSON("/v1/token", map[string]any{"grant_type": "external", "assertion": sign(idpKey, "idp-1", good), "jwk": json.RawMessage(jwk)}, &res); st != 200 {
		t.Fatalf("external %d", st)
	}
	if res.Subject != "dave" || len(res.Roles) != 1 || res.Roles[0] != "user" {
		t.Fatalf("%+v", res)
	}
	rogue, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	bad := []string{
		sign(rogue, "idp-1", good),
		sign(idpKey, "idp-2", good),
		sign(idpKey, "idp-1", map[string]any{"iss": "https://idp.example", "aud": "other", "sub": "dave", "exp": now + 60}),
		sign(idpKey, "idp-1", map[string]any{"iss": "https://evil", "aud": "sigil", "sub": "dave", "exp": now + 60}),
		sign(idpKey, "idp-1", map[string]any{"iss": "https://idp.example", "aud": "sigil", "sub": "dave", "exp": now - 120}),
		sign(idpKey, "idp-1", map[string]any{"iss": "https://idp.example", "aud": "sigil", "sub": "dave"}),
		"garbage",
	}
	for i, a := range bad {
		var ae apiErr
		if st := e.postJSON("/v1/token", map[string]any{"grant_type": "external", "assertion": a, "jwk": json.RawMessage(jwk)}, &ae); st != 401 || ae.Error != "invalid_grant" {
			t.Errorf("bad assertion %d: %d %v", i, st, ae)
		}
	}
}

// grepLines returns the lines of text that start with one of prefixes.
func grepLines(text string, prefixes ...string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		for _, p := range prefixes {
			if strings.HasPrefix(l, p) {
				out = append(out, l)
			}
		}
	}
	return strings.Join(out, "\n")
}
