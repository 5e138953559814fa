package protocol

import (
	"bytes"
	"crypto/elliptic"
	"math/big"
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// The signature step does not go through go-jose (verifySignature says
// why); these tests hold it to go-jose's answer. A frame that passes steps
// 1–3 must verify here exactly when go-jose's ParseSignedCompact + Verify
// accepts it, with the same payload; and what verifies here always
// verifies in go-jose.

func goJoseVerify(frame []byte, key *PublicKey) ([]byte, bool) {
	jws, err := jose.ParseSignedCompact(string(frame), []jose.SignatureAlgorithm{key.alg})
	if err != nil {
		return nil, false
	}
	p, err := jws.Verify(key.key)
	return p, err == nil
}

// agreeWithGoJose fails t if verifySignature and go-jose disagree on frame
// under key; it reports whether the frame verified.
func agreeWithGoJose(t testing.TB, frame []byte, key *PublicKey) bool {
	t.Helper()
	want, wantOK := goJoseVerify(frame, key)
	c, perr := parseCompact(frame, 1<<20, TypClient, "", header{})
	if perr != nil {
		return false // steps 1–3 are Sigil's own, stricter than go-jose by design
	}
	got, err := verifySignature(&c, key)
	switch {
	case err == nil && !wantOK:
		t.Fatalf("verifySignature accepts what go-jose rejects: %q", frame)
	case err != nil && wantOK && c.hdr.alg == key.alg:
		t.Fatalf("verifySignature rejects (%v) what go-jose accepts: %q", err, frame)
	case err == nil && !bytes.Equal(got, want):
		t.Fatalf("payloads differ: %q, go-jose %q", got, want)
	}
	return err == nil
}

func sigFixtures(t testing.TB) []*PrivateKey {
	var keys []*PrivateKey
	for _, alg := range []jose.SignatureAlgorithm{EdDSA, ES256} {
		k, err := KeyFromSeed(alg, "jws-test", "")
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, k)
	}
	return keys
}

// withSig returns frame with its signature segment replaced by sig.
func withSig(frame []byte, sig []byte) []byte {
	i := bytes.LastIndexByte(frame, '.')
	return b64.AppendEncode(bytes.Clone(frame[:i+1]), sig)
}

func TestVerifySignatureMatchesGoJose(t *testing.T) {
	for _, k := range sigFixtures(t) {
		frame, err := k.signCompact(TypClient, samplePayload)
		if err != nil {
			t.Fatal(err)
		}
		if !agreeWithGoJose(t, frame, k.Public()) {
			t.Fatalf("%s: a good frame does not verify", k.Algorithm())
		}
		i := bytes.LastIndexByte(frame, '.')
		sig, _ := b64.DecodeString(string(frame[i+1:]))
		variants := [][]byte{
			withSig(frame, nil), withSig(frame, sig[:63]), withSig(frame, append(bytes.Clone(sig), 0)),
			withSig(frame, make([]byte, 64)), withSig(frame, bytes.Repeat([]byte{0xff}, 64)),
		}
		if k.Algorithm() == ES256 {
			// r = 0, r = N, and the high-S twin of a good signature, which
			// both accept (ES256 signatures are malleable; ids and seqs, not
			// signature bytes, are what replay protection keys on).
			n := elliptic.P256().Params().N
			var rs [64]byte
			n.FillBytes(rs[:32])
			copy(rs[32:], sig[32:])
			variants = append(variants, withSig(frame, rs[:]))
			clear(rs[:32])
			variants = append(variants, withSig(frame, rs[:]))
			s := new(big.Int).Sub(n, new(big.Int).SetBytes(sig[32:]))
			copy(rs[:32], sig[:32])
			s.FillBytes(rs[32:])
			high := withSig(frame, rs[:])
			if !agreeWithGoJose(t, high, k.Public()) {
				t.Fatal("the high-S twin does not verify")
			}
		}
		for j := range frame {
			f := bytes.Clone(frame)
			f[j] ^= 0x01
			variants = append(variants, f)
		}
		for _, v := range variants {
			if agreeWithGoJose(t, v, k.Public()) && !bytes.Equal(v, frame) {
				t.Fatalf("%s: a changed frame verifies: %q", k.Algorithm(), v)
			}
		}
		// The other algorithm's key: refused before any signature check.
		other := sigFixtures(t)[0]
		if other.Algorithm() == k.Algorithm() {
			other = sigFixtures(t)[1]
		}
		c, _ := parseCompact(frame, 1<<20, TypClient, "", header{})
		if _, err := verifySignature(&c, other.Public()); err == nil || err.Code != CodeBadHeader {
			t.Fatalf("alg mismatch: %v", err)
		}
	}
}

// FuzzVerifySignatureMatchesGoJose: on any input, verifySignature and
// go-jose give the same answer (agreeWithGoJose).
func FuzzVerifySignatureMatchesGoJose(f *testing.F) {
	keys := sigFixtures(f)
	for i, k := range keys {
		frame, err := k.signCompact(TypClient, samplePayload)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(frame, uint8(i))
	}
	for _, v := range seedVectors(f) {
		f.Add([]byte(v.Frame), uint8(0))
	}
	f.Fuzz(func(t *testing.T, frame []byte, which uint8) {
		agreeWithGoJose(t, frame, keys[int(which)%len(keys)].Public())
	})
}
