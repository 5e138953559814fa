package protocol

import (
	stdjson "encoding/json"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/internal/strictjson"
)

// Wire constants.
const (
	// Subprotocol is the WebSocket subprotocol a client MUST offer.
	Subprotocol = "sigil.v1"
	// TypClient is the JWS typ of every client frame.
	TypClient = "sigil-client+jws"
	// TypServer is the JWS typ of every server frame.
	TypServer = "sigil-server+jws"
	// TypSession is the JWS typ of a session token.
	TypSession = "sigil-session+jwt"
)

// Built-in client actions (spec.md §9.1). Application actions contain a dot.
const (
	ActHello    = "hello"    // first frame: presents the session token
	ActSub      = "sub"      // subscribe to ch
	ActUnsub    = "unsub"    // unsubscribe from ch
	ActPub      = "pub"      // publish body to ch
	ActDM       = "dm"       // direct message to user "to"
	ActRefresh  = "refresh"  // in-band token refresh
	ActPing     = "ping"     // liveness; answered with pong
	ActPresence = "presence" // list who is in ch
)

// Server actions (spec.md §10).
const (
	ActWelcome   = "welcome"   // reply to hello
	ActDeliver   = "deliver"   // a channel publish, carrying the sender's frame
	ActDirect    = "direct"    // a direct message, carrying the sender's frame
	ActReply     = "reply"     // success answer to a frame that had a cid
	ActError     = "error"     // rejection of a frame
	ActJoin      = "join"      // presence: a user joined ch
	ActLeave     = "leave"     // presence: a user left ch
	ActExpiring  = "expiring"  // the session token expires soon
	ActRefreshed = "refreshed" // answer to refresh: the new token
	ActPong      = "pong"      // answer to ping
	ActKey       = "key"       // a new content key (body encryption)
)

// Envelope is the claims set of every frame, client or server. Member names
// are short because every frame carries them.
type Envelope struct {
	ID      string             `json:"id"`             // canonical lowercase UUID, unique per sender
	TS      int64              `json:"ts"`             // Unix time in milliseconds
	Seq     uint64             `json:"seq,omitempty"`  // client frames: strictly increasing per session, from 1
	Session string             `json:"sid,omitempty"`  // session id; required in client frames
	Subject string             `json:"sub,omitempty"`  // client frames: the token's sub
	Action  string             `json:"act"`            // action name
	Channel string             `json:"ch,omitempty"`   // channel, for channel actions
	To      string             `json:"to,omitempty"`   // recipient user, for dm
	Corr    string             `json:"cid,omitempty"`  // correlation id; answers carry it back
	Body    stdjson.RawMessage `json:"body,omitempty"` // plaintext body, any JSON value
	Enc     string             `json:"enc,omitempty"`  // encrypted body: JWE compact (spec.md §11)
}

// Time returns TS as a time.Time.
func (e *Envelope) Time() time.Time { return time.UnixMilli(e.TS) }

// Marshal encodes the envelope as compact JSON, as encoding/json does.
func (e *Envelope) Marshal() ([]byte, error) { return appendEnvelope(nil, e, false) }

// maxEncLength bounds the enc member.
const maxEncLength = 1 << 20

// claim bits, to know which claims were present.
const (
	hasID = 1 << iota
	hasTS
	hasSeq
	hasSid
	hasSub
	hasAct
	hasCh
	hasTo
	hasCid
	hasBody
	hasEnc
)

