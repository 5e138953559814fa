package server

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// TokenResponse is the answer of /v1/token and /v1/refresh.
type TokenResponse = protocol.TokenResponse

// maxRequestBody bounds the body of /v1/token and /v1/refresh.
const maxRequestBody = 32 << 10

// decodeRequest reads the bounded strict JSON body of a POST into v
// (protocol.DecodeBody: no unknown, duplicate or case-variant members).
func decodeRequest(r *http.Request, v any) *apiError {
	if r.Method != http.MethodPost {
		return newAPIError(http.StatusMethodNotAllowed, ErrCodeInvalidRequest, "POST only")
	}
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(ct, "application/json") {
		return newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "Content-Type must be application/json")
	}
	data, err := io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	if err != nil || len(data) > maxRequestBody {
		return newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "body too large or unreadable")
	}
	if err := protocol.DecodeBody(data, v); err != nil {
		return newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "body is not strict JSON with the documented members")
	}
	return nil
}

func invalidGrant() *apiError {
	return newAPIError(http.StatusUnauthorized, ErrCodeInvalidGrant, "invalid credentials")
}

// storeFailed answers a request that a failed store operation (already
// logged and counted with storeError) could not complete safely.
func storeFailed() *apiError {
	return storeUnavailable("a store did not answer; try again")
}

// TokenHandler serves POST /v1/token.
func (s *Server) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		res, aerr := s.token(r)
		if aerr != nil {
			s.m.logins.WithLabelValues(aerr.Code).Inc()
			writeError(w, aerr)
			return
		}
		s.m.logins.WithLabelValues("ok").Inc()
		writeJSON(w, http.StatusOK, res)
	})
}

func (s *Server) token(r *http.Request) (any, *apiError) {
	var req protocol.TokenRequest
	if aerr := decodeRequest(r, &req); aerr != nil {
		return nil, aerr
	}
	if req.GrantType == GrantLogin {
		return s.loginGrant(r, &req) // login.go; not rate-limited, as /v1/refresh
	}
	if req.GrantType != GrantPassword && req.GrantType != GrantExternal {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeUnsupported, "grant_type must be password, external or login")
	}
	if req.LoginToken != "" || req.Proof != "" {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "login_token and proof belong to the login grant")
	}
	if len(req.JWK) == 0 {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "jwk is required")
	}
	key, err := protocol.ParsePublicJWK(req.JWK)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "jwk must be a public Ed25519 or P-256 key")
	}
	if s.cfg.Authenticator == nil {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeUnsupported, "no authenticator is configured")
	}
	// Attempts are reserved before the credentials are checked, so that
	// concurrent attempts cannot all be checked before the first failure
	// counts; then a password check takes one of a bounded number of slots.
	addr := clientAddr(r, s.cfg.TrustForwardedFor)
	account := req.GrantType + ":" + req.Username
	failed := false
	addrDone, aerr := s.reserveLogin(r.Context(), s.addrLimit, addr)
	if aerr != nil {
		return nil, aerr
	}
	defer func() { addrDone(failed) }()
	release := func() {}
	if req.GrantType == GrantPassword {
		acctDone, aerr := s.reserveLogin(r.Context(), s.acctLimit, account)
		if aerr != nil {
			return nil, aerr
		}
		defer func() { acctDone(failed) }()
		if release, aerr = s.passwordSlot(); aerr != nil {
			return nil, aerr
		}
	}
	id, err := s.cfg.Authenticator.Authenticate(r.Context(), Credentials{
		GrantType: req.GrantType, Username: req.Username, Password: req.Password, Assertion: req.Assertion,
	})
	release()
	if errors.Is(err, ErrUnsupportedGrant) {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeUnsupported, "grant type not supported here")
	}
	// "server" is reserved for the server's own publishes (spec.md §10.3).
	if err != nil || id == nil || id.Subject == "" || id.Subject == protocol.ServerSubject {
		if err != nil && !errors.Is(err, ErrInvalidCredentials) {
			s.log.Error("authenticator failed", "grant", req.GrantType, "err", err)
		}
		failed = true
		s.log.Info("login failed", "grant", req.GrantType, "remote", addr)
		return nil, invalidGrant()
	}
	jwk, _ := key.MarshalJSON()
	jwk = bytes.Clone(jwk) // exact size: it is kept for the refresh family's lifetime
	if req.Login {
		return s.issueLogin(r, id, key.Thumbprint(), jwk) // login.go
	}
	res, err := s.issue(r.Context(), id.Subject, id.Roles, key.Thumbprint(), jwk, "", "", time.Time{})
	if err != nil {
		s.log.Error("issuing a token failed", "err", err)
		return nil, issued(err)
	}
	res.WSURL = s.wsURL(r)
	s.log.Info("token issued", "sub", id.Subject, "sid", res.Session, "grant", req.GrantType)
	return res, nil
}

