package server

import (
	"fmt"
	"net/http"

	"github.com/sigil-ws/sigil/protocol"
)

// keyState is an immutable snapshot of the server's keys and everything
// built from them; rotation swaps the whole snapshot.
type keyState struct {
	keys      []*protocol.PrivateKey // oldest first; the last signs
	set       *protocol.KeySet
	signer    *protocol.ServerSigner
	issuer    *protocol.TokenIssuer
	tokens    *protocol.TokenVerifier
	verifier  *protocol.Verifier // frames of sessions
	admin     *protocol.Verifier // admin proofs: own replay store and policy
	jwks      []byte
	serverJWK []byte
}

func (s *Server) keys() *keyState { return s.ks.Load() }

func (s *Server) setKeys(keys []*protocol.PrivateKey) error {
	if len(keys) == 0 {
		return fmt.Errorf("sigil: at least one signing key is required")
	}
	pubs := make([]*protocol.PublicKey, len(keys))
	for i, k := range keys {
		pubs[i] = k.Public()
	}
	set, err := protocol.NewKeySet(pubs...)
	if err != nil {
		return err
	}
	jwks, err := set.MarshalJSON()
	if err != nil {
		return err
	}
	signing := keys[len(keys)-1]
	serverJWK, err := signing.Public().MarshalJSON()
	if err != nil {
		return err
	}
	cfg := &s.cfg
	tokens := &protocol.TokenVerifier{Keys: set, Issuer: cfg.Issuer, Audience: cfg.Audience, Skew: cfg.Skew, Now: cfg.Now, Revocation: cfg.Revocations}
	adminPolicy, err := protocol.NewPolicy([]protocol.Rule{{Action: "*", Roles: []string{"admin"}}})
	if err != nil {
		return err
	}
	st := &keyState{
		keys:   append([]*protocol.PrivateKey(nil), keys...),
		set:    set,
		signer: &protocol.ServerSigner{Key: signing, Now: cfg.Now},
		issuer: &protocol.TokenIssuer{Key: signing, Issuer: cfg.Issuer, Audience: cfg.Audience, TTL: cfg.TokenTTL, Now: cfg.Now},
		tokens: tokens,
		verifier: protocol.NewVerifier(protocol.VerifierConfig{
			Tokens: tokens, MaxFrame: cfg.MaxFrame, Skew: cfg.Skew, Now: cfg.Now,
			Replay: cfg.Replay, Revocation: cfg.Revocations, Policy: cfg.Policy,
		}),
		admin: protocol.NewVerifier(protocol.VerifierConfig{
			Tokens: tokens, MaxFrame: cfg.MaxFrame, Skew: cfg.Skew, Now: cfg.Now,
			Replay: s.adminReplay, Revocation: cfg.Revocations, Policy: adminPolicy,
		}),
		jwks:      jwks,
		serverJWK: serverJWK,
	}
	s.ks.Store(st)
	return s.auditKeys(jwks)
}

// RotateKey adds k as the newest key: it signs from now on, and the older
// keys keep verifying (and stay in the JWKS) until retired.
func (s *Server) RotateKey(k *protocol.PrivateKey) error {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	return s.setKeys(append(s.keys().keys, k))
}

// RetireKey removes the key with kid; tokens and frames it signed no longer
// verify. The signing (newest) key cannot be retired.
func (s *Server) RetireKey(kid string) error {
	s.keysMu.Lock()
	defer s.keysMu.Unlock()
	cur := s.keys().keys
	var keep []*protocol.PrivateKey
	for i, k := range cur {
		if k.KeyID() == kid {
			if i == len(cur)-1 {
				return fmt.Errorf("sigil: cannot retire the signing key")
			}
			continue
		}
		keep = append(keep, k)
	}
	if len(keep) == len(cur) {
		return fmt.Errorf("sigil: no key with kid %q", kid)
	}
	return s.setKeys(keep)
}

// KeySet returns the server's public keys (what the JWKS publishes).
func (s *Server) KeySet() *protocol.KeySet { return s.keys().set }

// JWKSHandler serves the public JWKS.
func (s *Server) JWKSHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			writeError(w, newAPIError(http.StatusMethodNotAllowed, ErrCodeInvalidRequest, "GET only"))
			return
		}
		w.Header().Set("Content-Type", "application/jwk-set+json")
		w.Header().Set("Cache-Control", "public, max-age=300")
		_, _ = w.Write(s.keys().jwks)
	})
}
