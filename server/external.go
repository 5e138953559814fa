package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
)

// ExternalIssuer is the external-grant Authenticator: it accepts a JWT from
// a trusted identity provider and maps its claims to a Sigil identity. The
// provider's keys come only from configuration (a JWKS file or URL), never
// from the token (jku, x5u and embedded jwk headers are not used).
type ExternalIssuer struct {
	// Issuer is the expected iss (required).
	Issuer string
	// Audience is the expected aud (required).
	Audience string
	// JWKSFile is a local JWKS document. One of JWKSFile, JWKSURL or Keys
	// is required.
	JWKSFile string
	// JWKSURL is fetched at first use and then every RefreshInterval, and
	// at most once a minute when a token names an unknown kid. It must be
	// https; plain http is allowed only for a loopback host (localhost
	// exactly, or a loopback IP). Redirects are followed only to URLs that
	// meet the same rule.
	JWKSURL string
	// Keys is a fixed key set (tests, embedding).
	Keys *jose.JSONWebKeySet
	// Algorithms accepted. Default RS256, PS256, ES256, EdDSA.
	Algorithms []jose.SignatureAlgorithm
	// SubjectClaim names the claim used as the Sigil subject. Default "sub".
	SubjectClaim string
	// RolesClaim names a claim holding a string or an array of strings.
	// Default "roles".
	RolesClaim string
	// RoleMap maps provider role values to Sigil roles; values without an
	// entry are dropped. Nil means provider roles are used as they are.
	RoleMap map[string][]string
	// DefaultRoles are added to every identity. Default none.
	DefaultRoles []string
	// Leeway for exp/nbf/iat. Default 30s.
	Leeway time.Duration
	// RefreshInterval for JWKSURL. Default 1 hour.
	RefreshInterval time.Duration
	// HTTPClient fetches JWKSURL. Default a client with a 10s timeout that
	// follows redirects only to URLs allowed for JWKSURL.
	HTTPClient *http.Client
	// Now is the clock. Default time.Now.
	Now func() time.Time

	mu        sync.Mutex
	keys      *jose.JSONWebKeySet
	fetchedAt time.Time
}

// Validate reports a configuration error: no Issuer or Audience, no key
// source, or a JWKSURL that is neither https nor http to a loopback host.
// It does no I/O.
func (x *ExternalIssuer) Validate() error {
	switch {
	case x.Issuer == "":
		return errors.New("external issuer: Issuer is required")
	case x.Audience == "":
		return errors.New("external issuer: Audience is required")
	case x.Keys == nil && x.JWKSFile == "" && x.JWKSURL == "":
		return errors.New("external issuer: one of Keys, JWKSFile or JWKSURL is required")
	case x.JWKSURL != "":
		return checkJWKSURL(x.JWKSURL)
	}
	return nil
}

// checkJWKSURL allows https, and plain http only to a loopback host: the
// host is "localhost" exactly or a loopback IP, so neither
// http://localhost.evil.example/ nor http://127.0.0.1@evil.example/ passes.
func checkJWKSURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("external issuer: JWKS URL: %w", err)
	}
	if u.Host == "" || u.Opaque != "" {
		return errors.New("external issuer: JWKS URL must be an absolute https:// URL")
	}
	switch strings.ToLower(u.Scheme) {
	case "https":
		return nil
	case "http":
		host := u.Hostname()
		if ip := net.ParseIP(host); strings.EqualFold(host, "localhost") || ip != nil && ip.IsLoopback() {
			return nil
		}
		return fmt.Errorf("external issuer: JWKS URL must be https (plain http only for localhost or a loopback IP), not %s://%s", u.Scheme, u.Host)
	}
	return fmt.Errorf("external issuer: JWKS URL must be https, not %q", u.Scheme)
}

func (x *ExternalIssuer) now() time.Time {
	if x.Now != nil {
		return x.Now()
	}
	return time.Now()
}

