package client

import (
	"errors"
	"fmt"
	"net/http"

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
// Code.Reconnect tells what the code allows.
type CloseError struct {
	Code   protocol.CloseCode // WebSocket close code
	Reason string             // the close reason sent by the server
	Err    *protocol.Error    // the error frame that preceded it, if any
}

func (e *CloseError) Error() string {
	s := "sigil client: connection closed by the server with " + e.Code.String()
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
	if e.Code == protocol.CloseRevoked {
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
