package protocol_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

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

// fuzzSession is the established session of the "client" vectors, as the
// server stored it, with its content keys.
func fuzzSession(f *testing.F, set *vectors.Set) (protocol.SessionRecord, time.Time) {
	for _, v := range set.Vectors {
		if v.Kind == "client" && v.Expect.Result == "ok" && len(v.Session.ContentKeys) > 0 {
			now := time.UnixMilli(v.Now)
			return v.Session.Record(func() time.Time { return now }), now
		}
	}
	f.Fatal("no client vector")
	return protocol.SessionRecord{}, time.Time{}
}

// FuzzVerify runs the pipeline of spec.md §7 on a frame of an established
// session (VerifyRecordProof, as /v1/refresh and the client vectors do).
func FuzzVerify(f *testing.F) {
	set := loadSeeds(f, "client")
	rec, now := fuzzSession(f, set)
	clock := func() time.Time { return now }
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := protocol.NewVerifier(protocol.VerifierConfig{Now: clock, Policy: set.Policy})
		s, m, err := v.VerifyRecordProof(context.Background(), rec, frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		// Accepted: the claims must be exactly what the signed payload says,
		// and a second delivery must be a replay.
		raw, err := protocol.UnsafeClaims(frame)
		if err != nil {
			t.Fatalf("accepted frame whose payload does not decode: %v", err)
		}
		if m.Session != rec.ID || m.Subject != rec.Subject || s.ID() != rec.ID || !bytes.Equal(m.Frame, frame) {
			t.Fatalf("accepted frame of another session: %+v", m)
		}
		checkClaims(t, raw, m)
		if _, _, err := v.VerifyRecordProof(context.Background(), rec, frame); protocol.CodeOf(err) != protocol.CodeReplayID {
			t.Fatalf("second verify: %v", err)
		}
	})
}

// checkClaims checks that the envelope of a verified message is exactly
// the signed payload raw: the same claims, and for a plaintext body the
// same bytes.
func checkClaims(t *testing.T, raw []byte, m *protocol.Message) {
	t.Helper()
	env := m.Envelope
	if m.Encrypted {
		if env.Enc == "" || !json.Valid(m.Body) {
			t.Fatalf("decrypted message without enc or with a body that is not JSON: %+v", m)
		}
		env.Body = nil // the plaintext is not in the payload
	}
	var members map[string]json.RawMessage
	if err := json.Unmarshal(raw, &members); err != nil {
		t.Fatalf("accepted payload is not a JSON object: %v", err)
	}
	if !m.Encrypted && !bytes.Equal(members["body"], m.Body) {
		t.Fatalf("body %q is not the signed body %q", m.Body, members["body"])
	}
	got, err := env.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var a, b any
	if json.Unmarshal(raw, &a) != nil || json.Unmarshal(got, &b) != nil || !reflect.DeepEqual(a, b) {
		t.Fatalf("claims differ from the signed payload:\n%s\n%s", got, raw)
	}
}

