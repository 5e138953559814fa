package vectors

import (
	"context"
	"crypto/ecdsa"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sigil-ws/sigil/internal/strictjson"
	"github.com/sigil-ws/sigil/protocol"
)

// Set is a loaded vectors directory.
type Set struct {
	Keys    Keys
	JWKS    *protocol.KeySet
	Policy  *protocol.Policy
	Vectors []Vector
}

// Load reads a vectors directory (keys.json, policy.json, cases/*.json).
func Load(dir string) (*Set, error) {
	s := &Set{}
	kb, err := os.ReadFile(filepath.Join(dir, "keys.json"))
	if err != nil {
		return nil, err
	}
	if err := strictjson.Unmarshal(kb, &s.Keys, nil); err != nil {
		return nil, err
	}
	if s.JWKS, err = protocol.ParseKeySet(s.Keys.ServerJWKS); err != nil {
		return nil, err
	}
	pb, err := os.ReadFile(filepath.Join(dir, "policy.json"))
	if err != nil {
		return nil, err
	}
	if s.Policy, err = protocol.ParsePolicy(pb); err != nil {
		return nil, err
	}
	names, err := filepath.Glob(filepath.Join(dir, "cases", "*.json"))
	if err != nil {
		return nil, err
	}
	sort.Strings(names)
	for _, n := range names {
		b, err := os.ReadFile(n)
		if err != nil {
			return nil, err
		}
		var v Vector
		if err := strictjson.Unmarshal(b, &v, nil); err != nil {
			return nil, fmt.Errorf("%s: %w", n, err)
		}
		s.Vectors = append(s.Vectors, v)
	}
	return s, nil
}

// Run checks one vector and returns nil if the outcome is the expected one.
func (s *Set) Run(v Vector) error {
	ctx := context.Background()
	now := time.UnixMilli(v.Now)
	clock := func() time.Time { return now }
	skew := time.Duration(v.Config.SkewMS) * time.Millisecond
	rev := protocol.NewMemoryRevocations()
	if v.Revoked != nil {
		for _, j := range v.Revoked.JTIs {
			rev.RevokeToken(j, now.Add(time.Hour))
		}
		for _, r := range v.Revoked.Subjects {
			rev.RevokeSubject(r.Sub, time.Unix(r.At, 0))
		}
	}
	tokens := &protocol.TokenVerifier{Keys: s.JWKS, Issuer: v.Config.Issuer, Audience: v.Config.Audience, Skew: skew, Now: clock, Revocation: rev}
	replay := protocol.NewMemoryReplayStore(0, clock)
	for _, a := range v.Accepted {
		if err := replay.Check(ctx, protocol.ReplayCheck{Session: a.SID, ID: a.ID, Seq: a.Seq,
			IDExpiry: time.UnixMilli(a.TS).Add(skew), SessionExpiry: now.Add(time.Hour)}); err != nil {
			return fmt.Errorf("setting up replay state: %w", err)
		}
	}
	verifier := protocol.NewVerifier(protocol.VerifierConfig{Tokens: tokens, MaxFrame: v.Config.MaxFrame, Skew: skew, Now: clock, Replay: replay, Policy: s.Policy})
	frame := []byte(v.Frame)

	switch v.Kind {
	case "hello":
		sess, _, err := verifier.VerifyHello(ctx, frame)
		if err != nil {
			return outcome(v, err)
		}
		if v.Expect.Result != "ok" {
			return fmt.Errorf("accepted; want %s", v.Expect.Code)
		}
		got := ExpectSession{SID: sess.ID(), Sub: sess.Subject(), Roles: sess.Roles()}
		if !reflect.DeepEqual(&got, v.Expect.Session) {
			return fmt.Errorf("session = %+v; want %+v", got, *v.Expect.Session)
		}
		return nil

	case "client":
		verifier = protocol.NewVerifier(protocol.VerifierConfig{Tokens: tokens, MaxFrame: v.Config.MaxFrame, Skew: skew, Now: clock, Replay: replay, Policy: s.Policy, Revocation: rev})
		_, m, err := verifier.VerifyRecordProof(ctx, v.Session.Record(clock), frame)
		if err == nil {
			err = protocol.CheckAction(&m.Envelope) // §9.1: after acceptance
		}
		if err != nil {
			return outcome(v, err)
		}
		return compare(v, m.Frame, m.Body, v.Expect.Claims, v.Expect.Body)

	case "server", "delivery":
		fv := &protocol.FrameVerifier{Keys: s.JWKS, Session: v.Client.SID, Subject: v.Client.Sub, Skew: skew, Now: clock}
		for _, id := range v.Client.Seen {
			fv.Remember(id, now)
		}
		fv.SetWelcomed(v.Client.Welcomed)
		m, err := fv.Verify(frame)
		if err != nil {
			return outcome(v, err)
		}
		if v.Kind == "server" {
			return compare(v, m.Frame, m.Body, v.Expect.Claims, v.Expect.Body)
		}
		sender, sm, err := fv.OpenDelivery(m, ring(v.Client.ContentKeys, clock))
		if err != nil {
			return outcome(v, err)
		}
		if err := compare(v, m.Frame, nil, v.Expect.Claims, nil); err != nil {
			return err
		}
		if v.Expect.Sender == nil || sender.Subject != v.Expect.Sender.Sub {
			return fmt.Errorf("sender = %s; want %+v", sender.Subject, v.Expect.Sender)
		}
		return compare(v, sm.Frame, sm.Body, v.Expect.Sender.Claims, v.Expect.Sender.Body)

	case "wrapped_key":
		var jwk jose.JSONWebKey
		if err := jwk.UnmarshalJSON(s.Keys.Agreement[v.Wrap.AgreementKey]); err != nil {
			return err
		}
		priv, ok := jwk.Key.(*ecdsa.PrivateKey)
		if !ok {
			return fmt.Errorf("agreement key %q is not a P-256 private key", v.Wrap.AgreementKey)
		}
		k, err := protocol.UnwrapContentKey(v.Frame, priv)
		if err == nil && k.Scope != v.Wrap.Scope {
			err = &protocol.Error{Code: protocol.CodeBadEnc, Message: "scope " + k.Scope + " where " + v.Wrap.Scope + " is expected"}
		}
		if err != nil {
			return outcome(v, err)
		}
		if v.Expect.Result != "ok" {
			return fmt.Errorf("accepted; want %s", v.Expect.Code)
		}
		got, _ := json.Marshal(map[string]string{"kid": k.ID, "k": b64.EncodeToString(k.Key), "scope": k.Scope})
		if !jsonEqual(got, v.Expect.Claims) {
			return fmt.Errorf("key = %s; want %s", got, v.Expect.Claims)
		}
		return nil

	case "grants":
		got, _ := json.Marshal(s.Policy.Grants(v.Grants.Roles))
		if !jsonEqual(got, v.Expect.Grants) {
			return fmt.Errorf("grants = %s; want %s", got, v.Expect.Grants)
		}
		var announced protocol.Grants
		if err := protocol.DecodeBody(v.Expect.Grants, &announced); err != nil {
			return err
		}
		for _, k := range v.Grants.Checks {
			byPolicy := s.Policy.Allow(k.Act, k.Ch, v.Grants.Roles) == nil
			if announced.Allows(k.Act, k.Ch) != k.Allowed || byPolicy != k.Allowed {
				return fmt.Errorf("%s %q: grants allow %v, policy allows %v; want %v", k.Act, k.Ch, announced.Allows(k.Act, k.Ch), byPolicy, k.Allowed)
			}
		}
		return nil

	case "token":
		c, err := tokens.Verify(ctx, v.Frame)
		if err != nil {
			return outcome(v, err)
		}
		if v.Expect.Result != "ok" {
			return fmt.Errorf("accepted; want %s", v.Expect.Code)
		}
		got, _ := json.Marshal(c)
		if !jsonEqual(got, v.Expect.Claims) {
			return fmt.Errorf("claims = %s; want %s", got, v.Expect.Claims)
		}
		return nil
	}
	return fmt.Errorf("unknown kind %q", v.Kind)
}

