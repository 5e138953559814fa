// Package strictjson validates JSON texts under Sigil's strict rules in one
// pass, without allocating on the common path:
//
//   - the grammar of RFC 8259, with nothing but white space around the value;
//   - valid UTF-8 everywhere, and no unpaired surrogate escapes;
//   - no duplicate member names in any object, compared after unescaping
//     (so "a" and "\u0061" are duplicates), and case-sensitive;
//   - numbers that a double can hold (no overflow to infinity);
//   - nesting no deeper than a given limit.
//
// It does not build values. Callers get the raw bytes of each top-level
// member and decode the few they need.
package strictjson

import (
	"bytes"
	"errors"
	"strconv"
	"unicode/utf16"
	"unicode/utf8"
)

// Error describes why a text is not strict JSON.
type Error struct {
	Offset int
	Msg    string
}

func (e *Error) Error() string { return "json: " + e.Msg + " at offset " + strconv.Itoa(e.Offset) }

// ErrNotObject is returned by Members when the text is not an object.
var ErrNotObject = errors.New("json: not an object")

// linearKeys is the object size up to which duplicates are found by a
// linear scan; larger objects use a set, so checking stays O(n).
const linearKeys = 16

type scanner struct {
	data     []byte
	pos      int
	maxDepth int
	keys     [][]byte // stack of member names of open objects (for duplicate checks)
}

func (s *scanner) fail(msg string) error { return &Error{Offset: s.pos, Msg: msg} }

func (s *scanner) ws() {
	for s.pos < len(s.data) {
		switch s.data[s.pos] {
		case ' ', '\t', '\n', '\r':
			s.pos++
		default:
			return
		}
	}
}

// Valid checks that data is exactly one strict JSON value.
func Valid(data []byte, maxDepth int) error {
	s := &scanner{data: data, maxDepth: maxDepth}
	s.ws()
	if err := s.value(0); err != nil {
		return err
	}
	s.ws()
	if s.pos != len(data) {
		return s.fail("trailing data")
	}
	return nil
}

// Members checks that data is exactly one strict JSON object and calls fn
// for each of its members in order, with the member name (unescaped; it
// aliases data when the name had no escapes) and the raw value bytes.
func Members(data []byte, maxDepth int, fn func(name, value []byte) error) error {
	var names [linearKeys][]byte
	s := &scanner{data: data, maxDepth: maxDepth, keys: names[:0]}
	s.ws()
	if s.pos >= len(data) || data[s.pos] != '{' {
		return ErrNotObject
	}
	if err := s.object(1, fn); err != nil {
		return err
	}
	s.ws()
	if s.pos != len(data) {
		return s.fail("trailing data")
	}
	return nil
}

func (s *scanner) value(depth int) error {
	if s.pos >= len(s.data) {
		return s.fail("unexpected end")
	}
	switch c := s.data[s.pos]; {
	case c == '{':
		return s.object(depth+1, nil)
	case c == '[':
		return s.array(depth + 1)
	case c == '"':
		_, err := s.str(false)
		return err
	case c == '-' || (c >= '0' && c <= '9'):
		return s.number()
	case c == 't':
		return s.lit("true")
	case c == 'f':
		return s.lit("false")
	case c == 'n':
		return s.lit("null")
	}
	return s.fail("unexpected character")
}

func (s *scanner) lit(w string) error {
	if !bytes.HasPrefix(s.data[s.pos:], []byte(w)) {
		return s.fail("invalid literal")
	}
	s.pos += len(w)
	return nil
}

func (s *scanner) number() error {
	d := s.data
	start := s.pos
	if err := s.numberGrammar(); err != nil {
		return err
	}
	// Out of range: a number no IEEE 754 double can hold is rejected, since
	// implementations would disagree on its value.
	if lit := d[start:s.pos]; len(lit) > 15 || bytes.ContainsAny(lit, ".eE") {
		if _, err := strconv.ParseFloat(string(lit), 64); err != nil {
			return s.fail("number out of range")
		}
	}
	return nil
}

func (s *scanner) numberGrammar() error {
	d := s.data
	if d[s.pos] == '-' {
		s.pos++
	}
	if s.pos >= len(d) {
		return s.fail("invalid number")
	}
	switch {
	case d[s.pos] == '0':
		s.pos++
	case d[s.pos] >= '1' && d[s.pos] <= '9':
		for s.pos < len(d) && d[s.pos] >= '0' && d[s.pos] <= '9' {
			s.pos++
		}
	default:
		return s.fail("invalid number")
	}
	if s.pos < len(d) && d[s.pos] == '.' {
		s.pos++
		start := s.pos
		for s.pos < len(d) && d[s.pos] >= '0' && d[s.pos] <= '9' {
			s.pos++
		}
		if s.pos == start {
			return s.fail("invalid number")
		}
	}
	if s.pos < len(d) && (d[s.pos] == 'e' || d[s.pos] == 'E') {
		s.pos++
		if s.pos < len(d) && (d[s.pos] == '+' || d[s.pos] == '-') {
			s.pos++
		}
		start := s.pos
		for s.pos < len(d) && d[s.pos] >= '0' && d[s.pos] <= '9' {
			s.pos++
		}
		if s.pos == start {
			return s.fail("invalid number")
		}
	}
	return nil
}

