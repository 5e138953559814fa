package protocol

import (
	stdjson "encoding/json"
	"time"
)

// Wire types of the HTTP API (spec.md §13), shared by servers and
// clients. Bodies are read with DecodeBody: strict JSON with exactly the
// documented members.

// Grant types of POST /v1/token (spec.md §13.1).
const (
	GrantPassword = "password" // username and password
	GrantExternal = "external" // an identity provider's assertion
	GrantLogin    = "login"    // a login token and a proof signed by its login key (spec.md §4.5)
)

// TokenRequest is the body of POST /v1/token (spec.md §13.1). A password
// grant sends grant_type, username, password and jwk; an external grant
// sends grant_type, assertion and jwk. Either may add login: true to ask
// for a login instead of a session (spec.md §4.5); a login grant sends
// grant_type, login_token, proof and jwk.
type TokenRequest struct {
	GrantType string             `json:"grant_type"`
	Username  string             `json:"username,omitempty"`
	Password  string             `json:"password,omitempty"`
	Assertion string             `json:"assertion,omitempty"`
	JWK       stdjson.RawMessage `json:"jwk"` // the session public key, or the login key with login (spec.md §3.3)
	// Login asks for a login bound to jwk instead of a session.
	Login bool `json:"login,omitempty"`
	// LoginToken and Proof are the login grant's (spec.md §4.5).
	LoginToken string `json:"login_token,omitempty"`
	Proof      string `json:"proof,omitempty"` // a client frame signed by the login key
}

// String never prints the password or the assertion.
func (r TokenRequest) String() string {
	return "TokenRequest(" + r.GrantType + ", " + r.Username + ")"
}

// RefreshRequest is the body of POST /v1/refresh (spec.md §13.2).
type RefreshRequest struct {
	RefreshToken string `json:"refresh_token"`
	Proof        string `json:"proof"` // a client frame: act refresh, body {"refresh_token"}
}

// TokenResponse is the answer of POST /v1/token and POST /v1/refresh
// (spec.md §13.1).
type TokenResponse struct {
	Token            string   `json:"token"`              // the session token
	ExpiresAt        int64    `json:"expires_at"`         // the token's exp, Unix ms
	RefreshToken     string   `json:"refresh_token"`      // single-use
	RefreshExpiresAt int64    `json:"refresh_expires_at"` // the end of the refresh family, Unix ms
	Session          string   `json:"sid"`
	Subject          string   `json:"sub"`
	Roles            []string `json:"roles"`
	WSURL            string   `json:"ws_url"`
}

// String never prints the tokens.
func (r TokenResponse) String() string {
	return "TokenResponse(sid=" + r.Session + " sub=" + r.Subject + " exp=" + r.Expiry().UTC().Format(time.RFC3339) + ")"
}

// Expiry returns ExpiresAt as a time.
func (r TokenResponse) Expiry() time.Time { return time.UnixMilli(r.ExpiresAt) }

// RefreshExpiry returns RefreshExpiresAt as a time (zero if absent).
func (r TokenResponse) RefreshExpiry() time.Time {
	if r.RefreshExpiresAt <= 0 {
		return time.Time{}
	}
	return time.UnixMilli(r.RefreshExpiresAt)
}

// LoginResponse is the answer of POST /v1/token to a request with login
// (spec.md §4.5).
type LoginResponse struct {
	LoginToken string   `json:"login_token"` // the login's credential, bound to the login key (secret)
	ExpiresAt  int64    `json:"expires_at"`  // the end of the login, Unix ms
	Subject    string   `json:"sub"`
	Roles      []string `json:"roles"`
	WSURL      string   `json:"ws_url"`
}

// String never prints the login token.
func (r LoginResponse) String() string {
	return "LoginResponse(sub=" + r.Subject + " exp=" + time.UnixMilli(r.ExpiresAt).UTC().Format(time.RFC3339) + ")"
}

// LoginProofBody is the body of a login proof (spec.md §4.5): the login
// token and the public key of the session it asks for.
type LoginProofBody struct {
	LoginToken string             `json:"login_token"`
	JWK        stdjson.RawMessage `json:"jwk"`
}

// ErrorResponse is the body of every HTTP API error (spec.md §13.4).
type ErrorResponse struct {
	Error   string `json:"error"`   // a code of the table of §13.4
	Message string `json:"message"` // for people; may change
}

// AdminProofBody is the body of the proof frame of an administration
// request (spec.md §13.6): the session public key and the request body
// ({} for GET).
type AdminProofBody struct {
	JWK stdjson.RawMessage `json:"jwk"`
	Req stdjson.RawMessage `json:"req"`
}
