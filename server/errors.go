package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"
)

// WebSocket close codes (see the package documentation for whether a
// client should reconnect).
const (
	CloseNormal        = 1000 // normal closure
	CloseGoingAway     = 1001 // server shutting down: reconnect with backoff
	CloseUnsupported   = 1003 // a binary frame was received: do not reconnect
	CloseInvalidData   = 1007 // a text frame that is not UTF-8 (RFC 6455 §8.1): do not reconnect
	ClosePolicy        = 1008 // too many rejected frames: do not reconnect
	CloseTooBig        = 1009 // frame over the read limit: do not reconnect
	CloseHelloTimeout  = 4000 // no hello within the deadline: reconnect
	CloseHelloRejected = 4001 // hello rejected: reconnect only with a new token
	CloseTokenExpired  = 4002 // token expired: refresh or get a new token first
	CloseRevoked       = 4003 // token or subject revoked: never reconnect
	CloseKicked        = 4004 // kicked by an admin: do not reconnect
	CloseSlowConsumer  = 4005 // send queue overflowed: reconnect with backoff
	CloseServerError   = 4006 // server error: reconnect with backoff
)

// HTTP API error codes (the "error" member of an HTTP error response).
const (
	ErrCodeInvalidRequest = "invalid_request"        // 400: body is not the expected strict JSON
	ErrCodeUnsupported    = "unsupported_grant_type" // 400: grant_type unknown or not configured
	ErrCodeInvalidGrant   = "invalid_grant"          // 401: any bad credential, token or proof
	ErrCodeUnauthorized   = "unauthorized"           // 401: admin API without valid token and proof
	ErrCodeForbidden      = "forbidden"              // 403: authenticated but not allowed
	ErrCodeNotFound       = "not_found"              // 404: no such session
	ErrCodeRateLimited    = "rate_limited"           // 429: too many failed attempts; see Retry-After
	ErrCodeUnavailable    = "unavailable"            // 503: shutting down
	ErrCodeInternal       = "internal"               // 500: server failure
)

// Sentinel errors of the stores and authenticators.
var (
	// ErrInvalidCredentials is returned by an Authenticator for any bad
	// credential; the HTTP API maps it to a uniform invalid_grant.
	ErrInvalidCredentials = errors.New("sigil: invalid credentials")
	// ErrUnsupportedGrant is returned by an Authenticator that does not
	// handle the grant type.
	ErrUnsupportedGrant = errors.New("sigil: unsupported grant type")
	// ErrRefreshInvalid: the refresh token is unknown or expired.
	ErrRefreshInvalid = errors.New("sigil: invalid refresh token")
	// ErrRefreshReused: the refresh token was already rotated; its family
	// must be revoked.
	ErrRefreshReused = errors.New("sigil: refresh token reused")
)

// apiError is an HTTP API error response.
type apiError struct {
	status     int
	Code       string `json:"error"`
	Message    string `json:"message"` // always present (spec.md §13.4: exactly two members)
	retryAfter time.Duration
}

func (e *apiError) Error() string { return e.Code + ": " + e.Message }

func newAPIError(status int, code, msg string) *apiError {
	return &apiError{status: status, Code: code, Message: msg}
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.retryAfter > 0 {
		w.Header().Set("Retry-After", strconv.Itoa(int(e.retryAfter.Seconds()+0.999)))
	}
	writeJSON(w, e.status, e)
}
