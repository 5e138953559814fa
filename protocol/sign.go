package protocol

import (
	stdjson "encoding/json"
	"errors"
	"io"
	"sync"
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
	frame, err := signEnvelope(s.Key, TypClient, env)
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
func (s *ServerSigner) Sign(env *Envelope) ([]byte, error) {
	id, err := newUUID(s.Rand)
	if err != nil {
		return nil, err
	}
	env.ID = id
	env.TS = clockNow(s.Now).UnixMilli()
	env.Seq = 0
	return signEnvelope(s.Key, TypServer, env)
}

// SignBody is Sign with body marshalled from v.
func (s *ServerSigner) SignBody(env *Envelope, v any) ([]byte, error) {
	b, err := stdjson.Marshal(v)
	if err != nil {
		return nil, err
	}
	env.Body = b
	return s.Sign(env)
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

func signEnvelope(k *PrivateKey, typ string, env *Envelope) ([]byte, error) {
	payload, err := env.Marshal()
	if err != nil {
		return nil, err
	}
	return k.signCompact(typ, payload)
}
