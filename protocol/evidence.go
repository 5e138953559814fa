package protocol

// Offline evidence (spec.md §14): who said what, checked with nothing but
// the server's public keys. No clock, no replay state, no session: an
// archived message stays evidence after its token expired.

// Evidence is a message whose author has been verified offline.
type Evidence struct {
	// Subject is who signed the message: the sub the server bound to Key.
	Subject string
	// Key is the sender's session public key (for a message the server
	// application published itself, the JWKS key that signed it).
	Key *PublicKey
	// FromServer reports a message the server application published.
	FromServer bool
	// Message is the sender's signed envelope, byte for byte in Frame. An
	// encrypted body stays in Enc (no keys are used offline).
	Message *Message
	// Token is the session token's claims (VerifyEvidence only).
	Token *SessionClaims
	// Delivery is the server's deliver or direct frame
	// (VerifyDeliveryEvidence only).
	Delivery *Message
}

// VerifyEvidence checks the chain of spec.md §14 for a client frame: token
// is a session token signed by a key of keys (its typ, header and strict
// claims checked; exp is not, archived evidence outlives tokens); jwk is
// the session public key, whose thumbprint is the token's cnf.jkt; frame is
// a client frame signed by that key (kid = thumbprint, algorithm pinned by
// the key) whose sid and sub are the token's. Errors are *Error values.
func VerifyEvidence(keys *KeySet, token string, jwk []byte, frame []byte) (*Evidence, error) {
	ev, err := verifyEvidence(keys, token, jwk, frame)
	if err != nil {
		return nil, err
	}
	return ev, nil
}

func verifyEvidence(keys *KeySet, token string, jwk []byte, frame []byte) (*Evidence, *Error) {
	claims, err := parseSessionToken(keys, token)
	if err != nil {
		return nil, err
	}
	key, err := bindKey(claims, jwk)
	if err != nil {
		return nil, err
	}
	return frameEvidence(claims, key, frame)
}

// VerifyTokenEvidence checks the first two links of spec.md §14 alone:
// token is a session token signed by a key of keys (typ, header, strict
// claims; not exp, iss or aud), and jwk is the session key it binds
// (cnf.jkt). It returns the claims and the key, named by its thumbprint,
// for VerifyFrameEvidence: an archive that holds many frames of one
// session checks its token once. Errors are *Error values.
func VerifyTokenEvidence(keys *KeySet, token string, jwk []byte) (*SessionClaims, *PublicKey, error) {
	claims, err := parseSessionToken(keys, token)
	if err != nil {
		return nil, nil, err
	}
	key, err := bindKey(claims, jwk)
	if err != nil {
		return nil, nil, err
	}
	return claims, key, nil
}

// VerifyFrameEvidence checks the third link of spec.md §14: frame is a
// client frame signed by key (as VerifyTokenEvidence returned it) whose
// sid and sub are those of claims. Errors are *Error values.
func VerifyFrameEvidence(claims *SessionClaims, key *PublicKey, frame []byte) (*Evidence, error) {
	ev, err := frameEvidence(claims, key, frame)
	if err != nil {
		return nil, err
	}
	return ev, nil
}

// VerifyPublishedEvidence checks offline a frame that the server
// application published (spec.md §10.3): a server frame signed by a key of
// keys, with strict claims, act pub, a ch and no sid. Errors are *Error
// values.
func VerifyPublishedEvidence(keys *KeySet, frame []byte) (*Evidence, error) {
	env, err := verifyServerFrame(keys, frame, DefaultMaxFrame*16)
	if err != nil {
		return nil, err
	}
	if env.Action != ActPub || env.Channel == "" || env.Session != "" {
		return nil, &Error{Code: CodeWrongSession, Message: "not a frame the server application published", Ref: env.ID}
	}
	return &Evidence{Subject: ServerSubject, FromServer: true, Message: &Message{Envelope: *env, Frame: frame}}, nil
}

func frameEvidence(claims *SessionClaims, key *PublicKey, frame []byte) (*Evidence, *Error) {
	m, err := verifyClientFrame(key, frame)
	if err != nil {
		return nil, err
	}
	if m.Session != claims.Session || m.Subject != claims.Subject {
		return nil, &Error{Code: CodeWrongSession, Message: "the frame's sid or sub is not the token's", Ref: m.ID}
	}
	return &Evidence{Subject: claims.Subject, Key: m.key, Message: &m.Message, Token: claims}, nil
}

// VerifyDeliveryEvidence checks a stored deliver or direct frame offline
// (spec.md §14, §10.3): the server's signature under a key of keys (its
// typ, header and strict claims; no freshness or session check), then the
// sender's frame inside it end to end, as OpenDelivery does — or, for a
// message the server application published, the server's signature on it.
// Errors are *Error values.
func VerifyDeliveryEvidence(keys *KeySet, delivery []byte) (*Evidence, error) {
	env, err := verifyServerFrame(keys, delivery, DefaultMaxFrame*32)
	if err != nil {
		return nil, err
	}
	d := &Message{Envelope: *env, Frame: delivery}
	f := &FrameVerifier{Keys: keys}
	sender, inner, oerr := f.OpenDelivery(d, nil)
	if oerr != nil {
		return nil, oerr
	}
	return &Evidence{Subject: sender.Subject, Key: sender.Key, FromServer: sender.Server, Message: inner, Delivery: d}, nil
}

// clientFrame is a verified client frame and the key that signed it.
type clientFrame struct {
	Message
	key *PublicKey
}

// verifyClientFrame checks a client frame's form, header, signature under
// key (kid = its thumbprint) and strict claims: steps 1–5 of spec.md §7,
// without a session.
func verifyClientFrame(key *PublicKey, frame []byte) (*clientFrame, *Error) {
	c, err := parseCompact(frame, DefaultMaxFrame*16, TypClient, "", header{})
	if err != nil {
		return nil, err
	}
	if c.hdr.kid != key.jkt {
		return nil, newErr(CodeUnknownKey, "frame kid is not the session key's thumbprint")
	}
	bound := boundKey(key)
	payload, err := verifySignature(&c, bound)
	if err != nil {
		return nil, err
	}
	env, e := decodeEnvelope(payload, true)
	if e != nil {
		return nil, wrapErr(CodeBadClaims, e, e.Error())
	}
	return &clientFrame{Message: Message{Envelope: *env, Frame: frame}, key: bound}, nil
}
