package protocol

import (
	"bytes"
	"crypto/ecdsa"
	"encoding/json"
	"hash/maphash"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// Fuzz targets for the parsers that run only behind a signature or a
// decryption, which the black-box targets of fuzz_test.go rarely reach.
// This package's own tests cannot import internal/vectors (it imports
// protocol), so the seeds are read from testdata/vectors directly.

type seedVector struct {
	Kind  string `json:"kind"`
	Frame string `json:"frame"`
}

func seedVectors(tb testing.TB) []seedVector {
	tb.Helper()
	names, err := filepath.Glob(filepath.Join("..", "testdata", "vectors", "cases", "*.json"))
	if err != nil || len(names) == 0 {
		tb.Fatalf("no vectors: %v", err)
	}
	var out []seedVector
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			tb.Fatal(err)
		}
		var v seedVector
		if err := json.Unmarshal(b, &v); err != nil {
			tb.Fatal(err)
		}
		out = append(out, v)
	}
	return out
}

// payloadSeeds returns the decoded payloads of the vectors' JWS frames of
// the given kinds.
func payloadSeeds(tb testing.TB, kinds ...string) [][]byte {
	var out [][]byte
	for _, v := range seedVectors(tb) {
		for _, k := range kinds {
			if v.Kind != k {
				continue
			}
			if parts := strings.Split(v.Frame, "."); len(parts) == 3 {
				if p, err := b64.DecodeString(parts[1]); err == nil {
					out = append(out, p)
				}
			}
		}
	}
	return out
}

// FuzzEnvelopeRoundTrip: whatever decodes strictly must re-encode to bytes
// that decode to the same envelope and re-encode identically (the encoding
// is stable after one round).
func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add(samplePayload, true)
	f.Add([]byte(`{"id":"0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11","ts":1,"act":"deliver","ch":"a.b","body":{"frame":"x"}}`), false)
	f.Add([]byte(`{"id":"0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11","ts":1,"act":"pong","sid":"6a2f41a1-7c1b-4c8e-8d2a-1b2c3d4e5f60","body":"caf\u00e9"}`), false)
	for _, p := range payloadSeeds(f, "hello", "client") {
		f.Add(p, true)
	}
	for _, p := range payloadSeeds(f, "server", "delivery") {
		f.Add(p, false)
	}
	f.Fuzz(func(t *testing.T, data []byte, client bool) {
		e1, err := decodeEnvelope(data, client)
		if err != nil {
			return
		}
		b1, err := e1.Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		e2, err := decodeEnvelope(b1, client)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v\n%s", err, b1)
		}
		b2, _ := e2.Marshal()
		if !bytes.Equal(b1, b2) {
			t.Fatalf("unstable encoding:\n%s\n%s", b1, b2)
		}
		e1.Body, e2.Body = nil, nil
		if !reflect.DeepEqual(e1, e2) {
			t.Fatalf("claims changed: %+v != %+v", e1, e2)
		}
	})
}

// FuzzDecodeSessionClaims: accepted claims re-encode to claims that decode
// to the same value.
func FuzzDecodeSessionClaims(f *testing.F) {
	for _, p := range payloadSeeds(f, "token") {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := decodeSessionClaims(data)
		if err != nil {
			return
		}
		if !isCanonicalUUID(c.ID) || !isCanonicalUUID(c.Session) || c.Confirm.JKT == "" || c.Roles == nil {
			t.Fatalf("accepted claims break §4.1: %+v", c)
		}
		b, err := json.Marshal(c)
		if err != nil {
			t.Fatal(err)
		}
		c2, err := decodeSessionClaims(b)
		if err != nil || !reflect.DeepEqual(c, c2) {
			t.Fatalf("round trip: %v\n%+v\n%+v", err, c, c2)
		}
	})
}

