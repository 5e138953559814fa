package protocol

import (
	"sync"
	"time"
)

// FrameVerifier verifies server frames on the client side (spec.md §10.2):
// form, header and typ, the signature under a JWKS key with its pinned
// algorithm, strict claims, the session, freshness and replay of ids.
// Safe for concurrent use.
type FrameVerifier struct {
	Keys     *KeySet          // the server's JWKS (required)
	Session  string           // this client's sid; frames naming another sid are rejected
	Subject  string           // this client's sub; direct frames to another user are rejected
	Skew     time.Duration    // freshness tolerance; zero means 30s
	MaxFrame int              // size limit; zero means 1 MiB
	Now      func() time.Time // clock, already corrected for server offset; nil means time.Now

	mu       sync.Mutex
	seen     map[string]time.Time // id -> forget after
	ops      int
	welcomed bool // a welcome has been verified
}

// Verify checks a server frame. On success, Body is the plaintext body
// (server frames are not encrypted as a whole; a direct's re-sealed body
// is opened by OpenDelivery).
func (f *FrameVerifier) Verify(frame []byte) (*Message, error) {
	m, err := f.verify(frame)
	if err != nil {
		return nil, err
	}
	return m, nil
}

func (f *FrameVerifier) verify(frame []byte) (*Message, *Error) {
	max := f.MaxFrame
	if max <= 0 {
		max = 1 << 20
	}
	env, err := verifyServerFrame(f.Keys, frame, max)
	if err != nil {
		return nil, err
	}
	fail := func(e *Error) (*Message, *Error) {
		e.Ref = env.ID
		return nil, e
	}
	// Session: a frame for one session names it; broadcasts name none.
	f.mu.Lock()
	welcomed := f.welcomed
	f.mu.Unlock()
	switch {
	case env.Action == ActError && env.Session == "" && !welcomed:
		// The answer to a rejected hello names no session (spec.md §8.2).
	case env.Session != "":
		if env.Session != f.Session {
			return fail(newErr(CodeWrongSession, "frame is for another session"))
		}
	case env.Action == ActDeliver || env.Action == ActJoin || env.Action == ActLeave || env.Action == ActKey:
		if env.Channel == "" {
			return fail(newErr(CodeWrongSession, "broadcast frame without ch"))
		}
	case env.Action == ActDirect:
		if env.To != f.Subject {
			return fail(newErr(CodeWrongSession, "direct frame for another user"))
		}
	default:
		return fail(newErr(CodeWrongSession, "frame names no session"))
	}
	skew := f.Skew
	if skew <= 0 {
		skew = DefaultSkew
	}
	t, ts := clockNow(f.Now), env.Time()
	if ts.Before(t.Add(-skew)) {
		return fail(newErr(CodeStale, "server frame is stale"))
	}
	if ts.After(t.Add(skew)) {
		return fail(newErr(CodeFuture, "server frame is from the future"))
	}
	f.mu.Lock()
	if f.seen == nil {
		f.seen = make(map[string]time.Time)
	}
	if exp, dup := f.seen[env.ID]; dup && !t.After(exp) {
		f.mu.Unlock()
		return fail(newErr(CodeReplayID, "server frame replayed"))
	}
	f.seen[env.ID] = ts.Add(skew)
	f.ops++
	if f.ops%1024 == 0 {
		for id, exp := range f.seen {
			if t.After(exp) {
				delete(f.seen, id)
			}
		}
	}
	if env.Action == ActWelcome {
		f.welcomed = true
	}
	f.mu.Unlock()
	return &Message{Envelope: *env, Frame: frame}, nil
}

// Sender is the verified origin of a delivered message.
type Sender struct {
	Subject string     // the sender's sub, as vouched by the server and signed by the sender
	Key     *PublicKey // the sender's session key, or the JWKS key for Server
	Server  bool       // the server application published the message itself
}

