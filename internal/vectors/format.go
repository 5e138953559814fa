// Package vectors generates and runs Sigil's shared test vectors
// (testdata/vectors/). The format is documented in spec.md §16; other
// implementations read the same files.
package vectors

import "encoding/json"

// Vector is one test case: inputs, one frame, and the expected outcome.
type Vector struct {
	Name    string `json:"name"`
	Comment string `json:"comment"`
	// Kind says which verification to run:
	//   "hello"    server side: verify a first frame (no session yet)
	//   "client"   server side: verify a frame of the established Session
	//   "server"   client side: verify a server frame as the Client
	//   "delivery" client side: verify a server deliver/direct frame, then
	//              the sender's frame inside it, end to end
	//   "token"    verify a session token
	//   "wrapped_key" client side: unwrap a content key (spec.md §11.3)
	//              with the agreement key Wrap names, expecting Wrap.Scope
	//   "grants"   the rights welcome announces for Grants.Roles under
	//              policy.json (spec.md §8.3), and what they allow
	Kind     string       `json:"kind"`
	Now      int64        `json:"now"` // the verifier's clock, Unix ms
	Config   Config       `json:"config"`
	Session  *Session     `json:"session,omitempty"`
	Client   *ClientState `json:"client,omitempty"`
	Revoked  *Revoked     `json:"revoked,omitempty"`
	Wrap     *WrapState   `json:"wrap,omitempty"`
	Grants   *GrantsCase  `json:"grants,omitempty"`
	Accepted []Accepted   `json:"accepted,omitempty"` // replay state before the frame
	Frame    string       `json:"frame"`
	Expect   Expect       `json:"expect"`
}

// Config is the verifier configuration.
type Config struct {
	SkewMS   int64  `json:"skew_ms"`
	MaxFrame int    `json:"max_frame"`
	Issuer   string `json:"iss"`
	Audience string `json:"aud"`
}

// Session is the server's state of an established session ("client" kind).
type Session struct {
	SID         string          `json:"sid"`
	Sub         string          `json:"sub"`
	Roles       []string        `json:"roles"`
	JWK         json.RawMessage `json:"jwk"` // session public key
	JTI         string          `json:"jti"`
	IAT         int64           `json:"iat"` // seconds
	EXP         int64           `json:"exp"` // seconds
	ContentKeys []ContentKey    `json:"content_keys,omitempty"`
}

// ClientState is the receiving client's state ("server" and "delivery").
type ClientState struct {
	SID         string       `json:"sid"`
	Sub         string       `json:"sub"`
	Seen        []string     `json:"seen,omitempty"`     // server frame ids already received
	Welcomed    bool         `json:"welcomed,omitempty"` // the connection's welcome was already received
	ContentKeys []ContentKey `json:"content_keys,omitempty"`
}

// WrapState is the recipient of a wrapped content key ("wrapped_key").
type WrapState struct {
	// AgreementKey names the recipient's private P-256 key in keys.json
	// agreement_keys.
	AgreementKey string `json:"agreement_key"`
	// Scope is the scope expected where the key arrived: session in
	// welcome.key, ch:<ch> in a sub reply or key frame for ch.
	Scope string `json:"scope"`
}

// GrantsCase is a session's roles ("grants" kind) and the frames asked
// about: Allowed is whether the announced grants, like the policy, allow
// Act on Ch.
type GrantsCase struct {
	Roles  []string     `json:"roles"`
	Checks []GrantCheck `json:"checks"`
}

// GrantCheck is one frame asked about: an action and a channel ("" for
// none).
type GrantCheck struct {
	Act     string `json:"act"`
	Ch      string `json:"ch,omitempty"`
	Allowed bool   `json:"allowed"`
}

// ContentKey is a body-encryption key.
type ContentKey struct {
	Kid   string `json:"kid"`
	K     string `json:"k"` // base64url, 32 bytes
	Scope string `json:"scope"`
}

// Revoked lists revocations in force.
type Revoked struct {
	JTIs     []string         `json:"jti,omitempty"`
	Subjects []RevokedSubject `json:"sub,omitempty"`
}

// RevokedSubject revokes every token of Sub issued at or before At (seconds).
type RevokedSubject struct {
	Sub string `json:"sub"`
	At  int64  `json:"at"`
}

// Accepted is a frame the session accepted before, for the replay state.
type Accepted struct {
	SID string `json:"sid"`
	ID  string `json:"id"`
	Seq uint64 `json:"seq"`
	TS  int64  `json:"ts"`
}

// Expect is the outcome.
type Expect struct {
	Result  string          `json:"result"`           // "ok" or "error"
	Code    string          `json:"code,omitempty"`   // error: the exact code
	Claims  json.RawMessage `json:"claims,omitempty"` // ok: the decoded claims (envelope or token)
	Body    json.RawMessage `json:"body,omitempty"`   // ok: the plaintext body, after decryption
	Session *ExpectSession  `json:"session,omitempty"`
	Sender  *ExpectSender   `json:"sender,omitempty"`
	Grants  json.RawMessage `json:"grants,omitempty"` // grants: the announced grants, in order
}

// ExpectSession is the session a valid hello establishes.
type ExpectSession struct {
	SID   string   `json:"sid"`
	Sub   string   `json:"sub"`
	Roles []string `json:"roles"`
}

// ExpectSender is the verified sender of a delivery.
type ExpectSender struct {
	Sub    string          `json:"sub"`
	Claims json.RawMessage `json:"claims"`
	Body   json.RawMessage `json:"body,omitempty"`
}

// Keys is testdata/vectors/keys.json: every key the vectors use. These keys
// are public test fixtures; never use them for anything else.
type Keys struct {
	ServerJWKS    json.RawMessage            `json:"server_jwks"`
	ServerPrivate map[string]json.RawMessage `json:"server_private"`
	SessionKeys   map[string]json.RawMessage `json:"session_keys"`
	Agreement     map[string]json.RawMessage `json:"agreement_keys"`
}
