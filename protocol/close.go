package protocol

import "strconv"

// CloseCode is a WebSocket close code (spec.md §12.3). This is the one
// table of what each code means and whether a client reconnects after it:
// the server closes with these constants, and clients decide with
// Reconnect.
type CloseCode int

// Close codes of spec.md §12.3.
const (
	CloseNormal        CloseCode = 1000 // normal closure
	CloseGoingAway     CloseCode = 1001 // server going away (shutdown, restart)
	CloseUnsupported   CloseCode = 1003 // a binary message was sent (client bug)
	CloseAbnormal      CloseCode = 1006 // no close frame: the connection was lost; never sent on the wire
	CloseInvalidUTF8   CloseCode = 1007 // a text message was not valid UTF-8 (RFC 6455 §8.1; client bug)
	ClosePolicy        CloseCode = 1008 // too many rejected frames (client bug)
	CloseTooBig        CloseCode = 1009 // a message over 4 × max_frame (client bug)
	CloseHelloTimeout  CloseCode = 4000 // no hello within the deadline
	CloseHelloRejected CloseCode = 4001 // hello rejected
	CloseTokenExpired  CloseCode = 4002 // the session token expired
	CloseRevoked       CloseCode = 4003 // the session was revoked
	CloseKicked        CloseCode = 4004 // kicked by an administrator
	CloseSlowConsumer  CloseCode = 4005 // the send queue overflowed
	CloseServerError   CloseCode = 4006 // internal server error
)

// CloseProtocolError is sent by a client, never by a server: the server
// broke the protocol before welcome (spec.md §8.3). It is not in the table
// of §12.3.
const CloseProtocolError CloseCode = 1002

// Reconnect is what a client does after a close code (spec.md §12.3).
type Reconnect int

// Reconnect rules.
const (
	// ReconnectNever: do not reconnect — a normal closure, a client bug,
	// an administrator's decision, or an unknown 4xxx code.
	ReconnectNever Reconnect = iota
	// ReconnectBackoff: reconnect with backoff (exponential from 0.5 s to
	// 30 s, full jitter) and the same token, continuing seq.
	ReconnectBackoff
	// ReconnectNewToken: reconnect only after refreshing the token or
	// obtaining a new one.
	ReconnectNewToken
	// ReconnectReauthenticate: never as this session — it is revoked; a
	// person has to authenticate again.
	ReconnectReauthenticate
)

var reconnectNames = [...]string{"never", "with backoff", "only with a new token", "never (re-authenticate)"}

// String names the rule.
func (r Reconnect) String() string {
	if r >= 0 && int(r) < len(reconnectNames) {
		return reconnectNames[r]
	}
	return "Reconnect(" + strconv.Itoa(int(r)) + ")"
}

// closeTable holds the meaning and reconnect rule of every code of the
// table of spec.md §12.3.
var closeTable = map[CloseCode]struct {
	meaning string
	rule    Reconnect
}{
	CloseNormal:        {"normal closure", ReconnectNever},
	CloseGoingAway:     {"server going away", ReconnectBackoff},
	CloseUnsupported:   {"binary message sent", ReconnectNever},
	CloseAbnormal:      {"connection lost", ReconnectBackoff},
	CloseInvalidUTF8:   {"text message not valid UTF-8", ReconnectNever},
	ClosePolicy:        {"too many rejected frames", ReconnectNever},
	CloseTooBig:        {"frame too large", ReconnectNever},
	CloseHelloTimeout:  {"no hello within the deadline", ReconnectBackoff},
	CloseHelloRejected: {"hello rejected", ReconnectNewToken},
	CloseTokenExpired:  {"token expired", ReconnectNewToken},
	CloseRevoked:       {"session revoked", ReconnectReauthenticate},
	CloseKicked:        {"kicked by an administrator", ReconnectNever},
	CloseSlowConsumer:  {"slow consumer", ReconnectBackoff},
	CloseServerError:   {"server error or a store unavailable", ReconnectBackoff},
}

// Reconnect reports what a client does after the server closed with c
// (spec.md §12.3). A code outside the table: any 4xxx code means do not
// reconnect (it may carry a meaning this client does not know); any other
// code — 1006 and other 1xxx codes among them — means reconnect with
// backoff.
func (c CloseCode) Reconnect() Reconnect {
	if e, ok := closeTable[c]; ok {
		return e.rule
	}
	if c >= 4000 && c <= 4999 {
		return ReconnectNever
	}
	return ReconnectBackoff
}

// String returns the code and its meaning, e.g. "4003 (session revoked)".
func (c CloseCode) String() string {
	return strconv.Itoa(int(c)) + " (" + c.Meaning() + ")"
}

// Meaning returns the meaning of the code, or "unknown code".
func (c CloseCode) Meaning() string {
	if e, ok := closeTable[c]; ok {
		return e.meaning
	}
	return "unknown code"
}

// RejectionClose returns the close code that follows the error frame
// answering a rejected frame with code, or 0 if the connection stays open.
// For a hello (spec.md §8.2): 4002 for token_expired, 4003 for
// token_revoked, 4006 for unavailable and internal (the server could not
// check the hello), 4001 for every other code. After the handshake (§7
// step 9): 4002 and 4003 for those two codes, and 0 otherwise (a server
// may still close with 1008 after repeated rejections, §12.4).
func RejectionClose(code Code, hello bool) CloseCode {
	switch code {
	case CodeTokenExpired:
		return CloseTokenExpired
	case CodeTokenRevoked:
		return CloseRevoked
	}
	switch {
	case !hello:
		return 0
	case code == CodeUnavailable || code == CodeInternal:
		return CloseServerError
	}
	return CloseHelloRejected
}
