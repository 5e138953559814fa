package protocol

import (
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

// checkForm runs steps 1–3: size, compact form, header allow-list and typ.
func checkForm(frame []byte, maxSize int, typ string) (header, *Error) {
	if len(frame) > maxSize {
		return header{}, newErr(CodeTooLarge, "frame is %d bytes; the limit is %d", len(frame), maxSize)
	}
	h, _, _, ok := splitCompact(frame)
	if !ok {
		return header{}, newErr(CodeMalformed, "not a JWS in compact serialization")
	}
	hdr, perr := parseHeader(h)
	if perr != nil {
		return header{}, perr
	}
	if hdr.typ != typ {
		return header{}, newErr(CodeBadTyp, "typ is %s; expected %q", quote(hdr.typ), typ)
	}
	return hdr, nil
}

// verifySignature runs step 4 with the algorithm pinned by key.
func verifySignature(frame []byte, hdr header, key *PublicKey) ([]byte, *Error) {
	if hdr.alg != key.alg {
		return nil, newErr(CodeBadHeader, "alg %s does not match the key's algorithm %s", hdr.alg, key.alg)
	}
	jws, err := jose.ParseSignedCompact(string(frame), []jose.SignatureAlgorithm{key.alg})
	if err != nil {
		return nil, wrapErr(CodeMalformed, err, "JWS does not parse")
	}
	payload, err := jws.Verify(key.key)
	if err != nil {
		return nil, wrapErr(CodeBadSignature, err, "signature does not verify")
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