// errIssueStore marks an issue that failed because the refresh store did
// (logged and counted already): a grant that consumed nothing (password,
// login) is answered storeFailed, 503 unavailable with Retry-After, as a
// store failure is (spec.md §13.4), not 500 internal, so that the client
// tries again.
var errIssueStore = errors.New("sigil: the refresh store failed")

// issued answers a request whose issue failed with err.
func issued(err error) *apiError {
	if errors.Is(err, errIssueStore) {
		return storeFailed()
	}
	return newAPIError(http.StatusInternalServerError, ErrCodeInternal, "could not issue a token")
}

// issue signs a session token and creates its refresh token. sid and
// family are empty for a new login.
func (s *Server) issue(ctx context.Context, sub string, roles []string, jkt string, jwk []byte, sid, family string, familyExp time.Time) (*TokenResponse, error) {
	ks := s.keys()
	tok, claims, err := ks.issuer.Issue(protocol.IssueRequest{Subject: sub, Roles: roles, JKT: jkt, Session: sid})
	if err != nil {
		return nil, err
	}
	rt, hash, err := NewRefreshToken()
	if err != nil {
		return nil, err
	}
	now := s.cfg.Now()
	rec := RefreshRecord{
		Hash: hash, Family: family, Session: claims.Session, Subject: sub, Roles: claims.Roles,
		JKT: jkt, JWK: jwk, TokenID: claims.ID, TokenIat: claims.IssuedAtTime(), TokenExp: claims.ExpiresAt(), Expires: now.Add(s.cfg.RefreshTTL),
	}
	if family == "" {
		rec.Family = claims.ID // the first jti names the family
	} else if !familyExp.IsZero() {
		rec.Expires = familyExp // rotation does not extend the family
	}
	if err := s.cfg.Refresh.Create(ctx, rec); err != nil {
		s.storeError("refresh", err)
		return nil, fmt.Errorf("%w: %w", errIssueStore, err)
	}
	return &TokenResponse{
		Token: tok, ExpiresAt: claims.ExpiresAt().UnixMilli(), RefreshToken: rt, RefreshExpiresAt: rec.Expires.UnixMilli(),
		Session: claims.Session, Subject: sub, Roles: claims.Roles,
	}, nil
}

func (s *Server) wsURL(r *http.Request) string {
	if s.cfg.WSURL != "" {
		return s.cfg.WSURL
	}
	scheme := "ws"
	if r.TLS != nil {
		scheme = "wss"
	}
	return scheme + "://" + r.Host + "/v1/ws"
}

// rotateRefresh uses a refresh token bound to (sid, jkt) and issues the
// next token of its family. Reuse revokes the family and the session.
// self, when not nil, is the connection that asked in-band: it is left for
// the caller to answer and close.
func (s *Server) rotateRefresh(ctx context.Context, token, sid, jkt string, self *conn) (*TokenResponse, *apiError) {
	// The binding is checked before anything is consumed: a session that
	// presents another session's refresh token must not burn it (the
	// owner's next, legitimate refresh would then look like reuse and
	// revoke the owner's family).
	peek, aerr := s.peekRefresh(ctx, token)
	if aerr != nil {
		return nil, aerr
	}
	if peek.Login || peek.Session != sid || peek.JKT != jkt { // a login token is not a refresh token
		return nil, invalidGrant()
	}
	rec, err := s.cfg.Refresh.Use(ctx, HashRefreshToken(token))
	switch {
	case errors.Is(err, ErrRefreshReused):
		if err := s.refreshReused(ctx, rec, self); err != nil {
			return nil, storeFailed()
		}
		return nil, invalidGrant()
	case errors.Is(err, ErrRefreshInvalid):
		return nil, invalidGrant()
	case err != nil:
		s.storeError("refresh", err)
		return nil, storeFailed()
	case rec.Session != sid || rec.JKT != jkt:
		return nil, invalidGrant()
	}
	res, err := s.issue(ctx, rec.Subject, rec.Roles, rec.JKT, rec.JWK, rec.Session, rec.Family, rec.Expires)
	if err != nil {
		// Not issued(err): the refresh token is used already, and a retry
		// that presented it again would be reuse.
		return nil, newAPIError(http.StatusInternalServerError, ErrCodeInternal, "could not issue a token")
	}
	return res, nil
}