// FuzzVerifyTokenProof runs an administration proof (a token in a header,
// the key in the proof's body) through VerifyTokenProof.
func FuzzVerifyTokenProof(f *testing.F) {
	set := loadSeeds(f, "client", "hello")
	now := time.UnixMilli(vectors.NowMS)
	clock := func() time.Time { return now }
	srv, err := protocol.ParsePrivateJWK(set.Keys.ServerPrivate["sigil-test-1"])
	if err != nil {
		f.Fatal(err)
	}
	key, err := protocol.ParsePrivateJWK(set.Keys.SessionKeys["alice-eddsa"])
	if err != nil {
		f.Fatal(err)
	}
	iss := &protocol.TokenIssuer{Key: srv, Issuer: vectors.Issuer, Audience: vectors.Audience, Now: clock}
	tok, claims, err := iss.Issue(protocol.IssueRequest{Subject: "root", Roles: []string{"admin"}, JKT: key.Public().Thumbprint()})
	if err != nil {
		f.Fatal(err)
	}
	jwk, _ := key.Public().MarshalJSON()
	body, _ := json.Marshal(protocol.AdminProofBody{JWK: jwk, Req: json.RawMessage(`{}`)})
	signer := &protocol.ClientSigner{Key: key, Session: claims.Session, Subject: "root", Now: clock}
	proof, err := signer.Sign(&protocol.Envelope{Action: "admin.sessions", Body: body})
	if err != nil {
		f.Fatal(err)
	}
	f.Add(proof)
	admin, _ := protocol.NewPolicy([]protocol.Rule{{Action: "*", Roles: []string{"admin"}}})
	f.Fuzz(func(t *testing.T, frame []byte) {
		v := protocol.NewVerifier(protocol.VerifierConfig{
			Tokens: &protocol.TokenVerifier{Keys: set.JWKS, Issuer: vectors.Issuer, Audience: vectors.Audience, Now: clock},
			Now:    clock, Policy: admin,
		})
		s, m, err := v.VerifyTokenProof(context.Background(), tok, frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if s.ID() != claims.Session || s.Key().Thumbprint() != claims.Confirm.JKT || m.Session != s.ID() {
			t.Fatalf("accepted a proof of another session or key: %+v", s)
		}
		raw, _ := protocol.UnsafeClaims(frame)
		checkClaims(t, raw, m)
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
		if s.Key().Thumbprint() == "" || s.Subject() == "" {
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
	for _, b := range vectorBodies(f) {
		if jwk := b["jwk"]; jwk != nil {
			f.Add([]byte(jwk))
		}
	}
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	for _, k := range set.JWKS.Keys() {
		b, _ := k.MarshalJSON()
		f.Add(b)
	}
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
	pol, err := os.ReadFile(vectorsDir + "/policy.json")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(pol)
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

// FuzzOpenBody opens sealed bodies with the content keys of the vectors'
// client session, seeded with the enc of every client vector.
func FuzzOpenBody(f *testing.F) {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	rec, _ := fuzzSession(f, set)
	f.Add("a.b.c.d.e")
	for _, v := range set.Vectors {
		if v.Kind != "client" {
			continue
		}
		if env, err := protocol.UnsafeEnvelope([]byte(v.Frame)); err == nil && env.Enc != "" {
			f.Add(env.Enc)
		}
	}
	f.Fuzz(func(t *testing.T, enc string) {
		for _, scope := range []string{protocol.ScopeSession, protocol.ChannelScope("rooms.lobby")} {
			plain, err := protocol.OpenBody(enc, rec.Keys, scope)
			if err != nil {
				if protocol.CodeOf(err) != protocol.CodeBadEnc {
					t.Fatalf("error with code %q: %v", protocol.CodeOf(err), err)
				}
				continue
			}
			if !json.Valid(plain) {
				t.Fatalf("accepted a plaintext that is not JSON: %q", plain)
			}
		}
	})
}

// vectorBodies returns the bodies of every frame of the vectors (and of
// the sender frames inside deliveries), as top-level members.
func vectorBodies(f *testing.F) []map[string]json.RawMessage {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	var out []map[string]json.RawMessage
	var add func(frame string)
	add = func(frame string) {
		raw, err := protocol.UnsafeClaims([]byte(frame))
		if err != nil {
			return
		}
		var env struct {
			Body json.RawMessage `json:"body"`
		}
		var body map[string]json.RawMessage
		if json.Unmarshal(raw, &env) != nil || json.Unmarshal(env.Body, &body) != nil {
			return
		}
		out = append(out, body)
		var inner string
		if json.Unmarshal(body["frame"], &inner) == nil {
			add(inner)
		}
	}
	for _, v := range set.Vectors {
		add(v.Frame)
	}
	return out
}

// FuzzDecodeBody decodes bodies strictly into every body and HTTP type: an
// accepted body re-encodes to one that decodes to the same value.
func FuzzDecodeBody(f *testing.F) {
	for _, b := range vectorBodies(f) {
		raw, _ := json.Marshal(b)
		f.Add(raw)
	}
	f.Add([]byte(`{"grant_type":"password","username":"alice","password":"pw","jwk":{}}`))
	f.Add([]byte(`{"token":"t","expires_at":1,"refresh_token":"r","refresh_expires_at":2,"sid":"s","sub":"alice","roles":["user"],"ws_url":"wss://x/v1/ws"}`))
	types := []func() any{
		func() any { return new(protocol.HelloBody) }, func() any { return new(protocol.WelcomeBody) },
		func() any { return new(protocol.ErrorBody) }, func() any { return new(protocol.DeliverBody) },
		func() any { return new(protocol.SubReplyBody) }, func() any { return new(protocol.PresenceBody) },
		func() any { return new(protocol.RefreshBody) }, func() any { return new(protocol.RefreshedBody) },
		func() any { return new(protocol.TokenRequest) }, func() any { return new(protocol.RefreshRequest) },
		func() any { return new(protocol.TokenResponse) }, func() any { return new(protocol.AdminProofBody) },
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, mk := range types {
			v := mk()
			if protocol.DecodeBody(data, v) != nil {
				continue
			}
			b, err := json.Marshal(v)
			if err != nil {
				t.Fatal(err)
			}
			v2 := mk()
			if err := protocol.DecodeBody(b, v2); err != nil {
				t.Fatalf("%T: re-encoded body does not decode: %v\n%s", v, err, b)
			}
			if b2, _ := json.Marshal(v2); !bytes.Equal(b, b2) {
				t.Fatalf("%T: unstable encoding:\n%s\n%s", v, b, b2)
			}
		}
	})
}

// FuzzUnsafeEnvelope: whatever it returns is what UnsafeClaims' payload
// says, under the client-frame rules.
func FuzzUnsafeEnvelope(f *testing.F) {
	set := loadSeeds(f, "hello", "client", "server", "delivery", "token")
	_ = set
	f.Fuzz(func(t *testing.T, frame []byte) {
		env, err := protocol.UnsafeEnvelope(frame)
		if err != nil {
			if c := protocol.CodeOf(err); c != protocol.CodeMalformed && c != protocol.CodeBadClaims {
				t.Fatalf("code %q: %v", c, err)
			}
			return
		}
		raw, err := protocol.UnsafeClaims(frame)
		if err != nil {
			t.Fatalf("UnsafeEnvelope accepted what UnsafeClaims refuses: %v", err)
		}
		if env.Seq == 0 || env.Session == "" || env.Subject == "" {
			t.Fatalf("accepted an envelope without the client claims: %+v", env)
		}
		checkClaims(t, raw, &protocol.Message{Envelope: *env})
	})
}

// FuzzVerifyEvidence checks (token, session key, frame) offline, seeded
// with the hellos of the vectors, whose bodies carry a token and its key.
func FuzzVerifyEvidence(f *testing.F) {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	for _, v := range set.Vectors {
		if v.Kind != "hello" {
			continue
		}
		env, err := protocol.UnsafeEnvelope([]byte(v.Frame))
		if err != nil {
			continue
		}
		var hb protocol.HelloBody
		if json.Unmarshal(env.Body, &hb) == nil {
			f.Add(hb.Token, []byte(hb.JWK), []byte(v.Frame))
		}
	}
	f.Fuzz(func(t *testing.T, token string, jwk, frame []byte) {
		ev, err := protocol.VerifyEvidence(set.JWKS, token, jwk, frame)
		if err != nil {
			if protocol.CodeOf(err) == "" {
				t.Fatalf("error without a code: %v", err)
			}
			return
		}
		if ev.Key.Thumbprint() != ev.Token.Confirm.JKT || ev.Message.Subject != ev.Token.Subject || ev.Message.Session != ev.Token.Session {
			t.Fatalf("evidence does not bind the frame to the token: %+v", ev)
		}
		raw, _ := protocol.UnsafeClaims(frame)
		checkClaims(t, raw, ev.Message)
	})
}

// agreementKey returns alice's agreement private key of keys.json.
func agreementKey(f *testing.F, set *vectors.Set, name string) *ecdsa.PrivateKey {
	var jwk jose.JSONWebKey
	if err := jwk.UnmarshalJSON(set.Keys.Agreement[name]); err != nil {
		f.Fatal(err)
	}
	return jwk.Key.(*ecdsa.PrivateKey)
}

// FuzzUnwrapContentKey opens wrapped keys with alice's agreement key,
// seeded with the wrapped_key vectors.
func FuzzUnwrapContentKey(f *testing.F) {
	set := loadSeeds(f, "wrapped_key")
	priv := agreementKey(f, set, "alice")
	f.Fuzz(func(t *testing.T, jwe []byte) {
		k, err := protocol.UnwrapContentKey(string(jwe), priv)
		if err != nil {
			if protocol.CodeOf(err) != protocol.CodeBadEnc {
				t.Fatalf("code %q: %v", protocol.CodeOf(err), err)
			}
			return
		}
		if len(k.Key) != protocol.ContentKeySize || k.ID == "" || (k.Scope != protocol.ScopeSession && !strings.HasPrefix(k.Scope, protocol.ScopeChannelPrefix)) {
			t.Fatalf("accepted %v", k)
		}
		again, err := protocol.WrapContentKey(k, &priv.PublicKey)
		if err != nil {
			t.Fatal(err)
		}
		k2, err := protocol.UnwrapContentKey(again, priv)
		if err != nil || k2.ID != k.ID || !bytes.Equal(k2.Key, k.Key) || k2.Scope != k.Scope {
			t.Fatalf("re-wrapped key: %v", err)
		}
	})
}

// FuzzParseAgreementJWK parses ekeys, seeded with the hellos' ekeys.
func FuzzParseAgreementJWK(f *testing.F) {
	for _, b := range vectorBodies(f) {
		if ek := b["ekey"]; ek != nil {
			f.Add([]byte(ek))
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pub, err := protocol.ParseAgreementJWK(data)
		if err != nil {
			return
		}
		priv := &ecdsa.PrivateKey{PublicKey: *pub}
		b, err := protocol.AgreementJWK(priv)
		if err != nil {
			t.Fatal(err)
		}
		pub2, err := protocol.ParseAgreementJWK(b)
		if err != nil || !pub2.Equal(pub) {
			t.Fatalf("round trip: %v", err)
		}
	})
}

// FuzzParsePrivateJWK parses key files, seeded with the vectors' private
// keys.
func FuzzParsePrivateJWK(f *testing.F) {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		f.Fatal(err)
	}
	for _, k := range set.Keys.ServerPrivate {
		f.Add([]byte(k))
	}
	for _, k := range set.Keys.SessionKeys {
		f.Add([]byte(k))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		k, err := protocol.ParsePrivateJWK(data)
		if err != nil {
			return
		}
		b, err := k.MarshalPrivateJWK()
		if err != nil {
			t.Fatal(err)
		}
		k2, err := protocol.ParsePrivateJWK(b)
		if err != nil || k2.Public().Thumbprint() != k.Public().Thumbprint() || k2.KeyID() != k.KeyID() {
			t.Fatalf("round trip: %v", err)
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
