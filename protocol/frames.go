package protocol

import (
	stdjson "encoding/json"

	"github.com/sigil-ws/sigil/internal/strictjson"
)

// Bodies of built-in frames (spec.md §8–§12). Every body is strict JSON; a
// receiver rejects unknown members with CodeBadRequest.

// HelloBody is the body of the first client frame.
type HelloBody struct {
	Token string             `json:"token"`          // the session token
	JWK   stdjson.RawMessage `json:"jwk"`            // the session public key; its thumbprint is cnf.jkt
	EKey  stdjson.RawMessage `json:"ekey,omitempty"` // optional P-256 agreement key: asks for body encryption
	// InboxSince, optional, is the last position of the user's inbox
	// stream the client received (spec.md §20.11): the server recovers the
	// stored direct messages after it, right after the welcome.
	InboxSince *Position `json:"inbox_since,omitempty"`
}

// WelcomeBody is the body of the server's answer to hello.
type WelcomeBody struct {
	Session  string   `json:"sid"`           // the session id (the token's sid)
	Subject  string   `json:"sub"`           // the authenticated subject
	Roles    []string `json:"roles"`         // the token's roles
	Expiry   int64    `json:"exp"`           // token expiry, Unix ms
	Time     int64    `json:"time"`          // server clock, Unix ms, for skew correction
	Skew     int64    `json:"skew"`          // freshness tolerance, ms
	Window   int64    `json:"window"`        // how long ids are remembered, ms
	LastSeq  uint64   `json:"seq"`           // highest seq accepted so far (the hello's)
	MaxFrame int      `json:"max_frame"`     // size limit for client frames, bytes
	Key      string   `json:"key,omitempty"` // session content key, wrapped to ekey (JWE)
	// Grants is what the policy lets this session do (§8.3). A server
	// always sends it; a client reads nil as "not announced" (an older
	// server) and [] as "nothing".
	Grants Grants `json:"grants"`
	// Inbox is the position of the user's inbox stream (spec.md §20.11)
	// when the server keeps direct messages; InboxRecovered answers a
	// hello with inbox_since, as recovered answers a sub with since.
	Inbox          *Position `json:"inbox,omitempty"`
	InboxRecovered *bool     `json:"inbox_recovered,omitempty"`
}

// ErrorBody is the body of an error frame.
type ErrorBody struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
	Ref     string `json:"ref,omitempty"` // id of the offending frame, when known
}

// DeliverBody is the body of deliver and direct frames: the sender's frame,
// unchanged, with the sender's public key and subject, vouched for by the
// server's signature over the whole delivery.
type DeliverBody struct {
	Frame string             `json:"frame"`         // the sender's compact JWS, byte for byte
	JWK   stdjson.RawMessage `json:"jwk"`           // the sender's session public key
	Sub   string             `json:"sub"`           // the sender's subject
	Enc   string             `json:"enc,omitempty"` // direct only: the body re-sealed to the recipient's session key
	// Epoch and Offset are the publication's position in the channel's
	// stream (deliver frames of a channel with history only, spec.md §20).
	Epoch  string `json:"epoch,omitempty"`
	Offset uint64 `json:"offset,omitempty"`
	// LogIndex is the index of the message's entry in the server's audit
	// log, when the log is synchronous: the entry was durable before the
	// delivery was sent (spec.md §21.3).
	LogIndex *uint64 `json:"log_index,omitempty"`
}

// SubReplyBody is the reply body to sub.
type SubReplyBody struct {
	Members []string `json:"members"`       // subjects present in the channel
	Key     string   `json:"key,omitempty"` // channel content key, wrapped to ekey
	// Stream is the position the subscription starts after, for a channel
	// with history (spec.md §20): the live frames that follow have greater
	// offsets.
	Stream *Position `json:"stream,omitempty"`
	// Recovered answers a sub with since: true when the history frames
	// that follow the reply hold every publication after since (up to
	// Stream), false when they could not (the epoch changed, since fell out
	// of the window, or the gap is over the recovery bound).
	Recovered *bool `json:"recovered,omitempty"`
}

// PresenceBody is the reply body to presence: {"members": [...]}, an
// empty array (never absent) for a channel without subscribers.
type PresenceBody struct {
	Members []string `json:"members"` // subjects present in the channel
}

// JoinBody is the body of join and leave: who joined or left.
type JoinBody struct {
	Sub string `json:"sub"`
}

// RefreshBody is the body of a client refresh frame.
type RefreshBody struct {
	RefreshToken string `json:"refresh_token"`
}

// RefreshedBody is the body of the server's answer to refresh.
type RefreshedBody struct {
	Token        string `json:"token"`
	Expiry       int64  `json:"exp"` // Unix ms
	RefreshToken string `json:"refresh_token"`
}

// ExpiringBody warns that the token expires at Expiry (Unix ms).
type ExpiringBody struct {
	Expiry int64 `json:"exp"`
}

// KeyBody carries a rotated content key: the key frame's ch names the
// channel (absent for the session key).
type KeyBody struct {
	Key string `json:"key"` // wrapped content key (JWE)
}

// DecodeBody decodes a frame body, or an HTTP API body (spec.md §13),
// strictly into v: strict JSON (§6.3), and duplicate and case-variant
// members are rejected, and so are members v does not have, at every
// depth (internal/strictjson.Unmarshal).
func DecodeBody(body []byte, v any) error {
	if len(body) == 0 {
		return errString("body is required")
	}
	return strictjson.Unmarshal(body, v, &strictjson.Options{MaxDepth: MaxDepth})
}
