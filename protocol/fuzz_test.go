package protocol_test

import (
	"context"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/vectors"
	"github.com/sigil-ws/sigil/protocol"
)

// Fuzz targets for every parser. Each is seeded with the frames of the
// shared vectors of its kind, and must never panic; whatever it accepts
// must also pass the checks named in each target.

func loadSeeds(f *testing.F, kinds ...string) *vectors.Set {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range set.Vectors {
		for _, k := range kinds {
			if v.Kind == k {
				f.Add([]byte(v.Frame))
			}
		}
	}
	return set
}

// fuzzSession is the established session of the "client" vectors.
func fuzzSession(f *testing.F, set *vectors.Set) (*protocol.Session, time.Time) {
	for _, v := range set.Vectors {
		if v.Kind == "client" && v.Expect.Result == "ok" {
			key, err := protocol.ParsePublicJWK(v.Session.JWK)
			if err != nil {
				f.Fatal(err)
			}
			return &protocol.Session{ID: v.Session.SID, Subject: v.Session.Sub, Roles: v.Session.Roles, Key: key,
				TokenID: v.Session.JTI, IssuedAt: time.Unix(v.Session.IAT, 0), Expiry: time.Unix(v.Session.EXP, 0)}, time.UnixMilli(v.Now)
		}
	}
	f.Fatal("no client vector")
	return nil, time.Time{}
}

func FuzzVerify(f *testing.F) {
	set := loadSeeds(f, "client")
	sess, now := fuzzSession(f, set)
	clock := func() time.Time { return now }
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := protocol.NewVerifier(protocol.VerifierConfig{Now: clock, Policy: set.Policy})
		s := *sess
		m, err := v.Verify(context.Background(), frame, &s)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		// Accepted: the claims must be exactly what the signed payload says,
		// and a second delivery must be a replay.
		raw, err := protocol.UnsafeClaims(frame)
		if err != nil || m.Session != sess.ID {
			t.Fatalf("accepted frame: %v %+v", err, m)
		}
		if _, err := v.Verify(context.Background(), frame, &s); protocol.CodeOf(err) != protocol.CodeReplayID {
			t.Fatalf("second verify: %v", err)
		}
		_ = raw
	})
}

func FuzzVerifyHello(f *testing.F) {
	set := loadSeeds(f, "hello")
	now := time.UnixMilli(vectors.NowMS)
	clock := func() time.Time { return now }
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := protocol.NewVerifier(protocol.VerifierConfig{
			Tokens: &protocol.TokenVerifier{Keys: set.JWKS, Issuer: vectors.Issuer, Audience: vectors.Audience, Now: clock},
			Now:    clock, Policy: set.Policy,
		})
		s, _, err := v.VerifyHello(context.Background(), frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if s.Key.Thumbprint() == "" || s.Subject == "" {
			t.Fatalf("accepted hello with an empty session: %+v", s)
		}
	})
}