// str scans a string starting at the opening quote. If want is true it
// returns the unescaped contents (aliasing data when there are no escapes).
func (s *scanner) str(want bool) ([]byte, error) {
	d := s.data
	s.pos++ // opening quote
	start := s.pos
	escaped := false
	for {
		if s.pos >= len(d) {
			return nil, s.fail("unterminated string")
		}
		c := d[s.pos]
		switch {
		case c == '"':
			raw := d[start:s.pos]
			s.pos++
			if !want {
				return nil, nil
			}
			if !escaped {
				return raw, nil
			}
			return unescape(raw), nil
		case c == '\\':
			escaped = true
			if err := s.escape(); err != nil {
				return nil, err
			}
		case c < 0x20:
			return nil, s.fail("control character in string")
		case c < utf8.RuneSelf:
			s.pos++
		default:
			r, size := utf8.DecodeRune(d[s.pos:])
			if r == utf8.RuneError && size <= 1 {
				return nil, s.fail("invalid UTF-8")
			}
			s.pos += size
		}
	}
}

func (s *scanner) escape() error {
	d := s.data
	if s.pos+1 >= len(d) {
		return s.fail("unterminated escape")
	}
	switch d[s.pos+1] {
	case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
		s.pos += 2
		return nil
	case 'u':
		r, ok := hex4(d, s.pos+2)
		if !ok {
			return s.fail("invalid \\u escape")
		}
		s.pos += 6
		if utf16.IsSurrogate(r) {
			if r >= 0xdc00 || s.pos+1 >= len(d) || d[s.pos] != '\\' || d[s.pos+1] != 'u' {
				return s.fail("unpaired surrogate")
			}
			r2, ok := hex4(d, s.pos+2)
			if !ok || r2 < 0xdc00 || r2 > 0xdfff {
				return s.fail("unpaired surrogate")
			}
			s.pos += 6
		}
		return nil
	}
	return s.fail("invalid escape")
}

func hex4(d []byte, at int) (rune, bool) {
	if at+4 > len(d) {
		return 0, false
	}
	var r rune
	for _, c := range d[at : at+4] {
		r <<= 4
		switch {
		case c >= '0' && c <= '9':
			r |= rune(c - '0')
		case c >= 'a' && c <= 'f':
			r |= rune(c - 'a' + 10)
		case c >= 'A' && c <= 'F':
			r |= rune(c - 'A' + 10)
		default:
			return 0, false
		}
	}
	return r, true
}

// unescape decodes a string body already validated by str.
func unescape(raw []byte) []byte {
	out := make([]byte, 0, len(raw))
	for i := 0; i < len(raw); {
		c := raw[i]
		if c != '\\' {
			out = append(out, c)
			i++
			continue
		}
		switch raw[i+1] {
		case 'b':
			out = append(out, '\b')
		case 'f':
			out = append(out, '\f')
		case 'n':
			out = append(out, '\n')
		case 'r':
			out = append(out, '\r')
		case 't':
			out = append(out, '\t')
		case 'u':
			r, _ := hex4(raw, i+2)
			if utf16.IsSurrogate(r) {
				r2, _ := hex4(raw, i+8)
				r = utf16.DecodeRune(r, r2)
				i += 6
			}
			out = utf8.AppendRune(out, r)
			i += 6
			continue
		default: // " \ /
			out = append(out, raw[i+1])
		}
		i += 2
	}
	return out
}

func (s *scanner) array(depth int) error {
	if depth > s.maxDepth {
		return s.fail("nested too deeply")
	}
	s.pos++ // [
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == ']' {
		s.pos++
		return nil
	}
	for {
		s.ws()
		if err := s.value(depth); err != nil {
			return err
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.fail("unterminated array")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case ']':
			s.pos++
			return nil
		default:
			return s.fail("expected , or ]")
		}
	}
}

func (s *scanner) object(depth int, fn func(name, value []byte) error) error {
	if depth > s.maxDepth {
		return s.fail("nested too deeply")
	}
	s.pos++ // {
	base := len(s.keys)
	var seen map[string]struct{}
	defer func() { s.keys = s.keys[:base] }()
	s.ws()
	if s.pos < len(s.data) && s.data[s.pos] == '}' {
		s.pos++
		return nil
	}
	for {
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != '"' {
			return s.fail("expected member name")
		}
		name, err := s.str(true)
		if err != nil {
			return err
		}
		if seen != nil {
			if _, dup := seen[string(name)]; dup {
				return s.fail("duplicate member name " + strconv.Quote(string(name)))
			}
			seen[string(name)] = struct{}{}
		} else {
			for _, k := range s.keys[base:] {
				if bytes.Equal(k, name) {
					return s.fail("duplicate member name " + strconv.Quote(string(name)))
				}
			}
			s.keys = append(s.keys, name)
			if len(s.keys)-base > linearKeys { // large object: switch to a set
				seen = make(map[string]struct{}, 2*linearKeys)
				for _, k := range s.keys[base:] {
					seen[string(k)] = struct{}{}
				}
			}
		}
		s.ws()
		if s.pos >= len(s.data) || s.data[s.pos] != ':' {
			return s.fail("expected :")
		}
		s.pos++
		s.ws()
		start := s.pos
		if err := s.value(depth); err != nil {
			return err
		}
		if fn != nil {
			if err := fn(name, s.data[start:s.pos]); err != nil {
				return err
			}
		}
		s.ws()
		if s.pos >= len(s.data) {
			return s.fail("unterminated object")
		}
		switch s.data[s.pos] {
		case ',':
			s.pos++
		case '}':
			s.pos++
			return nil
		default:
			return s.fail("expected , or }")
		}
	}
}

// String decodes a raw JSON string value (as passed to a Members callback).
func String(raw []byte) (string, error) {
	if len(raw) < 2 || raw[0] != '"' {
		return "", errors.New("json: not a string")
	}
	s := &scanner{data: raw}
	b, err := s.str(true)
	if err != nil {
		return "", err
	}
	if s.pos != len(raw) {
		return "", errors.New("json: not a string")
	}
	return string(b), nil
}
