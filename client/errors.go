package client

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"

	"github.com/sigil-ws/sigil/protocol"
)

// Sentinel errors. Errors that answer a frame carry a *protocol.Error with
// its stable code: use errors.As(err, &pe) or protocol.CodeOf(err).
var (
	// ErrClosed is returned by every method after Close, and by Client.Err
	// after a Close that was asked for.
	ErrClosed = errors.New("sigil client: closed")
	// ErrRevoked ends a client whose session the server revoked (close code
	// 4003, or token_revoked). The client never reconnects after it: a
	// person has to log in again.
	ErrRevoked = errors.New("sigil client: session revoked")
	// ErrRefreshFailed ends a client whose token could not be refreshed.
	// The client fails closed: it stops sending as that session.
	ErrRefreshFailed = errors.New("sigil client: token refresh failed")
	// ErrConnectionLost is returned by a request whose connection dropped
	// before its answer arrived; the server may or may not have acted on it.
	ErrConnectionLost = errors.New("sigil client: connection lost before the answer")
	// ErrSlowConsumer ends a subscription whose reader fell more than
	// Options.SubscriptionBuffer messages behind.
	ErrSlowConsumer = errors.New("sigil client: subscription buffer overflow")
	// ErrNoChannelKey is returned by Publish with Options.Encrypt when the
	// client holds no key for the channel: subscribe to it first.
	ErrNoChannelKey = errors.New("sigil client: no content key for the channel (subscribe first)")
	// ErrProtocolViolation fails a connection attempt whose first server
	// frame is not the welcome answering the hello, nor the error frame
	// rejecting it (spec.md §8.3). The client acts on no such frame: it
	// closes the connection with 1002. Dial returns the error; a client
	// that is reconnecting tries again with backoff.
	ErrProtocolViolation = errors.New("sigil client: protocol violation by the server")
	// ErrNotEncrypted is returned when Options.Encrypt is set but the
	// server did not provide a session content key.
	ErrNotEncrypted = errors.New("sigil client: server did not negotiate body encryption")
)

// CloseError reports that the server closed the connection with a code
// that does not allow a reconnect (spec.md §12.3), or a rejected hello.
type CloseError struct {
	Code   int             // WebSocket close code
	Reason string          // the close reason sent by the server
	Err    *protocol.Error // the error frame that preceded it, if any
}

func (e *CloseError) Error() string {
	s := "sigil client: connection closed by the server with " + strconv.Itoa(e.Code) + " (" + closeMeaning(e.Code) + ")"
	if e.Err != nil {
		s += ": " + e.Err.Error()
	} else if e.Reason != "" {
		s += ": " + e.Reason
	}
	return s
}

// Unwrap returns the protocol error, so that errors.As finds its code, and
// ErrRevoked for 4003.
func (e *CloseError) Unwrap() []error {
	var errs []error
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	if e.Code == closeRevoked {
		errs = append(errs, ErrRevoked)
	}
	return errs
}

// HTTPError is an error answer of the server's HTTP API (spec.md §13).
type HTTPError struct {
	Status     int    // HTTP status
	Code       string // "invalid_grant", "rate_limited", ...
	Message    string
	RetryAfter string // Retry-After header of a 429
}

func (e *HTTPError) Error() string {
	s := fmt.Sprintf("sigil client: HTTP %d %s", e.Status, http.StatusText(e.Status))
	if e.Code != "" {
		s += ": " + e.Code
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

// Close codes (spec.md §12.3).
const (
	closeNormal        = 1000
	closeGoingAway     = 1001
	closeUnsupported   = 1003
	closeInvalidData   = 1007
	closeProtocolError = 1002 // sent by the client (spec.md §8.3)
	closeAbnormal      = 1006
	closePolicy        = 1008
	closeTooBig        = 1009
	closeHelloTimeout  = 4000
	closeHelloRejected = 4001
	closeTokenExpired  = 4002
	closeRevoked       = 4003
	closeKicked        = 4004
	closeSlowConsumer  = 4005
	closeServerError   = 4006
)

// reconnectRule is what spec.md §12.3 says a client does after a close code.
type reconnectRule int

const (
	ruleNever    reconnectRule = iota // give up (client bug, admin action, normal close)
	ruleBackoff                       // reconnect with backoff and the same token
	ruleNewToken                      // reconnect only with a refreshed or new token
	ruleRevoked                       // never; the session is revoked
)

func closeRule(code int) reconnectRule {
	switch code {
	case closeNormal, closeUnsupported, closeInvalidData, closePolicy, closeTooBig, closeKicked:
		return ruleNever
	case closeRevoked:
		return ruleRevoked
	case closeHelloRejected, closeTokenExpired:
		return ruleNewToken
	default: // 1001, 4000, 4005, 4006, 1006 (network), unknown codes
		return ruleBackoff
	}
}

func closeMeaning(code int) string {
	switch code {
	case closeNormal:
		return "normal closure"
	case closeGoingAway:
		return "server going away"
	case closeUnsupported:
		return "binary message sent"
	case closeInvalidData:
		return "text frame not valid UTF-8"
	case closeAbnormal:
		return "connection lost"
	case closePolicy:
		return "too many rejected frames"
	case closeTooBig:
		return "frame too large"
	case closeHelloTimeout:
		return "no hello within the deadline"
	case closeHelloRejected:
		return "hello rejected"
	case closeTokenExpired:
		return "token expired"
	case closeRevoked:
		return "session revoked"
	case closeKicked:
		return "kicked by an administrator"
	case closeSlowConsumer:
		return "slow consumer"
	case closeServerError:
		return "server error (or a store it needs is unavailable)"
	}
	return "unknown code"
}

// helloCloseCode is the close code a server uses after rejecting a hello
// with code (spec.md §8.2).
func helloCloseCode(code protocol.Code) int {
	switch code {
	case protocol.CodeTokenExpired:
		return closeTokenExpired
	case protocol.CodeTokenRevoked:
		return closeRevoked
	case protocol.CodeUnavailable, protocol.CodeInternal:
		return closeServerError
	}
	return closeHelloRejected
}