// wrapSeeds returns the protected headers and, where alice's agreement key
// opens them, the plaintexts of the wrapped_key vectors.
func wrapSeeds(tb testing.TB) (headers, plaintexts [][]byte) {
	kb, err := os.ReadFile(filepath.Join("..", "testdata", "vectors", "keys.json"))
	if err != nil {
		tb.Fatal(err)
	}
	var keys struct {
		Agreement map[string]json.RawMessage `json:"agreement_keys"`
	}
	if err := json.Unmarshal(kb, &keys); err != nil {
		tb.Fatal(err)
	}
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(keys.Agreement["alice"]); err != nil {
		tb.Fatal(err)
	}
	priv := jwk.Key.(*ecdsa.PrivateKey)
	for _, v := range seedVectors(tb) {
		if v.Kind != "wrapped_key" {
			continue
		}
		if h, err := b64.DecodeString(strings.Split(v.Frame, ".")[0]); err == nil {
			headers = append(headers, h)
		}
		obj, err := jose.ParseEncryptedCompact(v.Frame, []jose.KeyAlgorithm{jose.ECDH_ES_A256KW}, []jose.ContentEncryption{jose.A256GCM})
		if err != nil {
			continue
		}
		if p, err := obj.Decrypt(priv); err == nil {
			plaintexts = append(plaintexts, p)
		}
	}
	if len(headers) == 0 || len(plaintexts) == 0 {
		tb.Fatal("no wrapped_key vectors")
	}
	return headers, plaintexts
}

// FuzzCheckWrapHeader: an accepted header has exactly the members of
// spec.md §11.3 and go-jose parses it.
func FuzzCheckWrapHeader(f *testing.F) {
	headers, _ := wrapSeeds(f)
	for _, h := range headers {
		f.Add(h)
	}
	f.Fuzz(func(t *testing.T, hdr []byte) {
		seg := b64.EncodeToString(hdr)
		if checkWrapHeader(seg) != nil {
			return
		}
		obj, err := decodeObject(hdr)
		if err != nil {
			t.Fatal(err)
		}
		for name := range obj {
			if name != "alg" && name != "enc" && name != "epk" && name != "apu" && name != "apv" {
				t.Fatalf("accepted member %q", name)
			}
		}
		if _, err := ParseAgreementJWK(obj["epk"]); err != nil {
			t.Fatalf("accepted an epk that is not an agreement key: %v", err)
		}
	})
}

// FuzzDecodeWrappedKey: an accepted plaintext is a 32-byte key with a kid
// and a valid scope, and wrapping it again gives the same plaintext.
func FuzzDecodeWrappedKey(f *testing.F) {
	_, plaintexts := wrapSeeds(f)
	for _, p := range plaintexts {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, plain []byte) {
		k, err := decodeWrappedKey(plain)
		if err != nil {
			return
		}
		if len(k.Key) != ContentKeySize || k.ID == "" || !validScope(k.Scope) {
			t.Fatalf("accepted %+v", k)
		}
		b, err := json.Marshal(wrappedKey{Kty: "oct", Kid: k.ID, K: b64.EncodeToString(k.Key), Alg: "A256GCM", Scope: k.Scope})
		if err != nil {
			t.Fatal(err)
		}
		k2, err := decodeWrappedKey(b)
		if err != nil || !reflect.DeepEqual(k, k2) {
			t.Fatalf("round trip: %v %+v %+v", err, k, k2)
		}
	})
}

