package protocol

import (
	"testing"

	jose "github.com/go-jose/go-jose/v4"
)

// SignCompact reuses the header segment go-jose produced once; the result
// must be byte for byte what go-jose's own CompactSerialize gives.
func TestSignCompactMatchesGoJose(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{EdDSA, ES256} {
		k, err := KeyFromSeed(alg, "sign-compact", "")
		if err != nil {
			t.Fatal(err)
		}
		payload := []byte(`{"id":"x","body":"` + string(make([]byte, 0)) + `ü"}`)
		got, err := k.SignCompact(TypClient, payload)
		if err != nil {
			t.Fatal(err)
		}
		s, _ := k.signer(TypClient)
		jws, err := jose.ParseSignedCompact(got, []jose.SignatureAlgorithm{alg})
		if err != nil {
			t.Fatal(err)
		}
		out, err := jws.Verify(k.Public().Key())
		if err != nil || string(out) != string(payload) {
			t.Fatalf("%s: does not verify: %v", alg, err)
		}
		want, err := jws.CompactSerialize()
		if err != nil || want != got {
			t.Fatalf("%s: SignCompact differs from go-jose's serialization:\n%s\n%s", alg, got, want)
		}
		if got[:len(s.header)] != s.header {
			t.Fatal("header segment changed")
		}
		if alg == EdDSA {
			// Ed25519 is deterministic: go-jose's own signer must give
			// the same bytes as the one ed25519.Sign of signCompact.
			obj, err := s.signer.Sign(payload)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := obj.CompactSerialize()
			if err != nil || theirs != got {
				t.Fatalf("go-jose signs differently:\n%s\n%s", got, theirs)
			}
		}
	}
}
