package protocol

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/sha256"
	"math/big"

	jose "github.com/go-jose/go-jose/v4"
)

// header is a checked JWS protected header: exactly alg, kid and typ.
type header struct {
	alg jose.SignatureAlgorithm
	kid string
	typ string
}

// parseHeader decodes and checks a protected header segment (spec.md §7,
// steps 2–3). It does not check typ against an expectation.
func parseHeader(seg []byte) (header, *Error) {
	raw, err := decodeSegment(seg)
	if err != nil {
		return header{}, wrapErr(CodeMalformed, err, "protected header is not base64url")
	}
	obj, err := decodeObject(raw)
	if err != nil {
		return header{}, wrapErr(CodeMalformed, err, "protected header is not a strict JSON object")
	}
	var h header
	for name := range obj {
		switch name {
		case "alg", "kid", "typ":
		default:
			return header{}, newErr(CodeBadHeader, "header member %s is not allowed", quote(name))
		}
	}
	var alg string
	var e error
	if alg, _, e = obj.str("alg", true, 16); e != nil {
		return header{}, wrapErr(CodeBadHeader, e, e.Error())
	}
	if h.kid, _, e = obj.str("kid", true, 128); e != nil {
		return header{}, wrapErr(CodeBadHeader, e, e.Error())
	}
	if h.typ, _, e = obj.str("typ", true, 64); e != nil {
		return header{}, wrapErr(CodeBadHeader, e, e.Error())
	}
	h.alg = jose.SignatureAlgorithm(alg)
	if h.alg != EdDSA && h.alg != ES256 {
		return header{}, newErr(CodeBadHeader, "alg %s is not allowed", quote(alg))
	}
	return h, nil
}

// compact is a JWS in compact serialization, split once and checked up to
// step 3 of spec.md §7. Its segments are slices of the frame as received:
// nothing is decoded but the header, and the payload is decoded only once
// the signature over input has verified (verifySignature).
type compact struct {
	hdr     header
	hseg    []byte // the protected header segment
	input   []byte // the JWS signing input (RFC 7515 §5.2): header '.' payload, as sent
	payload []byte // the payload segment, canonical base64url
	sig     []byte // the signature segment, canonical base64url
}

// parseCompact runs steps 1–3: size, compact form (all three segments
// canonical base64url), header allow-list and typ. If the header segment
// is byte for byte known, whose checked form is knownHdr, it is not decoded
// again: a session's header never changes (Verifier.Verify).
func parseCompact(frame []byte, maxSize int, typ string, known string, knownHdr header) (compact, *Error) {
	if len(frame) > maxSize {
		return compact{}, newErr(CodeTooLarge, "frame is %d bytes; the limit is %d", len(frame), maxSize)
	}
	h, p, s, ok := splitCompact(frame)
	if !ok {
		return compact{}, newErr(CodeMalformed, "not a JWS in compact serialization")
	}
	c := compact{hseg: h, input: frame[:len(h)+1+len(p)], payload: p, sig: s}
	if known != "" && string(h) == known {
		c.hdr = knownHdr
	} else {
		var perr *Error
		if c.hdr, perr = parseHeader(h); perr != nil {
			return compact{}, perr
		}
	}
	if c.hdr.typ != typ {
		return compact{}, newErr(CodeBadTyp, "typ is %s; expected %q", quote(c.hdr.typ), typ)
	}
	return c, nil
}

// checkForm runs steps 1–3 and returns the checked header.
func checkForm(frame []byte, maxSize int, typ string) (header, *Error) {
	c, err := parseCompact(frame, maxSize, typ, "", header{})
	return c.hdr, err
}

// sigSize is the size of every signature Sigil accepts: Ed25519 (RFC
// 8037) and ES256 as R || S (RFC 7518 §3.4) are both 64 bytes.
const sigSize = 64

// verifySignature runs step 4 with the algorithm pinned by key, over the
// signing input exactly as received, and returns the decoded payload.
//
// The JWS is not handed to go-jose here: go-jose v4 has no call that
// verifies a JWS from parts already split and checked, and its
// ParseSignedCompact + Verify decodes every segment again, parses the
// header twice and re-encodes header and payload to rebuild the signing
// input (1.35× a raw ed25519.Verify, 88 allocations; even a cached parsed
// object through DetachedVerify is 1.14×). The check is what go-jose runs
// for the two algorithms (ed25519.Verify; ecdsa.Verify of SHA-256 with R
// and S as 32-byte big-endian halves), on the input go-jose would rebuild.
// TestVerifySignatureMatchesGoJose and FuzzVerifySignatureMatchesGoJose
// hold the two to the same answer on every frame.
func verifySignature(c *compact, key *PublicKey) ([]byte, *Error) {
	if c.hdr.alg != key.alg {
		return nil, newErr(CodeBadHeader, "alg %s does not match the key's algorithm %s", c.hdr.alg, key.alg)
	}
	var sig [sigSize]byte
	if b64.DecodedLen(len(c.sig)) != sigSize {
		return nil, newErr(CodeBadSignature, "signature does not verify: it is not %d bytes", sigSize)
	}
	if _, err := b64.Decode(sig[:], c.sig); err != nil {
		return nil, wrapErr(CodeMalformed, err, "signature is not base64url")
	}
	ok := false
	switch k := key.key.(type) {
	case ed25519.PublicKey:
		ok = key.alg == EdDSA && ed25519.Verify(k, c.input, sig[:])
	case *ecdsa.PublicKey:
		if key.alg == ES256 {
			h := sha256.Sum256(c.input)
			r, s := new(big.Int).SetBytes(sig[:32]), new(big.Int).SetBytes(sig[32:])
			ok = ecdsa.Verify(k, h[:], r, s)
		}
	}
	if !ok {
		return nil, newErr(CodeBadSignature, "signature does not verify")
	}
	payload, err := decodeSegment(c.payload)
	if err != nil {
		return nil, wrapErr(CodeMalformed, err, "payload is not base64url")
	}
	return payload, nil
}

// unverifiedPayload returns the payload segment decoded, before any
// signature check: the key of a hello or of a proof is resolved from it
// (spec.md §8.2, §13.6).
func unverifiedPayload(frame []byte) ([]byte, *Error) {
	_, p, _, ok := splitCompact(frame)
	if !ok {
		return nil, newErr(CodeMalformed, "not a JWS in compact serialization")
	}
	raw, err := decodeSegment(p)
	if err != nil {
		return nil, wrapErr(CodeMalformed, err, "payload is not base64url")
	}
	return raw, nil
}

// UnsafeClaims returns the decoded payload of a compact JWS without any
// verification. Use it only on frames that have already been verified, or
// for display and debugging.
func UnsafeClaims(frame []byte) ([]byte, error) {
	p, err := unverifiedPayload(frame)
	if err != nil {
		return nil, err
	}
	return p, nil
}