func FuzzFrameVerifier(f *testing.F) {
	set := loadSeeds(f, "server", "delivery")
	var cs *vectors.ClientState
	for _, v := range set.Vectors {
		if v.Kind == "delivery" {
			cs = v.Client
			break
		}
	}
	now := time.UnixMilli(vectors.NowMS)
	f.Fuzz(func(t *testing.T, frame []byte) {
		fv := &protocol.FrameVerifier{Keys: set.JWKS, Session: cs.SID, Subject: cs.Sub, Now: func() time.Time { return now }}
		m, err := fv.Verify(frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if m.Action == protocol.ActDeliver || m.Action == protocol.ActDirect {
			if _, _, err := protocol.OpenDelivery(m, nil); err != nil && protocol.CodeOf(err) == "" {
				t.Fatalf("delivery error without a code: %v", err)
			}
		}
	})
}

func FuzzSessionToken(f *testing.F) {
	set := loadSeeds(f, "token")
	now := time.UnixMilli(vectors.NowMS)
	f.Fuzz(func(t *testing.T, tok []byte) {
		tv := &protocol.TokenVerifier{Keys: set.JWKS, Issuer: vectors.Issuer, Audience: vectors.Audience, Now: func() time.Time { return now }}
		c, err := tv.Verify(context.Background(), string(tok))
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if c.Confirm.JKT == "" || c.Session == "" {
			t.Fatalf("accepted token without binding: %+v", c)
		}
	})
}

func FuzzParsePublicJWK(f *testing.F) {
	f.Add([]byte(`{"kty":"OKP","crv":"Ed25519","x":"4Un957t22fSv1GRE5VXU04PisjZ-4hlgxMHPLPGU3j4"}`))
	f.Add([]byte(`{"kty":"EC","crv":"P-256","x":"f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU","y":"x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"}`))
	f.Add([]byte(`{"kty":"oct","k":"AAAA"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := protocol.ParsePublicJWK(data)
		if err != nil {
			return
		}
		// Re-encoding and parsing again gives the same key.
		b, err := k.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		k2, err := protocol.ParsePublicJWK(b)
		if err != nil || k2.Thumbprint() != k.Thumbprint() || k2.Algorithm() != k.Algorithm() {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzParsePolicy(f *testing.F) {
	f.Add([]byte(`{"rules":[{"action":"pub","channel":"rooms.>","roles":["user"]}]}`))
	f.Add([]byte(`{"rules":[{"action":"*","roles":[]}]}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := protocol.ParsePolicy(data)
		if err != nil {
			return
		}
		p2, err := protocol.NewPolicy(p.Rules())
		if err != nil {
			t.Fatalf("rules of a parsed policy do not compile: %v", err)
		}
		for _, ch := range []string{"", "rooms.lobby", "a.b.c"} {
			if (p.Allow("pub", ch, []string{"user"}) == nil) != (p2.Allow("pub", ch, []string{"user"}) == nil) {
				t.Fatal("policy differs after round trip")
			}
		}
	})
}

func FuzzParseKeySet(f *testing.F) {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	f.Add([]byte(set.Keys.ServerJWKS))
	f.Fuzz(func(t *testing.T, data []byte) {
		ks, err := protocol.ParseKeySet(data)
		if err != nil {
			return
		}
		b, err := ks.MarshalJSON()
		if err != nil {
			t.Fatal(err)
		}
		ks2, err := protocol.ParseKeySet(b)
		if err != nil || len(ks2.Keys()) != len(ks.Keys()) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

func FuzzOpenBody(f *testing.F) {
	key := &protocol.ContentKey{ID: "k1", Key: make([]byte, 32), Scope: protocol.ScopeSession}
	ring := protocol.NewKeyRing(nil)
	ring.Add(key, time.Time{})
	sealed, err := protocol.SealBody(key, []byte(`{"a":1}`))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(sealed)
	f.Add("a.b.c.d.e")
	f.Fuzz(func(t *testing.T, enc string) {
		plain, err := protocol.OpenBody(enc, ring, protocol.ScopeSession)
		if err != nil {
			if protocol.CodeOf(err) != protocol.CodeBadEnc {
				t.Fatalf("error with code %q: %v", protocol.CodeOf(err), err)
			}
			return
		}
		if len(plain) == 0 {
			t.Fatal("empty plaintext accepted")
		}
	})
}

func FuzzVerifyDeliveryEvidence(f *testing.F) {
	set := loadSeeds(f, "delivery", "server")
	f.Fuzz(func(t *testing.T, frame []byte) {
		ev, err := protocol.VerifyDeliveryEvidence(set.JWKS, frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		// Accepted: the sender is named, and its frame is evidence on its own.
		if ev.Subject == "" || ev.Key == nil || len(ev.Message.Frame) == 0 {
			t.Fatalf("accepted delivery with empty evidence: %+v", ev)
		}
		if _, err := protocol.VerifyDeliveryEvidence(set.JWKS, frame); err != nil {
			t.Fatalf("not deterministic: %v", err)
		}
	})
}
