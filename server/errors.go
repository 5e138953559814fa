package server

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// WebSocket close codes are protocol.CloseCode values (spec.md §12.3):
// protocol holds the one table of what each means and whether a client
// reconnects after it.

// HTTP API error codes (the "error" member of an HTTP error response).
const (
	ErrCodeInvalidRequest = "invalid_request"        // 400: body is not the expected strict JSON
	ErrCodeUnsupported    = "unsupported_grant_type" // 400: grant_type unknown or not configured
	ErrCodeInvalidGrant   = "invalid_grant"          // 401: any bad credential, token or proof
	ErrCodeUnauthorized   = "unauthorized"           // 401: admin API without valid token and proof
	ErrCodeForbidden      = "forbidden"              // 403: authenticated but not allowed
	ErrCodeNotFound       = "not_found"              // 404: no such session
	ErrCodeRateLimited    = "rate_limited"           // 429: too many failed attempts; see Retry-After
	// 503: the server is shutting down, or too many password checks are
	// in progress (with Retry-After). (Over WebSocket, the frame code
	// unavailable also means that a shared store or the broker is
	// unreachable; over HTTP that is internal.)
	ErrCodeUnavailable = "unavailable"
	// 500: a server failure, a shared store (refresh tokens, revocation)
	// that failed or is unreachable among them (spec.md §13.4).
	ErrCodeInternal = "internal"
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

// apiError is an HTTP API error response: its status, and the body
// protocol.ErrorResponse (spec.md §13.4: exactly error and message).
type apiError struct {
	status     int
	Code       string
	Message    string
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
	writeJSON(w, e.status, protocol.ErrorResponse{Error: e.Code, Message: e.Message})
}