// Authenticate implements Authenticator for the external grant.
func (x *ExternalIssuer) Authenticate(ctx context.Context, c Credentials) (*Identity, error) {
	if c.GrantType != GrantExternal {
		return nil, ErrUnsupportedGrant
	}
	if c.Assertion == "" || len(c.Assertion) > 16<<10 {
		return nil, ErrInvalidCredentials
	}
	algs := x.Algorithms
	if len(algs) == 0 {
		algs = []jose.SignatureAlgorithm{jose.RS256, jose.PS256, jose.ES256, jose.EdDSA}
	}
	tok, err := jwt.ParseSigned(c.Assertion, algs)
	if err != nil || len(tok.Headers) != 1 {
		return nil, ErrInvalidCredentials
	}
	h := tok.Headers[0]
	if h.JSONWebKey != nil || len(h.ExtraHeaders) > 0 && (h.ExtraHeaders["jku"] != nil || h.ExtraHeaders["x5u"] != nil) {
		return nil, ErrInvalidCredentials
	}
	key, err := x.key(ctx, h.KeyID)
	if err != nil {
		return nil, ErrInvalidCredentials
	}
	var std jwt.Claims
	all := map[string]any{}
	if err := tok.Claims(key.Key, &std, &all); err != nil {
		return nil, ErrInvalidCredentials
	}
	leeway := x.Leeway
	if leeway <= 0 {
		leeway = 30 * time.Second
	}
	if std.Expiry == nil {
		return nil, ErrInvalidCredentials
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: x.Issuer, AnyAudience: jwt.Audience{x.Audience}, Time: x.now()}, leeway); err != nil {
		return nil, ErrInvalidCredentials
	}
	subClaim := x.SubjectClaim
	if subClaim == "" {
		subClaim = "sub"
	}
	sub, _ := all[subClaim].(string)
	if sub == "" || len(sub) > 256 {
		return nil, ErrInvalidCredentials
	}
	rolesClaim := x.RolesClaim
	if rolesClaim == "" {
		rolesClaim = "roles"
	}
	var provided []string
	switch v := all[rolesClaim].(type) {
	case string:
		provided = []string{v}
	case []any:
		for _, r := range v {
			if s, ok := r.(string); ok {
				provided = append(provided, s)
			}
		}
	}
	roles := append([]string{}, x.DefaultRoles...)
	for _, p := range provided {
		mapped := []string{p}
		if x.RoleMap != nil {
			mapped = x.RoleMap[p]
		}
		for _, r := range mapped {
			if validName(r) && !slices.Contains(roles, r) {
				roles = append(roles, r)
			}
		}
	}
	return &Identity{Subject: sub, Roles: roles}, nil
}

func (x *ExternalIssuer) key(ctx context.Context, kid string) (*jose.JSONWebKey, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.Keys != nil {
		return findKey(x.Keys, kid)
	}
	refresh := x.RefreshInterval
	if refresh <= 0 {
		refresh = time.Hour
	}
	age := x.now().Sub(x.fetchedAt)
	stale := x.keys == nil || age > refresh
	if !stale {
		if k, err := findKey(x.keys, kid); err == nil {
			return k, nil
		}
		// Unknown kid: refetch at most once a minute.
		stale = age > time.Minute
	}
	if stale {
		ks, err := x.fetch(ctx)
		if err != nil {
			if x.keys == nil {
				return nil, err
			}
		} else {
			x.keys, x.fetchedAt = ks, x.now()
		}
	}
	if x.keys == nil {
		return nil, errors.New("no keys")
	}
	return findKey(x.keys, kid)
}

func findKey(ks *jose.JSONWebKeySet, kid string) (*jose.JSONWebKey, error) {
	var match []jose.JSONWebKey
	if kid == "" {
		match = ks.Keys
	} else {
		match = ks.Key(kid)
	}
	if len(match) != 1 || !match[0].IsPublic() {
		return nil, errors.New("no unique public key for kid")
	}
	return &match[0], nil
}

func (x *ExternalIssuer) fetch(ctx context.Context) (*jose.JSONWebKeySet, error) {
	var data []byte
	var err error
	switch {
	case x.JWKSFile != "":
		data, err = os.ReadFile(x.JWKSFile)
	case x.JWKSURL != "":
		if err := checkJWKSURL(x.JWKSURL); err != nil {
			return nil, err
		}
		client := x.HTTPClient
		if client == nil {
			client = &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
				if len(via) >= 5 {
					return errors.New("jwks: too many redirects")
				}
				return checkJWKSURL(r.URL.String())
			}}
		}
		var req *http.Request
		if req, err = http.NewRequestWithContext(ctx, http.MethodGet, x.JWKSURL, nil); err != nil {
			return nil, err
		}
		var resp *http.Response
		if resp, err = client.Do(req); err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("jwks: HTTP %d", resp.StatusCode)
		}
		data, err = io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	default:
		return nil, errors.New("external issuer: no JWKS configured")
	}
	if err != nil {
		return nil, err
	}
	var ks jose.JSONWebKeySet
	if err := json.Unmarshal(data, &ks); err != nil {
		return nil, fmt.Errorf("jwks: %w", err)
	}
	return &ks, nil
}
