package server

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// Plain http is allowed only to a loopback host, parsed, not by prefix.
func TestJWKSURLRule(t *testing.T) {
	for raw, ok := range map[string]bool{
		"https://idp.example/jwks":           true,
		"HTTPS://idp.example/jwks":           true,
		"http://localhost/jwks":              true,
		"http://LOCALHOST:8080/jwks":         true,
		"http://127.0.0.1:9/jwks":            true,
		"http://127.8.9.10/jwks":             true,
		"http://[::1]:9/jwks":                true,
		"http://localhost.evil.example/jwks": false,
		"http://127.0.0.1.evil.example/":     false,
		"http://127.0.0.1@evil.example/":     false,
		"http://localhost@evil.example/":     false,
		"http://evil.example/":               false,
		"http://10.0.0.1/":                   false,
		"ftp://idp.example/jwks":             false,
		"https:idp.example":                  false,
		"//idp.example/jwks":                 false,
	} {
		err := (&ExternalIssuer{Issuer: "i", Audience: "a", JWKSURL: raw}).Validate()
		if (err == nil) != ok {
			t.Errorf("%s: %v, want ok=%v", raw, err, ok)
		}
	}
	if (&ExternalIssuer{Issuer: "i", Audience: "a"}).Validate() == nil {
		t.Error("no key source accepted")
	}
}

// The default client follows a redirect only to a URL the same rule allows,
// and fetch itself refuses a bad JWKSURL before any request is made.
func TestJWKSRedirectRule(t *testing.T) {
	requests := 0
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests++
		http.Redirect(w, r, "http://localhost.evil.example/jwks", http.StatusFound)
	}))
	defer hs.Close()
	x := &ExternalIssuer{Issuer: "i", Audience: "a", JWKSURL: hs.URL + "/jwks"}
	if _, err := x.fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "must be https") || requests != 1 {
		t.Fatalf("redirect to plain http: %v (%d requests)", err, requests)
	}
	x = &ExternalIssuer{Issuer: "i", Audience: "a", JWKSURL: "http://localhost.evil.example/jwks"}
	if _, err := x.fetch(context.Background()); err == nil || !strings.Contains(err.Error(), "must be https") {
		t.Fatalf("plain http JWKSURL: %v", err)
	}
}

// The JWKS of an ExternalIssuer is refetched by its clock (Now): after
// RefreshInterval, and for an unknown kid at most once a minute.
func TestExternalIssuerJWKSRefetchOnItsClock(t *testing.T) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	jwks, _ := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &key.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	var fetches atomic.Int32
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		fetches.Add(1)
		_, _ = w.Write(jwks)
	}))
	defer hs.Close()
	now := time.Now()
	x := &ExternalIssuer{Issuer: "https://idp", Audience: "sigil", JWKSURL: hs.URL, RefreshInterval: time.Hour, Now: func() time.Time { return now }}
	login := func(kid string, age time.Duration) error {
		at := now.Add(-age)
		s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}}, nil)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := jwt.Signed(s).Claims(map[string]any{"iss": "https://idp", "aud": "sigil", "sub": "dave", "exp": at.Add(time.Minute).Unix(), "iat": at.Unix()}).Serialize()
		if err != nil {
			t.Fatal(err)
		}
		_, err = x.Authenticate(context.Background(), Credentials{GrantType: GrantExternal, Assertion: tok})
		return err
	}
	step := func(d time.Duration, kid string, ok bool, wantFetches int32) {
		t.Helper()
		now = now.Add(d)
		age := time.Duration(0)
		if !ok && kid == "k1" {
			age = 2 * time.Minute // signed two minutes ago: expired
		}
		if err := login(kid, age); (err == nil) != ok || fetches.Load() != wantFetches {
			t.Fatalf("+%v kid %s: %v, %d fetches; want ok=%v, %d fetches", d, kid, err, fetches.Load(), ok, wantFetches)
		}
	}
	step(0, "k1", true, 1)
	step(30*time.Minute, "k1", true, 1)  // fresh keys
	step(0, "k2", false, 2)              // unknown kid: refetch
	step(30*time.Second, "k2", false, 2) // at most once a minute
	step(31*time.Second, "k2", false, 3) // a minute later
	step(59*time.Minute, "k1", true, 3)  // the hour since the last fetch has not passed
	step(2*time.Minute, "k1", true, 4)   // it has: refetched
	step(2*time.Minute, "k1", false, 4)  // an assertion expired by the issuer's clock
}