// Record is the session as the server knows it: what the client kind's
// frame is verified as a frame of.
func (s *Session) Record(now func() time.Time) protocol.SessionRecord {
	return protocol.SessionRecord{ID: s.SID, Subject: s.Sub, Roles: s.Roles, JWK: s.JWK, TokenID: s.JTI,
		IssuedAt: time.Unix(s.IAT, 0), Expiry: time.Unix(s.EXP, 0), Keys: ring(s.ContentKeys, now)}
}

func ring(keys []ContentKey, now func() time.Time) protocol.ContentKeys {
	if len(keys) == 0 {
		return nil
	}
	r := protocol.NewKeyRing(now)
	for _, k := range keys {
		raw, err := b64.DecodeString(k.K)
		if err != nil {
			panic(err)
		}
		r.Add(&protocol.ContentKey{ID: k.Kid, Key: raw, Scope: k.Scope}, time.Time{})
	}
	return r
}

func outcome(v Vector, err error) error {
	code := protocol.CodeOf(err)
	if v.Expect.Result == "ok" {
		return fmt.Errorf("rejected with %s (%v); want ok", code, err)
	}
	if string(code) != v.Expect.Code {
		return fmt.Errorf("rejected with %s (%v); want %s", code, err, v.Expect.Code)
	}
	return nil
}

func compare(v Vector, frame []byte, body json.RawMessage, wantClaims, wantBody json.RawMessage) error {
	if v.Expect.Result != "ok" {
		return fmt.Errorf("accepted; want %s", v.Expect.Code)
	}
	got, err := protocol.UnsafeClaims(frame)
	if err != nil {
		return err
	}
	if !jsonEqual(got, wantClaims) {
		return fmt.Errorf("claims = %s; want %s", got, wantClaims)
	}
	if wantBody != nil && !jsonEqual(body, wantBody) {
		return fmt.Errorf("body = %s; want %s", body, wantBody)
	}
	return nil
}

func jsonEqual(a, b []byte) bool {
	var x, y any
	if json.Unmarshal(a, &x) != nil || json.Unmarshal(b, &y) != nil {
		return false
	}
	return reflect.DeepEqual(x, y)
}
