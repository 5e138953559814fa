package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