// refreshReused revokes a family whose refresh token was used twice, every
// token issued in it, and closes the session's live sockets with 4003. It
// fails closed: a store error is logged, counted and returned, and the
// request that found the reuse fails (500) instead of answering as if the
// family were revoked; a retry finds the reuse again and retries the
// revocation. The sockets are closed whatever the stores answer.
func (s *Server) refreshReused(ctx context.Context, rec RefreshRecord, self *conn) error {
	s.log.Warn("refresh token reuse: revoking the family", "sub", rec.Subject, "sid", rec.Session)
	var jtis []string
	defer func() {
		// The session's sockets, and those of every other session of the
		// family whose current token was revoked with it (the sessions of
		// one login, spec.md §4.5).
		revoked := make(map[string]bool, len(jtis))
		for _, j := range jtis {
			revoked[j] = true
		}
		for _, c := range s.hub.conns(func(c *conn) bool { return c != self && (c.sid == rec.Session || revoked[c.tokenID()]) }) {
			c.close(protocol.CloseRevoked, "revoked", false)
		}
	}()
	jtis, ferr := s.cfg.Refresh.RevokeFamily(ctx, rec.Family)
	if ferr != nil {
		// Nothing else is revoked, so that the session's key can still
		// sign the proof of a retry, which finds the reuse again.
		s.storeError("refresh", ferr)
		return ferr
	}
	until := s.cfg.Now().Add(s.cfg.TokenTTL + s.cfg.Skew)
	var rerr error
	for _, jti := range jtis {
		if err := s.cfg.Revocations.RevokeToken(ctx, jti, until); err != nil {
			rerr = err
		}
	}
	if rerr != nil {
		s.storeError("revocation", rerr)
	}
	return rerr
}

// RefreshHandler serves POST /v1/refresh.
func (s *Server) RefreshHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var req protocol.RefreshRequest
		if aerr := decodeRequest(r, &req); aerr != nil {
			writeError(w, aerr)
			return
		}
		if req.RefreshToken == "" || req.Proof == "" {
			writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "refresh_token and proof are required"))
			return
		}
		res, aerr := s.httpRefresh(r.Context(), req)
		if aerr != nil {
			writeError(w, aerr)
			return
		}
		res.WSURL = s.wsURL(r)
		writeJSON(w, http.StatusOK, res)
	})
}

func (s *Server) httpRefresh(ctx context.Context, req protocol.RefreshRequest) (*TokenResponse, *apiError) {
	// The proof is checked against the key the refresh token is bound to,
	// so the record is looked up first (by hash; nothing is consumed yet).
	rec, aerr := s.peekRefresh(ctx, req.RefreshToken)
	if aerr != nil {
		return nil, aerr
	}
	if rec.Login {
		return nil, invalidGrant() // a login token mints sessions with the login grant only
	}
	_, m, err := s.keys().verifier.VerifyRecordProof(ctx, protocol.SessionRecord{
		ID: rec.Session, Subject: rec.Subject, Roles: rec.Roles, JWK: rec.JWK,
		TokenID: rec.TokenID, IssuedAt: rec.TokenIat, Expiry: rec.Expires,
	}, []byte(req.Proof))
	if err != nil {
		if c := protocol.CodeOf(err); c == protocol.CodeUnavailable || c == protocol.CodeInternal {
			s.storeError("refresh proof", err)
			return nil, storeFailed()
		}
		return nil, invalidGrant()
	}
	if m.Action != protocol.ActRefresh {
		return nil, invalidGrant()
	}
	var rb protocol.RefreshBody
	if protocol.DecodeBody(m.Body, &rb) != nil || rb.RefreshToken != req.RefreshToken {
		return nil, invalidGrant()
	}
	return s.rotateRefresh(ctx, req.RefreshToken, rec.Session, rec.JKT, nil)
}

// peekRefresh finds a refresh record without consuming it (a used one
// too: consuming it then finds the reuse).
func (s *Server) peekRefresh(ctx context.Context, token string) (RefreshRecord, *apiError) {
	rec, err := s.cfg.Refresh.Get(ctx, HashRefreshToken(token))
	switch {
	case err == nil, errors.Is(err, ErrRefreshReused):
		return rec, nil
	case errors.Is(err, ErrRefreshInvalid):
		return RefreshRecord{}, invalidGrant()
	}
	s.storeError("refresh", err)
	return RefreshRecord{}, storeFailed()
}