// OpenDelivery verifies the sender's frame inside a verified deliver or
// direct frame, end to end (spec.md §10.3): the sender's frame must be a
// client frame signed by the enclosed jwk (kid = its thumbprint, algorithm
// pinned by the key), with strict claims whose sub matches, whose act is pub
// (deliver, same ch) or dm (direct, to = recipient). keys opens an encrypted
// body (nil: leave Enc as is). It returns the sender and the sender's message.
func OpenDelivery(d *Message, keys ContentKeys) (*Sender, *Message, error) {
	s, m, err := openDelivery(d, keys)
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

// OpenDelivery is the package-level OpenDelivery, and also opens messages
// the server application published itself (spec.md §10.3): a delivery whose
// sub is "server" and whose inner frame is a server frame, signed by a key
// of f's JWKS, with act pub and the delivery's ch.
func (f *FrameVerifier) OpenDelivery(d *Message, keys ContentKeys) (*Sender, *Message, error) {
	s, m, err := f.openServerPublished(d)
	if err == nil && s == nil {
		s, m, err = openDelivery(d, keys)
	}
	if err != nil {
		return nil, nil, err
	}
	return s, m, nil
}

// openServerPublished returns (nil, nil, nil) if d is not server-published.
func (f *FrameVerifier) openServerPublished(d *Message) (*Sender, *Message, *Error) {
	if d.Action != ActDeliver {
		return nil, nil, nil
	}
	var db DeliverBody
	if err := DecodeBody(d.Body, &db); err != nil || db.Sub != ServerSubject {
		return nil, nil, nil
	}
	if _, _, err := deliveryPosition(d, &db); err != nil {
		return nil, nil, err.(*Error)
	}
	frame := []byte(db.Frame)
	c, perr := parseCompact(frame, DefaultMaxFrame*16, TypServer, "", header{})
	if perr != nil {
		if perr.Code == CodeBadTyp {
			return nil, nil, nil // a client frame: the sender's own delivery
		}
		return nil, nil, perr
	}
	key, ok := f.Keys.Key(c.hdr.kid)
	if !ok {
		return nil, nil, newErr(CodeUnknownKey, "server-published frame: kid %s is not in the JWKS", quote(c.hdr.kid))
	}
	if jwk, err := ParsePublicJWK(db.JWK); err != nil || jwk.jkt != key.jkt {
		return nil, nil, newErr(CodeUnknownKey, "server-published frame: jwk is not the JWKS key")
	}
	payload, perr := verifySignature(&c, key)
	if perr != nil {
		return nil, nil, perr
	}
	env, e := decodeEnvelope(payload, false)
	if e != nil {
		return nil, nil, wrapErr(CodeBadClaims, e, e.Error())
	}
	if env.Action != ActPub || env.Channel != d.Channel || env.Session != "" {
		return nil, nil, &Error{Code: CodeWrongSession, Message: "server-published frame does not match the delivery", Ref: env.ID}
	}
	return &Sender{Subject: ServerSubject, Key: key, Server: true}, &Message{Envelope: *env, Frame: frame}, nil
}

// ServerSubject is the sub of deliveries the server application published.
const ServerSubject = "server"

func openDelivery(d *Message, keys ContentKeys) (*Sender, *Message, *Error) {
	if d.Action != ActDeliver && d.Action != ActDirect {
		return nil, nil, newErr(CodeBadRequest, "not a delivery")
	}
	var db DeliverBody
	if err := DecodeBody(d.Body, &db); err != nil || db.Frame == "" || len(db.JWK) == 0 {
		return nil, nil, newErr(CodeBadClaims, "delivery body must be {frame, jwk, sub[, enc][, epoch, offset]}")
	}
	if _, _, err := deliveryPosition(d, &db); err != nil {
		return nil, nil, err.(*Error)
	}
	key, err := ParsePublicJWK(db.JWK)
	if err != nil {
		return nil, nil, wrapErr(CodeBadClaims, err, err.Error())
	}
	cf, perr := verifyClientFrame(key, []byte(db.Frame))
	if perr != nil {
		return nil, nil, perr
	}
	env, frame, bound := &cf.Envelope, cf.Frame, cf.key
	if env.Subject != db.Sub {
		return nil, nil, &Error{Code: CodeWrongSession, Message: "sender sub does not match the delivery", Ref: env.ID}
	}
	switch d.Action {
	case ActDeliver:
		if env.Action != ActPub || env.Channel != d.Channel {
			return nil, nil, &Error{Code: CodeWrongSession, Message: "delivery does not match the sender's publish", Ref: env.ID}
		}
	case ActDirect:
		if env.Action != ActDM || env.To != d.To {
			return nil, nil, &Error{Code: CodeWrongSession, Message: "direct does not match the sender's dm", Ref: env.ID}
		}
	}
	m := &Message{Envelope: *env, Frame: frame}
	if env.Enc != "" && keys != nil {
		enc, scope := env.Enc, ChannelScope(env.Channel)
		if d.Action == ActDirect {
			enc, scope = db.Enc, ScopeSession
		}
		plain, perr := openBody(enc, keys, scope)
		if perr != nil {
			perr.Ref = env.ID
			return nil, nil, perr
		}
		m.Body, m.Encrypted = plain, true
	}
	return &Sender{Subject: db.Sub, Key: bound}, m, nil
}

// verifyServerFrame checks a server frame's form, header and typ, its
// signature under a key of keys (algorithm pinned by the key) and its
// strict claims: no session, clock or replay checks.
func verifyServerFrame(keys *KeySet, frame []byte, max int) (*Envelope, *Error) {
	c, err := parseCompact(frame, max, TypServer, "", header{})
	if err != nil {
		return nil, err
	}
	key, ok := keys.Key(c.hdr.kid)
	if !ok {
		return nil, newErr(CodeUnknownKey, "kid %s is not in the server's JWKS", quote(c.hdr.kid))
	}
	payload, err := verifySignature(&c, key)
	if err != nil {
		return nil, err
	}
	env, e := decodeEnvelope(payload, false)
	if e != nil {
		return nil, wrapErr(CodeBadClaims, e, e.Error())
	}
	return env, nil
}

// Remember marks a server frame id as received at ts, so that the frame is
// rejected as a replay if it arrives again (for example after a reconnect,
// when a client restores the ids it has seen).
func (f *FrameVerifier) Remember(id string, ts time.Time) {
	skew := f.Skew
	if skew <= 0 {
		skew = DefaultSkew
	}
	f.mu.Lock()
	if f.seen == nil {
		f.seen = make(map[string]time.Time)
	}
	f.seen[id] = ts.Add(skew)
	f.mu.Unlock()
}

// SetWelcomed records whether the current connection's handshake is done.
// A client calls SetWelcomed(false) when it opens a new connection (so that
// the error answering a rejected hello, which names no session, is
// accepted); verifying a welcome sets it to true.
func (f *FrameVerifier) SetWelcomed(done bool) {
	f.mu.Lock()
	f.welcomed = done
	f.mu.Unlock()
}
