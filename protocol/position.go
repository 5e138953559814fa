package protocol

import (
	"fmt"
	"time"
)

// Stream positions and history (spec.md §20).

// ActHistory is both the client action that reads a channel's stored
// frames (answered with a reply whose body is a HistoryReplyBody) and the
// server frame that carries the frames a sub with since recovers
// (HistoryBody), sent between the sub's reply and the channel's live
// frames.
const ActHistory = "history"

// Position is a place in a channel's stream: the stream's epoch, and the
// offset of a publication in it (the first publication of an epoch has
// offset 1; offset 0 is the place before it). A deliver frame of a channel
// with history carries the position of its publication inside its signed
// body.
type Position struct {
	Epoch  string `json:"epoch"`
	Offset uint64 `json:"offset"`
}

// InboxPattern is the history rule pattern (HistoryRule.Channel) that
// sets the history of every user's inbox stream: the direct messages sent
// to the user (spec.md §20.11). No channel pattern matches an inbox.
const InboxPattern = "@"

// InboxStream returns the name of subject sub's inbox stream. It is no
// channel name (ValidChannel rejects "@"), so it never meets a channel's.
func InboxStream(sub string) string { return InboxPattern + sub }

// IsZero reports whether p is no position at all (no epoch).
func (p Position) IsZero() bool { return p.Epoch == "" }

// String returns "epoch:offset".
func (p Position) String() string { return fmt.Sprintf("%s:%d", p.Epoch, p.Offset) }

// MaxEpoch is the greatest length of an epoch, in bytes.
const MaxEpoch = 64

