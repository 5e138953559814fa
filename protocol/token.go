package protocol

import (
	"context"
	stdjson "encoding/json"
	"errors"
	"io"
	"time"

	"github.com/go-jose/go-jose/v4/json"
	"github.com/google/uuid"
)

// clockNow returns clock's time, or the real time when clock is nil:
// what every Now field of this package means when it is not set.
func clockNow(clock func() time.Time) time.Time {
	if clock == nil {
		return time.Now()
	}
	return clock()
}

// SessionClaims are the claims of a session token (spec.md §4.1).
type SessionClaims struct {
	Issuer   string       `json:"iss"`
	Audience string       `json:"aud"`
	Subject  string       `json:"sub"`
	IssuedAt int64        `json:"iat"` // seconds
	Expiry   int64        `json:"exp"` // seconds
	ID       string       `json:"jti"` // canonical UUID
	Session  string       `json:"sid"` // canonical UUID; stable across in-band refresh
	Roles    []string     `json:"roles"`
	Confirm  Confirmation `json:"cnf"`
}

// Confirmation binds the token to a key (RFC 7800 §3.1, RFC 9449 §6.1).
type Confirmation struct {
	JKT string `json:"jkt"` // RFC 7638 SHA-256 thumbprint of the session public key
}

// ExpiresAt returns exp as a time.
func (c *SessionClaims) ExpiresAt() time.Time { return time.Unix(c.Expiry, 0) }

// IssuedAtTime returns iat as a time.
func (c *SessionClaims) IssuedAtTime() time.Time { return time.Unix(c.IssuedAt, 0) }

// Limits on session token contents.
const (
	MaxRoles     = 32
	MaxTokenSize = 4096
)

// TokenIssuer issues session tokens. The zero value is not usable: Key,
// Issuer and Audience are required.
type TokenIssuer struct {
	Key      *PrivateKey      // server signing key (required)
	Issuer   string           // iss (required), e.g. the server's base URL
	Audience string           // aud (required), e.g. the WebSocket URL
	TTL      time.Duration    // lifetime; zero means 15 minutes
	Now      func() time.Time // clock; nil means time.Now
	Rand     io.Reader        // randomness for jti and sid; nil means crypto/rand
}

// IssueRequest is what a token is issued for.
type IssueRequest struct {
	Subject string
	Roles   []string
	JKT     string // thumbprint of the session public key
	Session string // existing sid to keep (in-band refresh); empty means a new one
}

// Issue signs a new session token.
func (i *TokenIssuer) Issue(req IssueRequest) (string, *SessionClaims, error) {
	if i.Key == nil || i.Issuer == "" || i.Audience == "" {
		return "", nil, errors.New("sigil: TokenIssuer needs Key, Issuer and Audience")
	}
	if req.Subject == "" || len(req.Subject) > maxStringClaim || req.JKT == "" || len(req.Roles) > MaxRoles {
		return "", nil, errors.New("sigil: invalid issue request")
	}
	if req.Subject == ServerSubject {
		// Deliveries from sub "server" are the server application's own
		// (spec.md §10.3); no session may carry that name.
		return "", nil, errors.New(`sigil: the subject "server" is reserved`)
	}
	ttl := i.TTL
	if ttl <= 0 {
		ttl = 15 * time.Minute
	}
	t := clockNow(i.Now)
	jti, err := newUUID(i.Rand)
	if err != nil {
		return "", nil, err
	}
	sid := req.Session
	if sid == "" {
		if sid, err = newUUID(i.Rand); err != nil {
			return "", nil, err
		}
	}
	roles := req.Roles
	if roles == nil {
		roles = []string{}
	}
	c := &SessionClaims{
		Issuer: i.Issuer, Audience: i.Audience, Subject: req.Subject,
		IssuedAt: t.Unix(), Expiry: t.Add(ttl).Unix(),
		ID: jti, Session: sid, Roles: roles, Confirm: Confirmation{JKT: req.JKT},
	}
	payload, err := stdjson.Marshal(c)
	if err != nil {
		return "", nil, err
	}
	tok, err := i.Key.SignCompact(TypSession, payload)
	return tok, c, err
}

func newUUID(r io.Reader) (string, error) {
	var u uuid.UUID
	var err error
	if r == nil {
		u, err = uuid.NewRandom()
	} else {
		u, err = uuid.NewRandomFromReader(r)
	}
	return u.String(), err
}

// TokenVerifier verifies session tokens.
type TokenVerifier struct {
	Keys       *KeySet           // server public keys (required)
	Issuer     string            // expected iss (required)
	Audience   string            // expected aud (required)
	Skew       time.Duration     // tolerance for iat in the future; zero means 30s
	Now        func() time.Time  // clock; nil means time.Now
	Revocation RevocationChecker // nil means nothing is revoked
}

var tokenClaimNames = map[string]bool{
	"iss": true, "aud": true, "sub": true, "iat": true, "exp": true,
	"jti": true, "sid": true, "roles": true, "cnf": true,
}

// Verify checks a session token: form, header, signature under a key of the
// JWKS with its pinned algorithm, strict claims, iss, aud, iat, exp and
// revocation. Errors are *Error with CodeBadToken, CodeTokenExpired or
// CodeTokenRevoked.
func (v *TokenVerifier) Verify(ctx context.Context, token string) (*SessionClaims, error) {
	c, err := v.verify(ctx, token)
	if err != nil {
		return nil, err
	}
	return c, nil
}

