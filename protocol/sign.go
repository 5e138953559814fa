package protocol

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"hash/maphash"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ClientSigner signs client frames for one session. It fills id, ts, seq,
// sid and sub, so callers only set the action, channel and body. It is safe
// for concurrent use: seq is assigned and the frame signed under one lock,
// so frames leave in seq order when writes are serialised in the same order.
type ClientSigner struct {
	Key     *PrivateKey      // session key (required)
	Session string           // sid, from the token (required)
	Subject string           // sub, from the token (required)
	Now     func() time.Time // clock; nil means time.Now
	Rand    io.Reader        // randomness for ids; nil means crypto/rand

	mu     sync.Mutex
	seq    uint64
	offset time.Duration // server time - local time, from welcome
}

// SetClockOffset records the server's clock offset (server - local), learned
// from welcome; later timestamps are corrected by it.
func (s *ClientSigner) SetClockOffset(d time.Duration) {
	s.mu.Lock()
	s.offset = d
	s.mu.Unlock()
}

// SetSeq sets the last used seq, for example after welcome reports it.
// Later frames use higher values.
func (s *ClientSigner) SetSeq(last uint64) {
	s.mu.Lock()
	if last > s.seq {
		s.seq = last
	}
	s.mu.Unlock()
}

// Seq returns the last seq used.
func (s *ClientSigner) Seq() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.seq
}

// Sign completes env (id, ts, seq, sid, sub) and returns the compact JWS.
// env is modified in place so the caller learns the id and seq.
func (s *ClientSigner) Sign(env *Envelope) ([]byte, error) {
	return s.SignWith(env, nil)
}

// SignWith is Sign with a hook that runs under the signer's lock after the
// frame is signed, so that a caller can enqueue frames in seq order.
func (s *ClientSigner) SignWith(env *Envelope, then func([]byte) error) ([]byte, error) {
	if s.Key == nil || s.Session == "" || s.Subject == "" {
		return nil, errors.New("sigil: ClientSigner needs Key, Session and Subject")
	}
	id, err := newUUID(s.Rand)
	if err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	env.ID = id
	env.TS = clockNow(s.Now).Add(s.offset).UnixMilli()
	env.Session = s.Session
	env.Subject = s.Subject
	env.Seq = s.seq + 1
	frame, err := signEnvelope(s.Key, TypClient, env, false)
	if err != nil {
		return nil, err
	}
	s.seq++
	if then != nil {
		if err := then(frame); err != nil {
			return frame, err
		}
	}
	return frame, nil
}

// ServerSigner signs server frames. Safe for concurrent use.
type ServerSigner struct {
	Key  *PrivateKey      // server signing key (required)
	Now  func() time.Time // clock; nil means time.Now
	Rand io.Reader        // randomness for ids; nil means crypto/rand
}

// Sign fills id and ts in env and returns the compact JWS.
func (s *ServerSigner) Sign(env *Envelope) ([]byte, error) { return s.sign(env, false) }

func (s *ServerSigner) sign(env *Envelope, compactBody bool) ([]byte, error) {
	id, err := newUUID(s.Rand)
	if err != nil {
		return nil, err
	}
	env.ID = id
	env.TS = clockNow(s.Now).UnixMilli()
	env.Seq = 0
	return signEnvelope(s.Key, TypServer, env, compactBody)
}

// SignBody is Sign with body marshalled from v. A DeliverBody, the body
// of every deliver and direct frame, is encoded without reflection into a
// pooled buffer (appendDeliverBody), with the same bytes; env.Body is nil
// on return then.
func (s *ServerSigner) SignBody(env *Envelope, v any) ([]byte, error) {
	if d, ok := v.(DeliverBody); ok {
		bp := payloadPool.Get().(*[]byte)
		b, err := appendDeliverBody((*bp)[:0], &d)
		if err != nil {
			payloadPool.Put(bp)
			return nil, err
		}
		env.Body = b
		frame, err := s.sign(env, true)
		env.Body = nil
		if cap(b) <= 64<<10 {
			*bp = b[:0]
			payloadPool.Put(bp)
		}
		return frame, err
	}
	b, err := stdjson.Marshal(v)
	if err != nil {
		return nil, err
	}
	env.Body = b
	return s.sign(env, true)
}

// appendDeliverBody appends d as compact JSON, byte for byte what
// encoding/json's Marshal gives (FuzzAppendDeliverBody holds it to that).
func appendDeliverBody(b []byte, d *DeliverBody) ([]byte, error) {
	b = append(b, `{"frame":`...)
	b = appendJSONString(b, d.Frame)
	b = append(b, `,"jwk":`...)
	if d.JWK == nil {
		b = append(b, "null"...)
	} else {
		var err error
		if b, err = appendCompactJWK(b, d.JWK); err != nil {
			return nil, err
		}
	}
	b = append(b, `,"sub":`...)
	b = appendJSONString(b, d.Sub)
	b = appendMember(b, `,"enc":`, d.Enc)
	b = appendMember(b, `,"epoch":`, d.Epoch)
	if d.Offset != 0 {
		b = append(b, `,"offset":`...)
		b = strconv.AppendUint(b, d.Offset, 10)
	}
	if d.LogIndex != nil {
		b = append(b, `,"log_index":`...)
		b = strconv.AppendUint(b, *d.LogIndex, 10)
	}
	return append(b, '}'), nil
}

// ErrorFrame signs an error frame answering ref (the offending envelope,
// may be nil) in session sid.
func (s *ServerSigner) ErrorFrame(sid string, ref *Envelope, e *Error) ([]byte, error) {
	env := &Envelope{Action: ActError, Session: sid}
	body := ErrorBody{Code: e.Code, Message: e.Message, Ref: e.Ref}
	if ref != nil {
		env.Corr = ref.Corr
		if body.Ref == "" {
			body.Ref = ref.ID
		}
	}
	return s.SignBody(env, body)
}

