package server_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// loginFor asks /v1/token for a login of user (spec.md §4.5), bound to a
// fresh login key.
func (e *env) loginFor(user string) (*protocol.PrivateKey, protocol.LoginResponse) {
	e.t.Helper()
	lk, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(e.t, err)
	jwk, _ := lk.Public().MarshalJSON()
	var lr protocol.LoginResponse
	if st := e.postJSON("/v1/token", map[string]any{"grant_type": "password", "username": user, "password": "pw", "jwk": json.RawMessage(jwk), "login": true}, &lr); st != 200 || lr.LoginToken == "" || lr.Subject != user {
		e.t.Fatalf("login for %s: %d %+v", user, st, lr)
	}
	return lk, lr
}

// loginProof signs a login proof with key: a sid of its own, act refresh,
// body {login_token, jwk}; mod may change the envelope or the signer.
func loginProof(t testing.TB, key *protocol.PrivateKey, sub, loginToken string, jwk json.RawMessage, mod func(*protocol.ClientSigner, *protocol.Envelope)) string {
	t.Helper()
	body, _ := json.Marshal(protocol.LoginProofBody{LoginToken: loginToken, JWK: jwk})
	s := &protocol.ClientSigner{Key: key, Session: uuid.NewString(), Subject: sub}
	env := &protocol.Envelope{Action: protocol.ActRefresh, Body: body}
	if mod != nil {
		mod(s, env)
	}
	fr, err := s.Sign(env)
	must(t, err)
	return string(fr)
}

// mint asks for a session from a login with proof; on 200 it returns a
// client ready to connect.
func (e *env) mint(loginToken, proof string, key *protocol.PrivateKey) (int, *client, apiErr) {
	e.t.Helper()
	jwk, _ := key.Public().MarshalJSON()
	var raw json.RawMessage
	st := e.postJSON("/v1/token", map[string]any{"grant_type": "login", "login_token": loginToken, "proof": proof, "jwk": json.RawMessage(jwk)}, &raw)
	var ae apiErr
	if st != 200 {
		_ = json.Unmarshal(raw, &ae)
		return st, nil, ae
	}
	c := &client{t: e.t, e: e, key: key, jwk: jwk}
	must(e.t, json.Unmarshal(raw, &c.tok))
	c.signer = &protocol.ClientSigner{Key: key, Session: c.tok.Session, Subject: c.tok.Subject}
	c.fv = &protocol.FrameVerifier{Keys: e.srv.KeySet(), Session: c.tok.Session, Subject: c.tok.Subject}
	return st, c, ae
}