// decodeEnvelope decodes a payload strictly (spec.md §6.1, §6.3) in one pass.
// client selects the client-frame rules (seq, sid and sub required).
func decodeEnvelope(payload []byte, client bool) (*Envelope, error) {
	var e Envelope
	var seen int
	err := strictjson.Members(payload, MaxDepth, func(name, raw []byte) error {
		var bit int
		var err error
		switch string(name) {
		case "id":
			bit = hasID
			e.ID, err = decodeString(raw, "id", 36)
		case "ts":
			bit = hasTS
			var n uint64
			n, err = claimUint(raw, "ts", 0)
			e.TS = int64(n)
		case "seq":
			bit = hasSeq
			e.Seq, err = claimUint(raw, "seq", 1)
		case "sid":
			bit = hasSid
			e.Session, err = decodeString(raw, "sid", 36)
		case "sub":
			bit = hasSub
			e.Subject, err = decodeString(raw, "sub", maxStringClaim)
		case "act":
			bit = hasAct
			e.Action, err = decodeString(raw, "act", 64)
		case "ch":
			bit = hasCh
			e.Channel, err = decodeString(raw, "ch", 128)
		case "to":
			bit = hasTo
			e.To, err = decodeString(raw, "to", maxStringClaim)
		case "cid":
			bit = hasCid
			e.Corr, err = decodeString(raw, "cid", 64)
		case "enc":
			bit = hasEnc
			e.Enc, err = decodeString(raw, "enc", maxEncLength)
		case "body":
			bit = hasBody
			e.Body = stdjson.RawMessage(raw)
		default:
			return errString("unknown claim " + quote(string(name)))
		}
		seen |= bit
		return err
	})
	if err != nil {
		return nil, err
	}
	required := hasID | hasTS | hasAct
	if client {
		required |= hasSeq | hasSid | hasSub
	}
	if seen&required != required {
		return nil, errString("missing a required claim (id, ts, act; and seq, sid, sub in client frames)")
	}
	switch {
	case !isCanonicalUUID(e.ID):
		return nil, errString("id must be a canonical lowercase UUID")
	case !client && seen&(hasSeq|hasSub|hasEnc) != 0:
		return nil, errString("server frames carry no seq, sub or enc")
	case seen&hasSid != 0 && !isCanonicalUUID(e.Session):
		return nil, errString("sid must be a canonical lowercase UUID")
	case client && e.Subject == "":
		return nil, errString("sub must not be empty")
	case !validAction(e.Action):
		return nil, errString("act is not a valid action name")
	case seen&hasCh != 0 && !ValidChannel(e.Channel):
		return nil, errString("ch is not a valid channel name")
	case seen&hasTo != 0 && e.To == "":
		return nil, errString("to must not be empty")
	case seen&hasCid != 0 && e.Corr == "":
		return nil, errString("cid must not be empty")
	case seen&hasEnc != 0 && e.Enc == "":
		return nil, errString("enc must not be empty")
	case seen&hasEnc != 0 && seen&hasBody != 0:
		return nil, errString("body and enc are mutually exclusive")
	}
	return &e, nil
}

func claimUint(raw []byte, name string, min uint64) (uint64, error) {
	n, err := parseCanonicalUint(raw)
	if err != nil || n < min {
		return 0, errString("claim " + quote(name) + " must be an integer in range")
	}
	return n, nil
}

func quote(s string) string {
	if len(s) > 32 {
		s = s[:32] + "…"
	}
	return `"` + strings.ToValidUTF8(s, "?") + `"`
}

// validAction: a built-in name ([a-z]+) or an application name made of
// dot-separated segments of [a-z0-9_-], starting with a letter.
func validAction(a string) bool {
	if a == "" || a[0] < 'a' || a[0] > 'z' {
		return false
	}
	prevDot := false
	for i := 0; i < len(a); i++ {
		c := a[i]
		switch {
		case c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '_', c == '-':
			prevDot = false
		case c == '.':
			if prevDot {
				return false
			}
			prevDot = true
		default:
			return false
		}
	}
	return !prevDot
}

// IsAppAction reports whether act names an application action (it has a
// dot); those are routed to handlers registered on the server.
func IsAppAction(act string) bool { return strings.IndexByte(act, '.') > 0 && validAction(act) }

// ValidChannel reports whether name is a valid channel name: 1–128 bytes of
// dot-separated, non-empty segments of [A-Za-z0-9_-].
func ValidChannel(name string) bool {
	if name == "" || len(name) > 128 {
		return false
	}
	seg := 0
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_', c == '-':
			seg++
		case c == '.':
			if seg == 0 {
				return false
			}
			seg = 0
		default:
			return false
		}
	}
	return seg > 0
}