// payloadPool holds the buffers envelopes are encoded into before
// signing; the frame is a new slice, so the buffer goes back at once.
var payloadPool = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// signEnvelope encodes env into a pooled buffer and signs it. compactBody:
// env.Body is encoding/json output (appendEnvelope).
func signEnvelope(k *PrivateKey, typ string, env *Envelope, compactBody bool) ([]byte, error) {
	bp := payloadPool.Get().(*[]byte)
	defer func() {
		if cap(*bp) <= 64<<10 {
			payloadPool.Put(bp)
		}
	}()
	payload, err := appendEnvelope((*bp)[:0], env, compactBody)
	if err != nil {
		return nil, err
	}
	*bp = payload[:0]
	return k.signCompact(typ, payload)
}

// appendEnvelope appends e as compact JSON, byte for byte what
// encoding/json's Marshal gives (FuzzAppendEnvelope holds it to that):
// members in struct order, empty optional members omitted, strings
// escaped as encoding/json escapes them, and the body compacted with
// <, > and & escaped. compactBody says the body is already in that form
// (encoding/json's own output), so it is copied as is.
func appendEnvelope(b []byte, e *Envelope, compactBody bool) ([]byte, error) {
	b = append(b, `{"id":`...)
	b = appendJSONString(b, e.ID)
	b = append(b, `,"ts":`...)
	b = strconv.AppendInt(b, e.TS, 10)
	if e.Seq != 0 {
		b = append(b, `,"seq":`...)
		b = strconv.AppendUint(b, e.Seq, 10)
	}
	b = appendMember(b, `,"sid":`, e.Session)
	b = appendMember(b, `,"sub":`, e.Subject)
	b = append(b, `,"act":`...)
	b = appendJSONString(b, e.Action)
	b = appendMember(b, `,"ch":`, e.Channel)
	b = appendMember(b, `,"to":`, e.To)
	b = appendMember(b, `,"cid":`, e.Corr)
	if len(e.Body) > 0 {
		b = append(b, `,"body":`...)
		if compactBody {
			b = append(b, e.Body...)
		} else {
			var err error
			if b, err = appendCompactBody(b, e.Body); err != nil {
				return nil, err
			}
		}
	}
	b = appendMember(b, `,"enc":`, e.Enc)
	return append(b, '}'), nil
}

func appendMember(b []byte, name, v string) []byte {
	if v == "" {
		return b
	}
	return appendJSONString(append(b, name...), v)
}

// appendJSONString appends s as a JSON string. Printable ASCII other than
// " \ < > & is copied; anything else takes encoding/json's escaping.
func appendJSONString(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c >= 0x7f || c == '"' || c == '\\' || c == '<' || c == '>' || c == '&' {
			q, _ := stdjson.Marshal(s) // a string always marshals
			return append(b, q...)
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// appendCompactBody appends a raw JSON body as encoding/json's Marshal
// writes a json.RawMessage: validated, compacted, with <, >, &, U+2028 and
// U+2029 escaped.
func appendCompactBody(b []byte, body []byte) ([]byte, error) {
	// (Compact validates; Marshal, on the rare body that needs it, escapes.)
	n := len(b)
	buf := bytes.NewBuffer(b)
	if stdjson.Compact(buf, body) != nil {
		_, err := stdjson.Marshal(stdjson.RawMessage(body)) // its own error
		return nil, err
	}
	b = buf.Bytes()
	if needsHTMLEscape(b[n:]) {
		q, err := stdjson.Marshal(stdjson.RawMessage(body))
		if err != nil {
			return nil, err
		}
		b = append(b[:n], q...)
	}
	return b, nil
}

// needsHTMLEscape reports whether JSON text p holds a byte that
// encoding/json's Marshal escapes in a RawMessage: <, > or &, or the first
// byte of U+2028 or U+2029 (0xE2, a superset: Marshal then decides). A
// byte loop: bytes.ContainsAny with non-ASCII runes in its set decodes p
// rune by rune.
func needsHTMLEscape(p []byte) bool {
	for _, c := range p {
		if c == '<' || c == '>' || c == '&' || c == 0xE2 {
			return true
		}
	}
	return false
}

// jwkSeen remembers, by content, JWKs that appendCompactJWK found already
// in the form Marshal writes them (valid, compact, nothing to escape): a
// sender's key is in the deliver of each of its messages, and checking it
// again every time was 1.2% of the server's CPU per publish with one
// subscriber (perf). A slot holds the last such JWK that hashed to it; a
// hit compares the whole text, so a collision or a new key only costs the
// check.
var (
	jwkSeed = maphash.MakeSeed()
	jwkSeen [256]atomic.Pointer[string]
)

// maxSeenJWK bounds the JWKs jwkSeen keeps (an Ed25519 key is about 90
// bytes, a P-256 one 130).
const maxSeenJWK = 512

// appendCompactJWK is appendCompactBody for a deliver's sender JWK.
func appendCompactJWK(b, jwk []byte) ([]byte, error) {
	if len(jwk) > maxSeenJWK {
		return appendCompactBody(b, jwk)
	}
	slot := &jwkSeen[maphash.Bytes(jwkSeed, jwk)%uint64(len(jwkSeen))]
	if p := slot.Load(); p != nil && *p == string(jwk) {
		return append(b, jwk...), nil
	}
	n := len(b)
	b, err := appendCompactBody(b, jwk)
	if err == nil && bytes.Equal(b[n:], jwk) {
		s := string(jwk)
		slot.Store(&s)
	}
	return b, err
}