func (v *TokenVerifier) verify(ctx context.Context, token string) (*SessionClaims, *Error) {
	c, perr := parseSessionToken(v.Keys, token)
	if perr != nil {
		return nil, perr
	}
	if c.Issuer != v.Issuer || c.Audience != v.Audience {
		return nil, newErr(CodeBadToken, "session token: wrong iss or aud")
	}
	skew := v.Skew
	if skew <= 0 {
		skew = DefaultSkew
	}
	t := clockNow(v.Now)
	if c.IssuedAtTime().After(t.Add(skew)) {
		return nil, newErr(CodeBadToken, "session token: issued in the future")
	}
	if !t.Before(c.ExpiresAt()) {
		return nil, newErr(CodeTokenExpired, "session token has expired")
	}
	if v.Revocation != nil {
		revoked, err := v.Revocation.IsRevoked(ctx, c.ID, c.Subject, c.IssuedAtTime())
		if err != nil {
			return nil, wrapErr(CodeUnavailable, err, "revocation check failed")
		}
		if revoked {
			return nil, newErr(CodeTokenRevoked, "session token has been revoked")
		}
	}
	return c, nil
}

// parseSessionToken checks a session token's form, header, signature under
// a key of keys and strict claims; not iss, aud, times or revocation.
func parseSessionToken(keys *KeySet, token string) (*SessionClaims, *Error) {
	bad := func(e *Error) *Error {
		return &Error{Code: CodeBadToken, Message: "session token: " + e.Message, err: e}
	}
	jws, perr := parseCompact([]byte(token), MaxTokenSize, TypSession, "", header{})
	if perr != nil {
		return nil, bad(perr)
	}
	key, ok := keys.Key(jws.hdr.kid)
	if !ok {
		return nil, newErr(CodeBadToken, "session token: signed by an unknown key")
	}
	payload, perr := verifySignature(&jws, key)
	if perr != nil {
		return nil, bad(perr)
	}
	c, err := decodeSessionClaims(payload)
	if err != nil {
		return nil, wrapErr(CodeBadToken, err, "session token: "+err.Error())
	}
	return c, nil
}

func decodeSessionClaims(payload []byte) (*SessionClaims, error) {
	obj, err := decodeObject(payload)
	if err != nil {
		return nil, err
	}
	for name := range obj {
		if !tokenClaimNames[name] {
			return nil, errString("unknown claim " + quote(name))
		}
	}
	var c SessionClaims
	for _, f := range []struct {
		name string
		dst  *string
		max  int
	}{{"iss", &c.Issuer, maxStringClaim}, {"aud", &c.Audience, maxStringClaim}, {"sub", &c.Subject, maxStringClaim}, {"jti", &c.ID, 36}, {"sid", &c.Session, 36}} {
		if *f.dst, _, err = obj.str(f.name, true, f.max); err != nil {
			return nil, err
		}
	}
	if !isCanonicalUUID(c.ID) || !isCanonicalUUID(c.Session) {
		return nil, errString("jti and sid must be canonical lowercase UUIDs")
	}
	iat, _, err := obj.uint("iat", true, 0)
	if err != nil {
		return nil, err
	}
	exp, _, err := obj.uint("exp", true, 0)
	if err != nil {
		return nil, err
	}
	c.IssuedAt, c.Expiry = int64(iat), int64(exp)
	rolesRaw, ok := obj["roles"]
	if !ok {
		return nil, errString("missing claim \"roles\"")
	}
	if err := json.Unmarshal(rolesRaw, &c.Roles); err != nil || c.Roles == nil || len(c.Roles) > MaxRoles {
		return nil, errString("roles must be an array of at most 32 strings")
	}
	// The decoder's array has room to spare; a session keeps its roles for
	// its lifetime, so they are kept at their size.
	c.Roles = append(make([]string, 0, len(c.Roles)), c.Roles...)
	cnfRaw, ok := obj["cnf"]
	if !ok {
		return nil, errString("missing claim \"cnf\"")
	}
	cnf, err := decodeObject(cnfRaw)
	if err != nil || len(cnf) != 1 {
		return nil, errString("cnf must be an object with exactly a jkt member")
	}
	if c.Confirm.JKT, _, err = cnf.str("jkt", true, 64); err != nil {
		return nil, err
	}
	return &c, nil
}

// VerifyLoginProof verifies the proof of a login grant (spec.md §4.5): a
// client frame signed by the login key rec.JWK, with a sid of its own (a
// fresh UUID per proof, so that any number of processes can prove at once
// without sharing a seq) and rec.Subject. It runs the whole of §7 as the
// one frame of the session that sid names: its replay state is the
// proof's own, and lasts until the proof is stale (its ts + skew, at most
// rec.Expiry), so a proof is usable once; step 9 checks rec.Expiry (the
// end of the login) and the revocation of rec.TokenID and rec.Subject (as
// of rec.IssuedAt); step 10 applies the policy to its act. It returns the
// verified frame; the caller checks act and body. Errors are *Error values.
func (v *Verifier) VerifyLoginProof(ctx context.Context, rec SessionRecord, frame []byte) (*Message, error) {
	key, err := ParsePublicJWK(rec.JWK)
	if err != nil {
		return nil, wrapErr(CodeInternal, err, "the stored login key does not parse")
	}
	// The proof names its own sid: read it (and ts) before the signature
	// is verified, as a hello's key is; the signature, checked next, covers
	// both.
	env, perr := unsafeEnvelope(frame)
	if perr != nil {
		return nil, perr
	}
	expiry := rec.Expiry
	if end := env.Time().Add(v.cfg.Skew); end.Before(expiry) {
		expiry = end
	}
	s := &Session{
		id: env.Session, subject: rec.Subject, roles: rec.Roles, key: boundKey(key), jwk: rec.JWK,
		tokenID: rec.TokenID, issuedAt: rec.IssuedAt, expiry: expiry,
	}
	m, perr := v.verify(ctx, frame, s)
	if perr != nil {
		return nil, perr
	}
	return m, nil
}