// FuzzAppendEnvelope: appendEnvelope writes what encoding/json's Marshal
// writes, byte for byte, for any envelope (the signed payload must not
// change with the encoder), and fails exactly when Marshal fails.
func FuzzAppendEnvelope(f *testing.F) {
	f.Add("0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11", int64(1767225600000), uint64(2), "sid", "alice", "pub", "rooms.lobby", "", "c1", []byte(`{"text":"hello"}`), "")
	f.Add("x", int64(-1), uint64(0), "", "<b>&", "pub", "", "bob\u2028", "", []byte(" { \"a\" : [1, 2, \"<&>\u2029\"] } "), "enc")
	f.Add("\x00\"\\\xff", int64(0), uint64(1<<63), "", "", "", "", "", "", []byte(`nul`), "")
	f.Add("", int64(0), uint64(0), "", "", "", "", "", "", []byte(`null`), "")
	for _, p := range payloadSeeds(f, "client", "server") {
		var e Envelope
		if json.Unmarshal(p, &e) == nil {
			f.Add(e.ID, e.TS, e.Seq, e.Session, e.Subject, e.Action, e.Channel, e.To, e.Corr, []byte(e.Body), e.Enc)
		}
	}
	f.Fuzz(func(t *testing.T, id string, ts int64, seq uint64, sid, sub, act, ch, to, cid string, body []byte, enc string) {
		e := &Envelope{ID: id, TS: ts, Seq: seq, Session: sid, Subject: sub, Action: act, Channel: ch, To: to, Corr: cid, Body: body, Enc: enc}
		want, werr := json.Marshal(e)
		got, gerr := appendEnvelope(nil, e, false)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: %v, encoding/json %v", gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("differs from encoding/json:\n%s\n%s", got, want)
		}
		if werr == nil && len(body) > 0 {
			// A body that is encoding/json's output is copied as is.
			e.Body, _ = json.Marshal(json.RawMessage(body))
			got, _ := appendEnvelope(nil, e, true)
			if !bytes.Equal(got, want) {
				t.Fatalf("compact body differs:\n%s\n%s", got, want)
			}
		}
	})
}

// FuzzAppendDeliverBody: a deliver body is encoded as encoding/json
// encodes it, whatever its strings and raw jwk hold.
func FuzzAppendDeliverBody(f *testing.F) {
	f.Add("eyJhbGciOiJFZERTQSJ9.eyJpZCI6IngifQ.c2ln", []byte(`{"kty":"OKP","crv":"Ed25519","x":"abc"}`), "alice", "", "", uint64(0), false, uint64(0))
	f.Add("a<b>&\u2028\"", []byte(` { "k" : "<&>\u2029" } `), "b\u00e9\x00", "enc", "e1", uint64(7), true, uint64(0))
	f.Add("", []byte(nil), "", "", "", uint64(1<<63), true, uint64(1<<64-1))
	f.Add("x", []byte(`nul`), "y", "", "", uint64(0), false, uint64(0))
	f.Fuzz(func(t *testing.T, frame string, jwk []byte, sub, enc, epoch string, offset uint64, logged bool, logIndex uint64) {
		d := DeliverBody{Frame: frame, JWK: jwk, Sub: sub, Enc: enc, Epoch: epoch, Offset: offset}
		if logged {
			d.LogIndex = &logIndex
		}
		want, werr := json.Marshal(d)
		got, gerr := appendDeliverBody(nil, &d)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("errors differ: %v, encoding/json %v", gerr, werr)
		}
		if werr == nil && !bytes.Equal(got, want) {
			t.Fatalf("differs from encoding/json:\n%s\n%s", got, want)
		}
	})
}

// TestAppendCompactJWKRemembers: a JWK already in Marshal's form is
// checked once, then found by content; one that is not (whitespace, an
// escape, invalid) is never remembered, and every answer is Marshal's.
func TestAppendCompactJWKRemembers(t *testing.T) {
	slotOf := func(jwk []byte) *atomic.Pointer[string] {
		return &jwkSeen[maphash.Bytes(jwkSeed, jwk)%uint64(len(jwkSeen))]
	}
	for _, tc := range []struct {
		jwk      string
		remember bool
	}{
		{`{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`, true},
		{`{"crv":"Ed25519", "kty":"OKP","x":"c2Vjb25k"}`, false},
		{`{"kid":"a<b","kty":"OKP"}`, false},
		{`{"kty":"OKP"`, false},
	} {
		jwk := []byte(tc.jwk)
		slotOf(jwk).Store(nil)
		for range 2 {
			want, werr := json.Marshal(json.RawMessage(jwk))
			got, gerr := appendCompactJWK([]byte("x"), jwk)
			if (werr == nil) != (gerr == nil) || werr == nil && !bytes.Equal(got[1:], want) {
				t.Fatalf("%s: got %s %v, encoding/json %s %v", jwk, got, gerr, want, werr)
			}
		}
		p := slotOf(jwk).Load()
		if remembered := p != nil && *p == tc.jwk; remembered != tc.remember {
			t.Fatalf("%s: remembered %v, want %v", jwk, remembered, tc.remember)
		}
	}
}
