package protocol

import (
	"errors"
	"fmt"
)

// Code is a stable, machine-readable error code. Codes appear in error
// frames (spec.md §10.4, §15) and never change meaning once published.
type Code string

// Verification codes, in the order of the verification pipeline (spec.md §7).
const (
	CodeTooLarge     Code = "too_large"     // step 1: frame exceeds the size limit
	CodeMalformed    Code = "malformed"     // step 2: not a JWS in compact serialization
	CodeBadHeader    Code = "bad_header"    // step 3: header members or alg not allowed
	CodeBadTyp       Code = "bad_typ"       // step 3: typ is not the one expected here
	CodeUnknownKey   Code = "unknown_key"   // step 4: kid does not name the expected key
	CodeBadSignature Code = "bad_signature" // step 4: signature does not verify
	CodeBadClaims    Code = "bad_claims"    // step 5: payload is not strict, well-typed claims
	CodeWrongSession Code = "wrong_session" // step 6: sid or sub do not match the session
	CodeStale        Code = "stale"         // step 7: ts older than now - skew
	CodeFuture       Code = "future"        // step 7: ts newer than now + skew
	CodeReplaySeq    Code = "replay_seq"    // step 8: seq not strictly increasing
	CodeReplayID     Code = "replay_id"     // step 8: id already seen within the window
	CodeTokenExpired Code = "token_expired" // step 9: session token has expired
	CodeTokenRevoked Code = "token_revoked" // step 9: session token or subject revoked
	CodeForbidden    Code = "forbidden"     // step 10: policy denies the action
	CodeBadEnc       Code = "bad_enc"       // step 11: enc cannot be decrypted
)

// Handshake and application codes.
const (
	CodeHelloRequired Code = "hello_required" // a frame other than hello arrived before welcome
	CodeBadToken      Code = "bad_token"      // the session token in hello is not valid
	CodeKeyMismatch   Code = "key_mismatch"   // hello key does not match the token's cnf.jkt
	CodeBadRequest    Code = "bad_request"    // verified, but the action's body or fields are wrong
	CodeUnknownAction Code = "unknown_action" // no built-in action or handler has this name
	CodeNotFound      Code = "not_found"      // the target (user, channel, handler) does not exist
	CodeRateLimited   Code = "rate_limited"   // too many requests
	CodeAppError      Code = "app_error"      // an application handler returned an error
	CodeInternal      Code = "internal"       // server-side failure; the frame may be retried
	CodeUnavailable   Code = "unavailable"    // a shared store or broker is unreachable: the frame was not accepted; retry with backoff
)

// Codes lists every code in a stable order. spec.md lists the same codes.
var Codes = []Code{
	CodeTooLarge, CodeMalformed, CodeBadHeader, CodeBadTyp, CodeUnknownKey,
	CodeBadSignature, CodeBadClaims, CodeWrongSession, CodeStale, CodeFuture,
	CodeReplaySeq, CodeReplayID, CodeTokenExpired, CodeTokenRevoked,
	CodeForbidden, CodeBadEnc,
	CodeHelloRequired, CodeBadToken, CodeKeyMismatch, CodeBadRequest,
	CodeUnknownAction, CodeNotFound, CodeRateLimited, CodeAppError, CodeInternal,
	CodeUnavailable,
}

// Error is a protocol error with a stable code. It is what every verification
// step returns, and what an error frame carries on the wire.
type Error struct {
	Code    Code   // stable code
	Message string // human-readable detail; never contains secrets
	Ref     string // id of the offending message, when known
	err     error  // underlying cause, not sent on the wire
}

func (e *Error) Error() string {
	if e.Message == "" {
		return "sigil: " + string(e.Code)
	}
	return "sigil: " + string(e.Code) + ": " + e.Message
}

// Unwrap returns the underlying cause, if any.
func (e *Error) Unwrap() error { return e.err }

// Is reports whether target is an *Error with the same code, so that
// errors.Is(err, &protocol.Error{Code: protocol.CodeForbidden}) works.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	return ok && t.Code == e.Code
}

func newErr(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

func wrapErr(code Code, cause error, msg string) *Error {
	return &Error{Code: code, Message: msg, err: cause}
}

// CodeOf returns the protocol code carried by err, or "" if err carries none.
func CodeOf(err error) Code {
	var e *Error
	if errors.As(err, &e) {
		return e.Code
	}
	return ""
}

// IsCode reports whether err carries the given protocol code.
func IsCode(err error, code Code) bool { return CodeOf(err) == code }
