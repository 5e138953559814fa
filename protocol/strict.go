package protocol

import (
	"encoding/base64"
	"strconv"

	"github.com/sigil-ws/sigil/internal/strictjson"
)

// Limits that apply to every payload, before and during strict decoding.
const (
	// MaxSafeInteger is the largest integer every JSON implementation
	// represents exactly (2^53-1). ts and seq must not exceed it.
	MaxSafeInteger = 1<<53 - 1
	// MaxDepth is the deepest nesting of arrays and objects allowed in a
	// payload, counting the envelope object itself.
	MaxDepth = 32
	// maxStringClaim bounds every string claim except body and enc.
	maxStringClaim = 256
)

// rawObject is a JSON object decoded one level deep under the strict rules
// of internal/strictjson: valid UTF-8, no duplicate or escaped-duplicate
// member names, bounded depth, numbers in range.
type rawObject map[string][]byte

// decodeObject validates data strictly and returns its top-level members.
func decodeObject(data []byte) (rawObject, error) {
	obj := rawObject{}
	err := strictjson.Members(data, MaxDepth, func(name, value []byte) error {
		obj[string(name)] = value
		return nil
	})
	if err != nil {
		return nil, err
	}
	return obj, nil
}

type errString string

func (e errString) Error() string { return string(e) }

// str decodes a JSON string member.
func (o rawObject) str(name string, required bool, max int) (string, bool, error) {
	raw, ok := o[name]
	if !ok {
		if required {
			return "", false, errString("missing claim " + strconv.Quote(name))
		}
		return "", false, nil
	}
	s, err := decodeString(raw, name, max)
	if err != nil {
		return "", false, err
	}
	if required && s == "" {
		return "", false, errString("claim " + strconv.Quote(name) + " must not be empty")
	}
	return s, true, nil
}

// decodeString decodes a raw JSON string of at most max bytes. A plain
// string without escapes is taken as is; others go through strictjson.
func decodeString(raw []byte, name string, max int) (string, error) {
	var s string
	if len(raw) >= 2 && raw[0] == '"' && raw[len(raw)-1] == '"' && plainASCII(raw[1:len(raw)-1]) {
		s = string(raw[1 : len(raw)-1])
	} else {
		var err error
		if s, err = strictjson.String(raw); err != nil {
			return "", errString("claim " + strconv.Quote(name) + " must be a string")
		}
	}
	if len(s) > max {
		return "", errString("claim " + strconv.Quote(name) + " is too long")
	}
	return s, nil
}

func plainASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c >= 0x7f || c == '"' || c == '\\' {
			return false
		}
	}
	return true
}

// uint decodes a JSON integer in [min, MaxSafeInteger], written canonically:
// digits only, no sign, fraction, exponent or leading zero.
func (o rawObject) uint(name string, required bool, min uint64) (uint64, bool, error) {
	raw, ok := o[name]
	if !ok {
		if required {
			return 0, false, errString("missing claim " + strconv.Quote(name))
		}
		return 0, false, nil
	}
	n, err := parseCanonicalUint(raw)
	if err != nil || n < min {
		return 0, false, errString("claim " + strconv.Quote(name) + " must be an integer in range")
	}
	return n, true, nil
}

func parseCanonicalUint(raw []byte) (uint64, error) {
	if len(raw) == 0 || len(raw) > 16 || (raw[0] == '0' && len(raw) > 1) {
		return 0, errString("not a canonical integer")
	}
	var n uint64
	for _, c := range raw {
		if c < '0' || c > '9' {
			return 0, errString("not a canonical integer")
		}
		n = n*10 + uint64(c-'0')
	}
	if n > MaxSafeInteger {
		return 0, errString("integer out of range")
	}
	return n, nil
}

// isCanonicalUUID reports whether s is a UUID in canonical lowercase
// 8-4-4-4-12 form (RFC 9562 §4), the only form Sigil accepts for ids.
func isCanonicalUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < 36; i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// b64 is the unpadded base64url encoding JOSE uses, in strict mode so that
// only one encoding of each byte string is accepted.
var b64 = base64.RawURLEncoding.Strict()

// splitCompact splits a compact JWS into its three segments and checks
// step 2 of spec.md §7 for all of them: each is the canonical unpadded
// base64url encoding of its bytes (RFC 7515 §2: only the alphabet
// A–Z a–z 0–9 - _, no '=', a length that is not 1 modulo 4, and zero
// spare bits in the last character), and header and payload are
// non-empty. An empty signature passes here so that "alg":"none" is
// reported by the header step as bad_header. go-jose decodes payload and
// signature leniently (it ignores spare bits), so this check is what makes
// every segment have exactly one accepted spelling.
func splitCompact(frame []byte) (h, p, s []byte, ok bool) {
	// One pass: every byte is a base64url character or one of exactly two
	// dots.
	i, j := -1, -1
	for k, c := range frame {
		if b64val[c] >= 0 {
			continue
		}
		if c != '.' {
			return nil, nil, nil, false
		}
		switch {
		case i < 0:
			i = k
		case j < 0:
			j = k
		default:
			return nil, nil, nil, false
		}
	}
	if i <= 0 || j <= i+1 {
		return nil, nil, nil, false
	}
	h, p, s = frame[:i], frame[i+1:j], frame[j+1:]
	if !canonicalB64(h) || !canonicalB64(p) || !canonicalB64(s) {
		return nil, nil, nil, false
	}
	return h, p, s, true
}

// canonicalB64 reports whether seg, made of base64url characters only, is
// the canonical unpadded encoding of a byte string: its length is not 1
// modulo 4, and the bits of its last character that encode no byte are
// zero (RFC 4648 §3.5). It decodes nothing.
func canonicalB64(seg []byte) bool {
	n := len(seg)
	switch n % 4 {
	case 1:
		return false
	case 2: // one byte: 12 bits, the low 4 are spare
		return b64val[seg[n-1]]&0x0f == 0
	case 3: // two bytes: 18 bits, the low 2 are spare
		return b64val[seg[n-1]]&0x03 == 0
	}
	return true
}

// canonicalB64String is canonicalB64 for a string that may hold any bytes.
func canonicalB64String(seg string) bool {
	for i := 0; i < len(seg); i++ {
		if b64val[seg[i]] < 0 {
			return false
		}
	}
	return canonicalB64([]byte(seg))
}

// b64val maps each byte of the unpadded base64url alphabet to its 6-bit
// value, and every other byte to -1.
var b64val = func() (t [256]int8) {
	for i := range t {
		t[i] = -1
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for v := 0; v < len(alphabet); v++ {
		t[alphabet[v]] = int8(v)
	}
	return t
}()

// decodeSegment decodes unpadded base64url strictly (zero spare bits). The
// standard library still skips CR and LF, so callers that take the
// segment from a string not already checked by splitCompact check it with
// canonicalB64String too.
func decodeSegment(seg []byte) ([]byte, error) {
	out := make([]byte, b64.DecodedLen(len(seg)))
	n, err := b64.Decode(out, seg)
	return out[:n], err
}
