package audit

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/sigil-ws/sigil/internal/strictjson"
)

// Version is the entry format version (spec.md §21.2).
const Version = 1

// MaxEntry is the largest entry a log holds: a tlog-tiles entry bundle
// prefixes each entry with a 16-bit length (C2SP tlog-tiles).
const MaxEntry = 1<<16 - 1

// Entry kinds (spec.md §21.2).
const (
	// KindKeys records the server's public JWKS, at start and whenever it
	// changes: the keys that sign session tokens and server frames.
	KindKeys = "keys"
	// KindToken records a session token and the session key it binds
	// (cnf.jkt), at hello and at every in-band refresh.
	KindToken = "token"
	// KindFrame records an accepted client frame, byte for byte, with the
	// jti of the token of its session and the session key.
	KindFrame = "frame"
	// KindServer records a message the server application published: a
	// server-signed frame (act pub).
	KindServer = "server"
)

// Entry is one record of the audit log. Marshal gives its one encoding;
// ParseEntry accepts that encoding and nothing else. JWK and JWKS must be
// JSON objects: Marshal writes them compacted, and one with no JSON
// whitespace at all (what json.Marshal makes, and what ParseEntry
// accepts) as it is, without scanning it again.
type Entry struct {
	V     int             `json:"v"`
	Kind  string          `json:"kind"`
	Time  int64           `json:"time"` // when the server received it, Unix ms
	Node  string          `json:"node,omitempty"`
	Frame string          `json:"frame,omitempty"` // frame, server: compact JWS
	Token string          `json:"token,omitempty"` // token: compact session token
	JTI   string          `json:"jti,omitempty"`   // frame: jti of the session's token
	JKT   string          `json:"jkt,omitempty"`   // frame: thumbprint of the session key
	JWK   json.RawMessage `json:"jwk,omitempty"`   // token, frame: the session public key
	JWKS  json.RawMessage `json:"jwks,omitempty"`  // keys: {"keys":[...]}
	Pos   *uint64         `json:"pos,omitempty"`   // frame (pub), server: stream position, if known
}

// Marshal encodes e compactly, members in the order of spec.md §21.2. It
// fails if e does not fit its kind or exceeds MaxEntry.
func (e *Entry) Marshal() ([]byte, error) {
	if err := e.check(); err != nil {
		return nil, err
	}
	// By hand, on the message path: what encoding/json with HTML escaping
	// off gives for the struct, without reflection.
	b := make([]byte, 0, 160+len(e.Node)+len(e.Frame)+len(e.Token)+len(e.JTI)+len(e.JKT)+len(e.JWK)+len(e.JWKS))
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(e.V), 10)
	b = appendString(b, `,"kind":`, e.Kind)
	b = append(b, `,"time":`...)
	b = strconv.AppendInt(b, e.Time, 10)
	var err error
	for _, m := range []struct {
		name string
		s    string
	}{{`,"node":`, e.Node}, {`,"frame":`, e.Frame}, {`,"token":`, e.Token}, {`,"jti":`, e.JTI}, {`,"jkt":`, e.JKT}} {
		if m.s != "" {
			b = appendString(b, m.name, m.s)
		}
	}
	for _, m := range []struct {
		name string
		raw  json.RawMessage
	}{{`,"jwk":`, e.JWK}, {`,"jwks":`, e.JWKS}} {
		if len(m.raw) > 0 {
			if b, err = appendCompact(append(b, m.name...), m.raw); err != nil {
				return nil, err
			}
		}
	}
	if e.Pos != nil {
		b = strconv.AppendUint(append(b, `,"pos":`...), *e.Pos, 10)
	}
	b = append(b, '}')
	if len(b) > MaxEntry {
		return nil, ErrTooLarge
	}
	return b, nil
}

