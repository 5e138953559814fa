package server

import (
	"bytes"
	"errors"
	"net/http"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/protocol"
)

// PasswordCheckMemory is the memory one password check is counted at when
// Config.PasswordHashMemory is divided into concurrent checks: 19 MiB, what
// an argon2id check with HashPassword's parameters (m = 19,456 KiB) takes.
const PasswordCheckMemory = argonMemory * 1024

// DefaultPasswordHashMemory is the default Config.PasswordHashMemory: 256
// MiB, 13 concurrent checks.
const DefaultPasswordHashMemory = 256 << 20

// passwordChecks is the number of password checks that may run at once.
func (c *Config) passwordChecks() int {
	return max(1, int(c.PasswordHashMemory/PasswordCheckMemory))
}

// passwordSlot takes one of the concurrent password-check slots, or
// answers 503 unavailable at once, with Retry-After, when all are busy: a
// burst of logins then costs the server at most PasswordHashMemory, and
// the excess is refused before any password is hashed.
func (s *Server) passwordSlot() (release func(), aerr *apiError) {
	select {
	case s.hashSlots <- struct{}{}:
	default:
		e := newAPIError(http.StatusServiceUnavailable, ErrCodeUnavailable, "too many logins in progress")
		e.retryAfter = time.Second
		return nil, e
	}
	s.m.passwordChecks.Inc()
	return func() {
		s.m.passwordChecks.Dec()
		<-s.hashSlots
	}, nil
}

func rateLimited(left time.Duration) *apiError {
	e := newAPIError(http.StatusTooManyRequests, ErrCodeRateLimited, "too many failed attempts")
	e.retryAfter = left
	return e
}

// Logins (spec.md §4.5): one sign-in from which any number of processes
// mint sessions of their own. A login is a refresh family bound to a login
// key; its record (RefreshRecord.Login) is found by the login token's hash
// and never consumed. Each session minted from it has its own sid, seq and
// session key, and refresh tokens of its own in the login's family: a
// reused refresh token of any of them revokes the family, the login
// included.

// issueLogin creates a login for an authenticated identity, bound to the
// login key jkt/jwk, and answers with its login token.
func (s *Server) issueLogin(r *http.Request, id *Identity, jkt string, jwk []byte) (*protocol.LoginResponse, *apiError) {
	failed := func(err error) *apiError {
		s.log.Error("creating a login failed", "err", err)
		return newAPIError(http.StatusInternalServerError, ErrCodeInternal, "could not create the login")
	}
	if len(id.Roles) > protocol.MaxRoles || len(id.Subject) > 256 {
		return nil, failed(errors.New("identity does not fit a session token"))
	}
	lt, hash, err := NewRefreshToken()
	if err != nil {
		return nil, failed(err)
	}
	family, sid := uuid.NewString(), uuid.NewString()
	now := s.cfg.Now()
	roles := id.Roles
	if roles == nil {
		roles = []string{}
	}
	rec := RefreshRecord{
		Hash: hash, Family: family, Session: sid, Subject: id.Subject, Roles: roles,
		JKT: jkt, JWK: jwk, TokenIat: now.Truncate(time.Second), Expires: now.Add(s.cfg.RefreshTTL), Login: true,
	}
	if err := s.cfg.Refresh.Create(r.Context(), rec); err != nil {
		s.storeError("refresh", err)
		return nil, storeFailed()
	}
	s.log.Info("login created", "sub", id.Subject)
	return &protocol.LoginResponse{
		LoginToken: lt, ExpiresAt: rec.Expires.UnixMilli(), Subject: id.Subject, Roles: roles, WSURL: s.wsURL(r),
	}, nil
}

// loginGrant mints a new session from a login: the login token, a proof
// signed by its login key, and the new session's key.
func (s *Server) loginGrant(r *http.Request, req *protocol.TokenRequest) (*TokenResponse, *apiError) {
	if req.LoginToken == "" || req.Proof == "" || len(req.JWK) == 0 {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "the login grant needs login_token, proof and jwk")
	}
	if req.Username != "" || req.Password != "" || req.Assertion != "" || req.Login {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "the login grant takes only login_token, proof and jwk")
	}
	key, err := protocol.ParsePublicJWK(req.JWK)
	if err != nil {
		return nil, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "jwk must be a public Ed25519 or P-256 key")
	}
	ctx := r.Context()
	// A login whose family was revoked (a reused refresh token of one of
	// its sessions) is refused like an unknown one; nothing is consumed.
	rec, err := s.cfg.Refresh.Get(ctx, HashRefreshToken(req.LoginToken))
	switch {
	case errors.Is(err, ErrRefreshInvalid), errors.Is(err, ErrRefreshReused):
		return nil, invalidGrant()
	case err != nil:
		s.storeError("refresh", err)
		return nil, storeFailed()
	case !rec.Login:
		return nil, invalidGrant()
	}
	m, err := s.keys().verifier.VerifyLoginProof(ctx, protocol.SessionRecord{
		ID: rec.Session, Subject: rec.Subject, Roles: rec.Roles, JWK: rec.JWK,
		TokenID: rec.TokenID, IssuedAt: rec.TokenIat, Expiry: rec.Expires,
	}, []byte(req.Proof))
	if err != nil {
		if c := protocol.CodeOf(err); c == protocol.CodeUnavailable || c == protocol.CodeInternal {
			s.storeError("login proof", err)
			return nil, storeFailed()
		}
		return nil, invalidGrant()
	}
	var body protocol.LoginProofBody
	if m.Action != protocol.ActRefresh || protocol.DecodeBody(m.Body, &body) != nil || body.LoginToken != req.LoginToken {
		return nil, invalidGrant()
	}
	// The proof names the session key it asks for, so that a proof
	// replayed by someone else (within its freshness) could only mint a
	// session bound to a key they do not hold.
	if bk, err := protocol.ParsePublicJWK(body.JWK); err != nil || bk.Thumbprint() != key.Thumbprint() {
		return nil, invalidGrant()
	}
	jwk, _ := key.MarshalJSON()
	res, err := s.issue(ctx, rec.Subject, rec.Roles, key.Thumbprint(), bytes.Clone(jwk), "", rec.Family, rec.Expires)
	if err != nil {
		return nil, issued(err)
	}
	res.WSURL = s.wsURL(r)
	s.log.Info("token issued", "sub", rec.Subject, "sid", res.Session, "grant", GrantLogin)
	return res, nil
}
