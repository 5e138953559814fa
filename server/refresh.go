package server

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"time"
)

// RefreshRecord is what a refresh-token store keeps for one refresh token.
// The token itself is never stored, only its SHA-256 hash.
type RefreshRecord struct {
	Hash     string    // base64url SHA-256 of the token
	Family   string    // all rotations of one login share a family
	Session  string    // sid the token is bound to
	Subject  string    // sub
	Roles    []string  // roles to put in refreshed session tokens
	JKT      string    // thumbprint of the session key it is bound to
	JWK      []byte    // the session public JWK (to verify refresh proofs)
	TokenID  string    // jti of the session token issued with it
	TokenIat time.Time // iat of that session token
	TokenExp time.Time // exp of that session token
	Expires  time.Time // end of the family's lifetime
}

// RefreshStore stores refresh tokens. Implementations must be safe for
// concurrent use, and Use must be atomic: of two concurrent uses of one
// token at most one succeeds.
type RefreshStore interface {
	// Create stores a new, unused record.
	Create(ctx context.Context, rec RefreshRecord) error
	// Get returns the record without consuming it, with the same errors
	// as Use (it is how /v1/refresh finds the key a proof must verify under).
	Get(ctx context.Context, hash string) (RefreshRecord, error)
	// Use marks the token with this hash as used and returns its record. An
	// unknown or expired token gives ErrRefreshInvalid; a token already used
	// or whose family is revoked gives its record and ErrRefreshReused.
	Use(ctx context.Context, hash string) (RefreshRecord, error)
	// RevokeFamily revokes every token of the family and returns the
	// session-token ids issued in it, so that they can be revoked too.
	RevokeFamily(ctx context.Context, family string) ([]string, error)
}

// NewRefreshToken returns a new opaque refresh token (32 random bytes,
// base64url) and its hash for the store.
func NewRefreshToken() (token, hash string, err error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", "", err
	}
	token = base64.RawURLEncoding.EncodeToString(b[:])
	return token, HashRefreshToken(token), nil
}

// HashRefreshToken is the store key of a refresh token.
func HashRefreshToken(token string) string {
	h := sha256.Sum256([]byte(token))
	return base64.RawURLEncoding.EncodeToString(h[:])
}

// MemoryRefreshStore is the in-process RefreshStore.
type MemoryRefreshStore struct {
	now func() time.Time

	mu       sync.Mutex
	tokens   map[string]*memRefresh
	families map[string]*memFamily
	ops      int
}

type memRefresh struct {
	rec  RefreshRecord
	used bool
}

type memFamily struct {
	revoked bool
	expires time.Time
	jtis    []string
}

// NewMemoryRefreshStore returns an empty store; now is the clock (nil means
// time.Now).
func NewMemoryRefreshStore(now func() time.Time) *MemoryRefreshStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryRefreshStore{now: now, tokens: map[string]*memRefresh{}, families: map[string]*memFamily{}}
}

// Create implements RefreshStore.
func (m *MemoryRefreshStore) Create(_ context.Context, rec RefreshRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.ops++
	if m.ops%1024 == 0 {
		m.sweepLocked()
	}
	m.tokens[rec.Hash] = &memRefresh{rec: rec}
	f := m.families[rec.Family]
	if f == nil {
		f = &memFamily{expires: rec.Expires}
		m.families[rec.Family] = f
	}
	if rec.TokenID != "" {
		f.jtis = append(f.jtis, rec.TokenID)
	}
	return nil
}

// Use implements RefreshStore.
func (m *MemoryRefreshStore) Use(_ context.Context, hash string) (RefreshRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := m.lookupLocked(hash)
	if err != nil {
		return t.rec, err
	}
	t.used = true
	return t.rec, nil
}

// Get implements RefreshStore.
func (m *MemoryRefreshStore) Get(_ context.Context, hash string) (RefreshRecord, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	t, err := m.lookupLocked(hash)
	return t.rec, err
}

// lookupLocked finds a usable refresh token: ErrRefreshInvalid if unknown or
// expired, ErrRefreshReused (with its record) if already used or its family
// is revoked. t is never nil.
func (m *MemoryRefreshStore) lookupLocked(hash string) (*memRefresh, error) {
	t := m.tokens[hash]
	if t == nil || !m.now().Before(t.rec.Expires) {
		return &memRefresh{}, ErrRefreshInvalid
	}
	if f := m.families[t.rec.Family]; t.used || f == nil || f.revoked {
		return t, ErrRefreshReused
	}
	return t, nil
}

// RevokeFamily implements RefreshStore.
func (m *MemoryRefreshStore) RevokeFamily(_ context.Context, family string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	f := m.families[family]
	if f == nil {
		return nil, nil
	}
	f.revoked = true
	return append([]string(nil), f.jtis...), nil
}

func (m *MemoryRefreshStore) sweepLocked() {
	now := m.now()
	for h, t := range m.tokens {
		if now.After(t.rec.Expires) {
			delete(m.tokens, h)
		}
	}
	for id, f := range m.families {
		if now.After(f.expires) {
			delete(m.families, id)
		}
	}
}