// appendString appends name and s as a JSON string: s as is when it has
// only printable ASCII but '"' and '\\' (JWS, UUIDs, thumbprints), else
// as encoding/json writes it with HTML escaping off.
func appendString(b []byte, name, s string) []byte {
	b = append(b, name...)
	if isPlain(s) {
		return append(append(append(b, '"'), s...), '"')
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(s) // a string always encodes
	return append(b, bytes.TrimSuffix(buf.Bytes(), []byte("\n"))...)
}

// plainByte[c] reports whether byte c is printable ASCII other than '"'
// and '\\': one that a JSON string holds as itself.
var plainByte = func() (t [256]bool) {
	for c := 0x20; c < 0x7f; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// isPlain reports whether every byte of s is plainByte. A frame's whole
// length is scanned for every entry, so eight bytes a step: a word is
// plain when none of its bytes is under 0x20, over 0x7e, '"' or '\\'
// (the exact any-byte tests of "Bit Twiddling Hacks": hasless, hasmore,
// haszero). The tail goes through the table.
func isPlain(s string) bool {
	const (
		ones  = 0x0101010101010101
		highs = 0x8080808080808080
	)
	i := 0
	for ; i+8 <= len(s); i += 8 {
		x := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		q, b := x^(ones*'"'), x^(ones*'\\')
		under := (x - ones*0x20) &^ x // hasless(x, 0x20)
		over := (x + ones*(0x7f-0x7e)) | x
		quote := (q - ones) &^ q // haszero(q)
		backslash := (b - ones) &^ b
		if (under|over|quote|backslash)&highs != 0 {
			return false
		}
	}
	for ; i < len(s); i++ {
		if !plainByte[s[i]] {
			return false
		}
	}
	return true
}

// appendCompact appends raw compacted, as encoding/json writes a
// json.RawMessage with HTML escaping off. An object with no whitespace
// byte is compact already: it is appended as it is (a JWK is in every
// frame entry, and json.Compact's scanner cost 2 µs of each).
func appendCompact(b []byte, raw json.RawMessage) ([]byte, error) {
	if len(raw) >= 2 && raw[0] == '{' && raw[len(raw)-1] == '}' && !bytes.ContainsAny(raw, " \t\r\n") {
		return append(b, raw...), nil
	}
	buf := bytes.NewBuffer(b)
	if err := json.Compact(buf, raw); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// ErrTooLarge is returned for an entry over MaxEntry bytes.
var ErrTooLarge = errors.New("audit: entry larger than 65535 bytes")

// ParseEntry decodes an entry strictly: strict JSON (no duplicate or
// case-variant members, no unknown ones), the members its kind requires
// and no others, and byte-identical to its re-encoding (Marshal), so that
// an entry has exactly one form.
func ParseEntry(data []byte) (*Entry, error) {
	var e Entry
	if err := strictjson.Unmarshal(data, &e, nil); err != nil {
		return nil, fmt.Errorf("not a strict entry: %w", err)
	}
	again, err := e.Marshal()
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(again, data) {
		return nil, errors.New("entry is not in its canonical form")
	}
	return &e, nil
}

// check: the version, and the members of the kind, present or absent.
func (e *Entry) check() error {
	if e.V != Version {
		return fmt.Errorf("entry version %d, want %d", e.V, Version)
	}
	if e.Time <= 0 {
		return errors.New("entry has no time")
	}
	has := func(s string) bool { return s != "" }
	type want struct{ frame, token, jti, jkt, jwk, jwks, pos bool }
	var w want
	switch e.Kind {
	case KindKeys:
		w = want{jwks: true}
	case KindToken:
		w = want{token: true, jwk: true}
	case KindFrame:
		w = want{frame: true, jti: true, jkt: true, jwk: true, pos: e.Pos != nil}
	case KindServer:
		w = want{frame: true, pos: e.Pos != nil}
	default:
		return fmt.Errorf("unknown entry kind %q", e.Kind)
	}
	got := want{has(e.Frame), has(e.Token), has(e.JTI), has(e.JKT), len(e.JWK) > 0, len(e.JWKS) > 0, e.Pos != nil}
	if got != w {
		return fmt.Errorf("a %s entry must have exactly the members of its kind", e.Kind)
	}
	return nil
}
