package protocol

import (
	"bytes"
	"context"
	stdjson "encoding/json"
	"slices"
	"time"
)

// Proofs of possession over HTTP (spec.md §13.2, §13.6) are client frames
// verified with the whole of §7 as frames of a session, like the frames of
// a WebSocket. What differs is where the session comes from: a hello
// carries its token and key in its body (VerifyHello); an administration
// request carries the token in a header and the key in the proof's body
// (VerifyTokenProof); a refresh proof belongs to a session the server
// stored with the refresh token (VerifyRecordProof). Each returns the
// Session it verified the frame for: a Session always comes from one of
// these three (its fields are unexported), so that its key is bound to its
// thumbprint exactly as the pipeline expects.

// SessionRecord is what a server stored about a session when it issued a
// refresh token (spec.md §4.3): enough to verify a frame of the session
// without its session token.
type SessionRecord struct {
	ID       string    // sid
	Subject  string    // sub
	Roles    []string  // roles
	JWK      []byte    // the session public key, as stored (spec.md §3.3)
	TokenID  string    // jti of the session token issued with the record, for revocation
	IssuedAt time.Time // iat of that token, for the revocation of its subject
	// Expiry is until when the session may act (§7 step 9): for
	// /v1/refresh the end of the refresh family, not the token's exp.
	Expiry time.Time
	// Keys are the session's content keys; nil when body encryption is not
	// available (a proof with enc then fails, §13.2 step 11).
	Keys ContentKeys
}

// VerifyRecordProof verifies frame with the whole of spec.md §7 as a frame
// of the session rec describes (the refresh proof of §13.2): the session
// key is rec.JWK, named by its thumbprint; step 9 checks rec.Expiry and the
// revocation of rec.TokenID and rec.Subject (as of rec.IssuedAt). It
// returns the session and the verified frame; the caller checks act and
// body. Errors are *Error values.
func (v *Verifier) VerifyRecordProof(ctx context.Context, rec SessionRecord, frame []byte) (*Session, *Message, error) {
	key, err := ParsePublicJWK(rec.JWK)
	if err != nil {
		return nil, nil, wrapErr(CodeInternal, err, "the stored session key does not parse")
	}
	s := &Session{
		id: rec.ID, subject: rec.Subject, roles: slices.Clone(rec.Roles), key: boundKey(key), jwk: bytes.Clone(rec.JWK),
		tokenID: rec.TokenID, issuedAt: rec.IssuedAt, expiry: rec.Expiry, keys: rec.Keys,
	}
	m, perr := v.verify(ctx, frame, s)
	if perr != nil {
		return nil, nil, perr
	}
	return s, m, nil
}

// VerifyTokenProof verifies a proof that travels next to a session token,
// as the administration API's Sigil-Proof does (spec.md §13.6): the token
// is verified as in §4.2 with v's TokenVerifier; the proof's form and
// header (§7 steps 1–3) are checked; its body, read before the signature
// is verified as in hello, must be an object whose member jwk is a public
// key (§3.3) whose thumbprint is the token's cnf.jkt; then the proof runs
// the whole of §7 as a frame of the token's session, with v's replay store
// and policy. It returns the session and the verified proof; the caller
// checks act and the rest of the body. Errors are *Error values.
func (v *Verifier) VerifyTokenProof(ctx context.Context, token string, proof []byte) (*Session, *Message, error) {
	s, m, err := v.verifyTokenProof(ctx, token, proof)
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

func (v *Verifier) verifyTokenProof(ctx context.Context, token string, proof []byte) (*Session, *Message, *Error) {
	if v.cfg.Tokens == nil {
		return nil, nil, newErr(CodeInternal, "no token verifier configured")
	}
	claims, err := v.cfg.Tokens.verify(ctx, token)
	if err != nil {
		return nil, nil, err
	}
	if _, err := checkForm(proof, v.cfg.MaxFrame, TypClient); err != nil {
		return nil, nil, err
	}
	env, err := unsafeEnvelope(proof)
	if err != nil {
		return nil, nil, err
	}
	var jwk []byte
	if env.Enc == "" {
		if body, e := decodeObject(env.Body); e == nil {
			jwk = body["jwk"]
		}
	}
	if jwk == nil {
		return nil, nil, &Error{Code: CodeBadClaims, Message: "the proof's body must name the session key in jwk", Ref: env.ID}
	}
	key, err := bindKey(claims, jwk)
	if err != nil {
		err.Ref = env.ID
		return nil, nil, err
	}
	s := newSession(claims, key, jwk, nil)
	m, err := v.verify(ctx, proof, s)
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

// bindKey resolves a session key from a verified token and the JWK the
// client presented (spec.md §8.2 step 4): a public key under §3.3
// (bad_claims) whose thumbprint is the token's cnf.jkt (key_mismatch). The
// key is named by its thumbprint.
func bindKey(claims *SessionClaims, jwk []byte) (*PublicKey, *Error) {
	key, err := ParsePublicJWK(jwk)
	if err != nil {
		return nil, wrapErr(CodeBadClaims, err, err.Error())
	}
	if key.jkt != claims.Confirm.JKT {
		return nil, newErr(CodeKeyMismatch, "the session key is not the key the token is bound to (cnf.jkt)")
	}
	return boundKey(key), nil
}

// boundKey returns key named by its thumbprint, as a session key is.
func boundKey(key *PublicKey) *PublicKey {
	return &PublicKey{kid: key.jkt, alg: key.alg, key: key.key, jkt: key.jkt}
}

// newSession is the session of a verified token and its bound key.
func newSession(claims *SessionClaims, key *PublicKey, jwk []byte, agreement stdjson.RawMessage) *Session {
	return &Session{
		id: claims.Session, subject: claims.Subject, roles: claims.Roles,
		key: key, jwk: bytes.Clone(jwk), tokenID: claims.ID,
		issuedAt: claims.IssuedAtTime(), expiry: claims.ExpiresAt(), agreement: agreement,
	}
}

// UnsafeEnvelope decodes the envelope of a client frame WITHOUT verifying
// its signature: only the compact form (spec.md §7 step 2) and the strict
// claims of §6, under the client-frame rules, are checked. Use it to read
// a frame that has already been verified (for example the cid of a frame
// that verified and was then rejected at a later step), or to find the key
// that will verify it. Never act on what it returns otherwise. Errors are
// *Error values: malformed or bad_claims.
func UnsafeEnvelope(frame []byte) (*Envelope, error) {
	env, err := unsafeEnvelope(frame)
	if err != nil {
		return nil, err
	}
	return env, nil
}

func unsafeEnvelope(frame []byte) (*Envelope, *Error) {
	raw, err := unverifiedPayload(frame)
	if err != nil {
		return nil, err
	}
	env, e := decodeEnvelope(raw, true)
	if e != nil {
		return nil, wrapErr(CodeBadClaims, e, e.Error())
	}
	return env, nil
}