// TestLoginGrant: a login mints any number of sessions of its own, each
// with a proof signed by the login key and usable once; every bad proof is
// 401 invalid_grant; a reused refresh token of one session revokes the
// login with all its sessions (spec.md §4.5).
func TestLoginGrant(t *testing.T) {
	e := newEnv(t, nil)
	lk, lr := e.loginFor("alice")
	newKey := func() (*protocol.PrivateKey, json.RawMessage) {
		k, err := protocol.GenerateKey(protocol.EdDSA, nil)
		must(t, err)
		j, _ := k.Public().MarshalJSON()
		return k, j
	}

	ka, ja := newKey()
	proofA := loginProof(t, lk, "alice", lr.LoginToken, ja, nil)
	st, a, ae := e.mint(lr.LoginToken, proofA, ka)
	if st != 200 {
		t.Fatalf("mint: %d %v", st, ae)
	}
	kb, jb := newKey()
	st, b, ae := e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jb, nil), kb)
	if st != 200 {
		t.Fatalf("mint: %d %v", st, ae)
	}
	if a.tok.Session == b.tok.Session || a.tok.Subject != "alice" || a.tok.RefreshExpiresAt != lr.ExpiresAt {
		t.Fatalf("sessions %+v %+v", a.tok, b.tok)
	}
	a.connect().ping()
	b.connect().ping()

	refused := func(what string, st int, ae apiErr, status int, code string) {
		t.Helper()
		if st != status || ae.Error != code {
			t.Fatalf("%s: %d %v, want %d %s", what, st, ae, status, code)
		}
	}
	// The same proof again: replayed.
	st, _, ae = e.mint(lr.LoginToken, proofA, ka)
	refused("replayed proof", st, ae, 401, "invalid_grant")
	// A proof for another key than the request's.
	kc, jc := newKey()
	kd, _ := newKey()
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jc, nil), kd)
	refused("proof for another session key", st, ae, 401, "invalid_grant")
	// Signed by another key than the login key.
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, kd, "alice", lr.LoginToken, jc, nil), kc)
	refused("proof not signed by the login key", st, ae, 401, "invalid_grant")
	// Stale.
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jc, func(s *protocol.ClientSigner, _ *protocol.Envelope) {
		s.Now = func() time.Time { return time.Now().Add(-2 * time.Minute) }
	}), kc)
	refused("stale proof", st, ae, 401, "invalid_grant")
	// Another subject, another act, another login token in the body.
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "bob", lr.LoginToken, jc, nil), kc)
	refused("proof for another subject", st, ae, 401, "invalid_grant")
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jc, func(_ *protocol.ClientSigner, env *protocol.Envelope) { env.Action = "app.x" }), kc)
	refused("proof with another act", st, ae, 401, "invalid_grant")
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "alice", "x"+lr.LoginToken, jc, nil), kc)
	refused("proof for another login token", st, ae, 401, "invalid_grant")
	// A session's refresh token is not a login token, nor the reverse.
	st, _, ae = e.mint(a.tok.RefreshToken, loginProof(t, ka, "alice", a.tok.RefreshToken, jc, nil), kc)
	refused("refresh token as a login token", st, ae, 401, "invalid_grant")
	lsigner := &protocol.ClientSigner{Key: lk, Session: a.tok.Session, Subject: "alice"}
	body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: lr.LoginToken})
	proof, _ := lsigner.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: body})
	var ae2 apiErr
	st = e.postJSON("/v1/refresh", protocol.RefreshRequest{RefreshToken: lr.LoginToken, Proof: string(proof)}, &ae2)
	refused("login token at /v1/refresh", st, ae2, 401, "invalid_grant")
	// Members of other grants.
	st = e.postJSON("/v1/token", map[string]any{"grant_type": "login", "login_token": lr.LoginToken, "proof": proofA, "jwk": jc, "username": "alice"}, &ae2)
	refused("login grant with a username", st, ae2, 400, "invalid_request")
	st = e.postJSON("/v1/token", map[string]any{"grant_type": "password", "username": "alice", "password": "pw", "jwk": jc, "login_token": lr.LoginToken}, &ae2)
	refused("password grant with a login token", st, ae2, 400, "invalid_request")
	st = e.postJSON("/v1/token", map[string]any{"grant_type": "login", "login_token": lr.LoginToken, "jwk": jc}, &ae2)
	refused("login grant without proof", st, ae2, 400, "invalid_request")

	// The login still works after all that.
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jc, nil), kc)
	if st != 200 {
		t.Fatalf("mint after refusals: %d %v", st, ae)
	}

	// Session a refreshes over HTTP, then its used refresh token is
	// presented again: reuse. The whole login goes: b's connection closes
	// with 4003, b cannot refresh, and the login mints nothing more.
	refreshA := func() (int, server.TokenResponse) {
		body, _ := json.Marshal(protocol.RefreshBody{RefreshToken: a.tok.RefreshToken})
		proof, _ := a.signer.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: body})
		var tr server.TokenResponse
		return e.postJSON("/v1/refresh", protocol.RefreshRequest{RefreshToken: a.tok.RefreshToken, Proof: string(proof)}, &tr), tr
	}
	if st, tr := refreshA(); st != 200 || tr.Session != a.tok.Session {
		t.Fatalf("refresh: %d %+v", st, tr)
	}
	if st, _ := refreshA(); st != 401 {
		t.Fatalf("reused refresh token: %d", st)
	}
	b.expectClose(protocol.CloseRevoked)
	body, _ = json.Marshal(protocol.RefreshBody{RefreshToken: b.tok.RefreshToken})
	proof, _ = b.signer.Sign(&protocol.Envelope{Action: protocol.ActRefresh, Body: body})
	st = e.postJSON("/v1/refresh", protocol.RefreshRequest{RefreshToken: b.tok.RefreshToken, Proof: string(proof)}, &ae2)
	refused("refresh of another session of a revoked login", st, ae2, 401, "invalid_grant")
	ke, je := newKey()
	st, _, ae = e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, je, nil), ke)
	refused("mint from a revoked login", st, ae, 401, "invalid_grant")
}

// A login ends when its family does, and an administrator's revocation of
// the subject ends it too.
func TestLoginRevokedWithSubject(t *testing.T) {
	e := newEnv(t, nil)
	lk, lr := e.loginFor("bob")
	k, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	j, _ := k.Public().MarshalJSON()
	if _, err := e.srv.RevokeSubject(t.Context(), "bob"); err != nil {
		t.Fatal(err)
	}
	st, _, ae := e.mint(lr.LoginToken, loginProof(t, lk, "bob", lr.LoginToken, j, nil), k)
	if st != 401 || ae.Error != "invalid_grant" {
		t.Fatalf("mint after the subject's revocation: %d %v", st, ae)
	}
}