// ValidEpoch reports whether e is an epoch: 1–64 characters of the
// base64url alphabet.
func ValidEpoch(e string) bool {
	if e == "" || len(e) > MaxEpoch {
		return false
	}
	for i := 0; i < len(e); i++ {
		c := e[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// check reports whether p is a valid position; min is the least offset
// allowed (1 in a deliver frame, 0 in a since).
func (p Position) check(min uint64) error {
	if !ValidEpoch(p.Epoch) {
		return errString("epoch must be 1-64 base64url characters")
	}
	if p.Offset < min || p.Offset > MaxSafeInteger {
		return errString("offset out of range")
	}
	return nil
}

// SubBody is the optional body of a sub: {"since": {epoch, offset}} asks
// the server for the channel's publications after that position.
type SubBody struct {
	Since *Position `json:"since"`
}

// ParseSubBody decodes the body of a sub: nil for none, else exactly
// {"since": {"epoch", "offset"}}. A misfit is bad_request.
func ParseSubBody(body []byte) (*Position, error) {
	if len(body) == 0 {
		return nil, nil
	}
	var sb SubBody
	if err := DecodeBody(body, &sb); err != nil || sb.Since == nil {
		return nil, newErr(CodeBadRequest, "a sub body is exactly {since: {epoch, offset}}")
	}
	if err := sb.Since.check(0); err != nil {
		return nil, newErr(CodeBadRequest, "since: %v", err)
	}
	return sb.Since, nil
}

// HistoryRequest is the body of a history action: the frames with offsets
// after After, or before Before (at most one of them; neither means the
// latest), at most Limit of them (0: the server's default page).
type HistoryRequest struct {
	Limit  int     `json:"limit,omitempty"`
	Before *uint64 `json:"before,omitempty"`
	After  *uint64 `json:"after,omitempty"`
}

// MaxHistoryLimit is the greatest limit of a history request.
const MaxHistoryLimit = 1000

// ParseHistoryRequest decodes the body of a history action (an absent
// body is {}). A misfit is bad_request.
func ParseHistoryRequest(body []byte) (*HistoryRequest, error) {
	var q HistoryRequest
	if len(body) == 0 {
		return &q, nil
	}
	if err := DecodeBody(body, &q); err != nil {
		return nil, newErr(CodeBadRequest, "a history body is {limit?, before? | after?}")
	}
	if q.Before != nil && q.After != nil {
		return nil, newErr(CodeBadRequest, "history takes before or after, not both")
	}
	if q.Limit < 0 || q.Limit > MaxHistoryLimit {
		return nil, newErr(CodeBadRequest, "history limit must be 0-%d", MaxHistoryLimit)
	}
	if (q.Before != nil && *q.Before > MaxSafeInteger) || (q.After != nil && *q.After > MaxSafeInteger) {
		return nil, newErr(CodeBadRequest, "history offset out of range")
	}
	return &q, nil
}

// HistoryBody is the body of a history server frame: deliver frames of
// the frame's ch, byte for byte as they were first sent, in offset order.
type HistoryBody struct {
	Frames []string `json:"frames"`
}

// HistoryReplyBody is the reply to a history action: the stream's epoch
// and its last offset (Top), and the requested deliver frames, byte for
// byte, in offset order. More reports that the page was cut by the limit
// or the size bound, and that more frames lie in the requested direction.
type HistoryReplyBody struct {
	Epoch  string   `json:"epoch"`
	Top    uint64   `json:"top"`
	Frames []string `json:"frames"`
	More   bool     `json:"more"`
}

// StoredDelivery is a deliver frame read from a channel's history,
// verified by FrameVerifier.VerifyStored.
type StoredDelivery struct {
	Message  *Message // the deliver frame; open it with OpenDelivery
	Position Position // its position in the channel's stream
}

// VerifyStored verifies a deliver frame read from channel ch's history (a
// history frame, or the reply to a history action, which the caller has
// verified with Verify): form, header and typ, the signature under a key
// of the JWKS, strict claims, act deliver with ch, and a position in its
// body (spec.md §20.4). Freshness and replay are not checked, as for the
// inner frame of a delivery: the fresh frame around it was, and a stored
// frame is placed by its position, which the client checks against the
// positions it has.
func (f *FrameVerifier) VerifyStored(frame []byte, ch string) (*StoredDelivery, error) {
	if ch == "" {
		return nil, newErr(CodeWrongSession, "a stored frame needs its channel")
	}
	return f.verifyStored(frame, ch, "")
}

// VerifyStoredDirect is VerifyStored for a direct frame read from the
// inbox stream of subject to (spec.md §20.11): act direct, addressed to
// to, with a position.
func (f *FrameVerifier) VerifyStoredDirect(frame []byte, to string) (*StoredDelivery, error) {
	if to == "" {
		return nil, newErr(CodeWrongSession, "a stored direct frame needs its recipient")
	}
	return f.verifyStored(frame, "", to)
}

// VerifyLate is VerifyStored for a live deliver frame that failed
// Verify only for being stale, whatever its channel, or a direct frame to
// f.Subject: a client accepts it if its position is the next one of the
// channel's stream or of its inbox (spec.md §20.4, §20.11), which the
// caller checks.
func (f *FrameVerifier) VerifyLate(frame []byte) (*StoredDelivery, error) {
	return f.verifyStored(frame, "", "")
}

// verifyStored checks a stored deliver frame of ch (any, if both ch and to
// are empty) or a stored direct frame to to.
func (f *FrameVerifier) verifyStored(frame []byte, ch, to string) (*StoredDelivery, error) {
	max := f.MaxFrame
	if max <= 0 {
		max = 1 << 20
	}
	env, perr := verifyServerFrame(f.Keys, frame, max)
	if perr != nil {
		return nil, perr
	}
	if ch == "" && to == "" && env.Action == ActDirect {
		to = f.Subject // VerifyLate of a direct frame: the client's own inbox
		if to == "" {
			return nil, &Error{Code: CodeWrongSession, Message: "a direct frame for no known user", Ref: env.ID}
		}
	}
	if to != "" {
		if env.Action != ActDirect || env.To != to || env.Channel != "" || env.Session != "" || env.Corr != "" {
			return nil, &Error{Code: CodeWrongSession, Message: "a stored frame is not a direct frame to this user", Ref: env.ID}
		}
	} else {
		if ch == "" {
			ch = env.Channel
		}
		if env.Action != ActDeliver || env.Channel == "" || env.Channel != ch || env.Session != "" || env.Corr != "" {
			return nil, &Error{Code: CodeWrongSession, Message: "a stored frame is not a deliver frame of this channel", Ref: env.ID}
		}
	}
	m := &Message{Envelope: *env, Frame: frame}
	pos, ok, err := DeliveryPosition(m)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, &Error{Code: CodeBadClaims, Message: "a stored frame has no position", Ref: env.ID}
	}
	return &StoredDelivery{Message: m, Position: pos}, nil
}

// DeliveryPosition returns the position a verified deliver frame carries,
// and whether it carries one. A body with only one of epoch and offset, or
// with an invalid one, is bad_claims.
func DeliveryPosition(d *Message) (Position, bool, error) {
	var db DeliverBody
	if err := DecodeBody(d.Body, &db); err != nil {
		return Position{}, false, &Error{Code: CodeBadClaims, Message: "delivery body", Ref: d.ID}
	}
	return deliveryPosition(d, &db)
}

func deliveryPosition(d *Message, db *DeliverBody) (Position, bool, error) {
	if db.LogIndex != nil && *db.LogIndex > MaxSafeInteger {
		return Position{}, false, &Error{Code: CodeBadClaims, Message: "delivery log_index out of range", Ref: d.ID}
	}
	if db.Epoch == "" && db.Offset == 0 {
		return Position{}, false, nil
	}
	p := Position{Epoch: db.Epoch, Offset: db.Offset}
	if d.Action != ActDeliver && d.Action != ActDirect {
		return Position{}, false, &Error{Code: CodeBadClaims, Message: "only a deliver or direct frame carries a position", Ref: d.ID}
	}
	if err := p.check(1); err != nil {
		return Position{}, false, &Error{Code: CodeBadClaims, Message: "delivery position: " + err.Error(), Ref: d.ID}
	}
	return p, true, nil
}

// HistoryLimits are a channel's history settings: how many publications
// its stream keeps (Size) and for how long (TTL). A zero Size means no
// history; a zero TTL means no age limit.
type HistoryLimits struct {
	Size int
	TTL  time.Duration
}

// HistoryRule sets the history of the channels that match a pattern (the
// patterns of Rule). When several rules match a channel, the first one in
// the policy's order applies.
type HistoryRule struct {
	Channel string `json:"channel"`
	Size    int    `json:"size"`
	TTL     int64  `json:"ttl"` // seconds; 0: no age limit
}

// DuplicateBody is the body of the reply to a copy of a pub or dm frame
// that the server had accepted (spec.md §20.10): {"duplicate": true}. The
// message was delivered once, with the first copy, and is not delivered
// again.
type DuplicateBody struct {
	Duplicate bool `json:"duplicate"`
}

// MaxHistorySize bounds a HistoryRule's size.
const MaxHistorySize = 1 << 20
