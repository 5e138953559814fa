package protocol

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"slices"
	"time"
)

// Defaults for VerifierConfig.
const (
	DefaultMaxFrame = 64 << 10
	DefaultSkew     = 30 * time.Second
)

// VerifierConfig configures the server-side pipeline. The zero value of each
// field means the documented default.
type VerifierConfig struct {
	// Tokens verifies the session token presented in hello. Required.
	Tokens *TokenVerifier
	// MaxFrame is the size limit of a client frame in bytes. Default 64 KiB.
	MaxFrame int
	// Skew is the freshness tolerance: ts must be within ±Skew of Now.
	// Default 30s.
	Skew time.Duration
	// Now is the clock. Default time.Now.
	Now func() time.Time
	// Replay is the replay store. Default a MemoryReplayStore.
	Replay ReplayStore
	// Revocation is consulted for every frame. Default: Tokens.Revocation.
	Revocation RevocationChecker
	// Policy authorises actions. Default DefaultPolicy().
	Policy *Policy
}

// Verifier runs the verification order of spec.md §7 on client frames. It
// is safe for concurrent use; per-session state lives in Session and the
// ReplayStore.
type Verifier struct {
	cfg VerifierConfig
}

// NewVerifier returns a Verifier with cfg's defaults filled in.
func NewVerifier(cfg VerifierConfig) *Verifier {
	if cfg.MaxFrame <= 0 {
		cfg.MaxFrame = DefaultMaxFrame
	}
	if cfg.Skew <= 0 {
		cfg.Skew = DefaultSkew
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Replay == nil {
		cfg.Replay = NewMemoryReplayStore(0, cfg.Now)
	}
	if cfg.Revocation == nil && cfg.Tokens != nil {
		cfg.Revocation = cfg.Tokens.Revocation
	}
	if cfg.Policy == nil {
		cfg.Policy = DefaultPolicy()
	}
	return &Verifier{cfg: cfg}
}

// Config returns the effective configuration.
func (v *Verifier) Config() VerifierConfig { return v.cfg }

// Session is the verified state of one client session. Only protocol
// builds one — VerifyHello, VerifyTokenProof and VerifyRecordProof return
// it, with its key bound to the token's cnf.jkt exactly as the pipeline
// expects — so its fields are read through methods, and a Session made
// elsewhere (the zero value) verifies nothing. A Session is used by one
// goroutine at a time.
type Session struct {
	id, subject string
	roles       []string
	key         *PublicKey // named by its thumbprint, the token's cnf.jkt
	jwk         []byte     // the session key as the client sent it
	tokenID     string
	issuedAt    time.Time
	expiry      time.Time
	keys        ContentKeys
	agreement   stdjson.RawMessage

	hdr string // the last protected header segment that passed step 3
}

// ID returns the session id (sid).
func (s *Session) ID() string { return s.id }

// Subject returns the session's subject (sub).
func (s *Session) Subject() string { return s.subject }

// Roles returns a copy of the current token's roles.
func (s *Session) Roles() []string { return slices.Clone(s.roles) }

// Key returns the session key; its thumbprint is the token's cnf.jkt, and
// its kid that thumbprint.
func (s *Session) Key() *PublicKey { return s.key }

// JWK returns a copy of the session key as the client sent it.
func (s *Session) JWK() []byte { return bytes.Clone(s.jwk) }

// TokenID returns the jti of the current token.
func (s *Session) TokenID() string { return s.tokenID }

// IssuedAt returns the iat of the current token.
func (s *Session) IssuedAt() time.Time { return s.issuedAt }

// Expiry returns the exp of the current token (for a refresh proof, the
// end of the refresh family: SessionRecord.Expiry).
func (s *Session) Expiry() time.Time { return s.expiry }

// Agreement returns the client's P-256 key from hello's ekey, or nil.
func (s *Session) Agreement() stdjson.RawMessage { return s.agreement }

// Keys returns the content keys the session may use (nil: body encryption
// not negotiated).
func (s *Session) Keys() ContentKeys { return s.keys }

// SetKeys sets the content keys the session may use, once the server has
// negotiated body encryption (spec.md §11).
func (s *Session) SetKeys(k ContentKeys) { s.keys = k }

// Message is a verified frame.
type Message struct {
	Envelope
	Frame     []byte // the frame as received
	Encrypted bool   // Body was decrypted from Enc
}

// Verify runs the full pipeline on a client frame of an established session.
// On success Body holds the plaintext. Errors are *Error values; Ref is set
// once the id is known.
func (v *Verifier) Verify(ctx context.Context, frame []byte, s *Session) (*Message, error) {
	m, err := v.verify(ctx, frame, s)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (v *Verifier) verify(ctx context.Context, frame []byte, s *Session) (*Message, *Error) {
	if s == nil || s.key == nil {
		return nil, newErr(CodeInternal, "the session was not established by protocol (VerifyHello, VerifyTokenProof, VerifyRecordProof)")
	}
	// 1–3: size, form, header, typ. A session's header never changes, so
	// the segment that passed last time is accepted by comparison.
	c, err := parseCompact(frame, v.cfg.MaxFrame, TypClient, s.hdr, header{alg: s.key.alg, kid: s.key.kid, typ: TypClient})
	if err != nil {
		return nil, err
	}
	// 4: signature under the session key, algorithm pinned by the key.
	if c.hdr.kid != s.key.kid {
		return nil, newErr(CodeUnknownKey, "kid does not name this session's key")
	}
	payload, err := verifySignature(&c, s.key)
	if err != nil {
		return nil, err
	}
	if s.hdr == "" || string(c.hseg) != s.hdr {
		s.hdr = string(c.hseg) // kid and alg are the session key's: it passed step 4
	}
	// 5: strict claims.
	env, e := decodeEnvelope(payload, true)
	if e != nil {
		return nil, wrapErr(CodeBadClaims, e, e.Error())
	}
	if env.Action == ActHello {
		return nil, &Error{Code: CodeBadRequest, Message: "hello is only allowed as the first frame", Ref: env.ID}
	}
	return v.afterClaims(ctx, frame, env, s)
}

// afterClaims runs steps 6–11.
func (v *Verifier) afterClaims(ctx context.Context, frame []byte, env *Envelope, s *Session) (*Message, *Error) {
	fail := func(e *Error) (*Message, *Error) {
		e.Ref = env.ID
		return nil, e
	}
	// 6: session binding.
	if env.Session != s.id || env.Subject != s.subject {
		return fail(newErr(CodeWrongSession, "sid or sub does not match this session"))
	}
	// 7: freshness.
	now := v.cfg.Now()
	ts := env.Time()
	if ts.Before(now.Add(-v.cfg.Skew)) {
		return fail(newErr(CodeStale, "ts is more than %v in the past", v.cfg.Skew))
	}
	if ts.After(now.Add(v.cfg.Skew)) {
		return fail(newErr(CodeFuture, "ts is more than %v in the future", v.cfg.Skew))
	}
	// 8: replay (only now that the signature has verified), and 9: token
	// expiry and revocation; a shared store may answer 8 and 9's
	// revocation in one round trip (ReplayRevocationChecker).
	rc := ReplayCheck{
		Session: s.id, ID: env.ID, Seq: env.Seq,
		IDExpiry: ts.Add(v.cfg.Skew), SessionExpiry: s.expiry.Add(v.cfg.Skew),
	}
	var revoked bool
	var revErr error
	if both, ok := v.cfg.Replay.(ReplayRevocationChecker); ok && v.cfg.Revocation != nil && both.Covers(v.cfg.Revocation) {
		var err error
		if revoked, err = both.CheckRevoked(ctx, rc, s.tokenID, s.subject, s.issuedAt); err != nil {
			if pe, ok := err.(*Error); ok {
				return fail(pe)
			}
			return fail(wrapErr(CodeUnavailable, err, "replay or revocation check failed"))
		}
	} else {
		if err := v.cfg.Replay.Check(ctx, rc); err != nil {
			if pe, ok := err.(*Error); ok {
				return fail(pe)
			}
			return fail(wrapErr(CodeUnavailable, err, "replay store failed"))
		}
		if v.cfg.Revocation != nil && now.Before(s.expiry) {
			revoked, revErr = v.cfg.Revocation.IsRevoked(ctx, s.tokenID, s.subject, s.issuedAt)
		}
	}
	if !now.Before(s.expiry) {
		return fail(newErr(CodeTokenExpired, "session token has expired"))
	}
	if revErr != nil {
		return fail(wrapErr(CodeUnavailable, revErr, "revocation check failed"))
	}
	if revoked {
		return fail(newErr(CodeTokenRevoked, "session has been revoked"))
	}
	// 10: authorization.
	if env.Action == ActHistory && env.Channel == "" && env.To != "" {
		// An inbox's history: its own subject's only (spec.md §20.11).
		if env.To != s.subject {
			return fail(newErr(CodeForbidden, "a session reads only its own user's inbox"))
		}
	} else if env.Action != ActHello {
		if err := v.cfg.Policy.Allow(env.Action, env.Channel, s.roles); err != nil {
			return fail(err.(*Error))
		}
	}
	m := &Message{Envelope: *env, Frame: frame}
	// 11: decryption.
	if env.Enc != "" {
		scope := ScopeSession
		if env.Action == ActPub {
			scope = ChannelScope(env.Channel)
		}
		plain, err := openBody(env.Enc, s.keys, scope)
		if err != nil {
			return fail(err)
		}
		m.Body = plain
		m.Encrypted = true
	}
	// A plaintext body was checked with the rest of the payload in step 5.
	return m, nil
}

// VerifyHello verifies the first frame of a connection (spec.md §8.2). The
// session key is resolved from the hello itself: the body's jwk must have the
// thumbprint in the token's cnf.jkt, the token must verify under the server's
// keys, and the frame must verify under that jwk. Then steps 5–11 run as for
// any frame. It returns the new session and the verified hello.
func (v *Verifier) VerifyHello(ctx context.Context, frame []byte) (*Session, *Message, error) {
	s, m, err := v.verifyHello(ctx, frame)
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

func (v *Verifier) verifyHello(ctx context.Context, frame []byte) (*Session, *Message, *Error) {
	c, err := parseCompact(frame, v.cfg.MaxFrame, TypClient, "", header{})
	if err != nil {
		return nil, nil, err
	}
	// Key resolution reads the payload before the signature is checked;
	// nothing from it is trusted until the signature verifies below.
	env, err := unsafeEnvelope(frame)
	if err != nil {
		return nil, nil, err
	}
	if env.Action != ActHello {
		return nil, nil, &Error{Code: CodeHelloRequired, Message: "the first frame must be hello", Ref: env.ID}
	}
	fail := func(e *Error) (*Session, *Message, *Error) {
		e.Ref = env.ID
		return nil, nil, e
	}
	var hb HelloBody
	if env.Enc != "" || DecodeBody(env.Body, &hb) != nil || hb.Token == "" || len(hb.JWK) == 0 ||
		(hb.InboxSince != nil && hb.InboxSince.check(0) != nil) {
		return fail(newErr(CodeBadClaims, "hello body must be {token, jwk[, ekey][, inbox_since]}"))
	}
	if v.cfg.Tokens == nil {
		return fail(newErr(CodeInternal, "no token verifier configured"))
	}
	claims, terr := v.cfg.Tokens.verify(ctx, hb.Token)
	if terr != nil {
		return fail(terr)
	}
	bound, err := bindKey(claims, hb.JWK)
	if err != nil {
		return fail(err)
	}
	if c.hdr.kid != bound.jkt {
		return fail(newErr(CodeUnknownKey, "kid must be the session key's thumbprint"))
	}
	if _, err := verifySignature(&c, bound); err != nil {
		return fail(err)
	}
	if hb.EKey != nil {
		if _, err := ParseAgreementJWK(hb.EKey); err != nil {
			return fail(wrapErr(CodeBadClaims, err, err.Error()))
		}
	}
	s := newSession(claims, bound, hb.JWK, hb.EKey)
	// s.hdr is left to the session's next frame (Verify), which carries
	// the same header: a session that stays idle keeps no copy of it.
	m, err := v.afterClaims(ctx, frame, env, s)
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

// Refresh moves a session to a new token after an in-band refresh. The new
// token must verify and carry the same sid, sub and cnf.jkt.
func (v *Verifier) Refresh(ctx context.Context, s *Session, token string) error {
	if s == nil || s.key == nil {
		return newErr(CodeInternal, "the session was not established by protocol")
	}
	c, err := v.cfg.Tokens.verify(ctx, token)
	if err != nil {
		return err
	}
	if c.Session != s.id || c.Subject != s.subject || c.Confirm.JKT != s.key.jkt {
		return newErr(CodeBadToken, "refreshed token does not match the session")
	}
	s.tokenID, s.issuedAt, s.expiry, s.roles = c.ID, c.IssuedAtTime(), c.ExpiresAt(), c.Roles
	return nil
}
