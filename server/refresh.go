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
	// Login marks the record of a login (spec.md §4.5): its hash is the
	// login token's, Session the login's own id, JKT and JWK the login
	// key's, TokenIat the time of the login. It is read with Get to mint
	// sessions and never used (consumed); Use and RevokeFamily treat it as
	// any token of its family.
	Login bool
}

// RefreshStore stores refresh tokens. Implementations must be safe for
// concurrent use, and Use must be atomic: of two concurrent uses of one
// token at most one succeeds.
//
// A store bounds the live families of each subject (a family is live until
// it expires or is revoked): when Create starts a new family (rec.Family
// not yet stored) for a subject that already has the maximum number of live
// families, it first evicts the subject's oldest live family, the one
// created first. An evicted family is forgotten with all its tokens: they
// are then unknown (ErrRefreshInvalid, not ErrRefreshReused, because an
// eviction is not a theft), and the session tokens issued in it are not
// revoked but run out at their exp. The maximum is the store's own
// setting; MemoryRefreshStore's is MaxFamilies (default 32).
type RefreshStore interface {
	// Create stores a new, unused record, evicting the subject's oldest
	// live family first when rec starts a family beyond the maximum.
	Create(ctx context.Context, rec RefreshRecord) error
	// Get returns the record without consuming it, with the same errors
	// as Use (it is how /v1/refresh finds the key a proof must verify under).
	Get(ctx context.Context, hash string) (RefreshRecord, error)
	// Use marks the token with this hash as used and returns its record. An
	// unknown, expired or evicted token gives ErrRefreshInvalid; a token
	// already used or whose family is revoked gives its record and
	// ErrRefreshReused.
	Use(ctx context.Context, hash string) (RefreshRecord, error)
	// RevokeFamily revokes every token of the family and returns the
	// session-token ids issued in it, so that they can be revoked too.
	RevokeFamily(ctx context.Context, family string) ([]string, error)
}

// DefaultMaxFamilies is the default number of live refresh families (logins)
// per subject.
const DefaultMaxFamilies = 32

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

// MemoryRefreshStore is the in-process RefreshStore. Its memory is bounded:
// at most MaxFamilies live families per subject (dead ones are forgotten at
// the subject's next login), each holding the tokens of at most its last
// 1,024 rotations, and expired tokens and families are forgotten once a
// minute of its clock (checked by Create).
type MemoryRefreshStore struct {
	// MaxFamilies is the number of live families per subject; creating one
	// more evicts the oldest (see RefreshStore). 0 means DefaultMaxFamilies.
	// Set it before the store is used.
	MaxFamilies int

	now func() time.Time

	mu        sync.Mutex
	tokens    map[string]*memRefresh
	families  map[string]*memFamily
	subjects  map[string][]string // subject → its family ids, oldest first
	nextSweep time.Time
}

type memRefresh struct {
	rec  RefreshRecord
	used bool
}

type memFamily struct {
	revoked bool
	expires time.Time
	jtis    []string
	hashes  []string // its tokens, to forget them with it
}

// maxFamilyTokens bounds the tokens (one per rotation) a family keeps.
const maxFamilyTokens = 1024

// refreshSweepInterval is how often, by its clock, MemoryRefreshStore
// forgets expired tokens and families.
const refreshSweepInterval = time.Minute

// NewMemoryRefreshStore returns an empty store; now is the clock (nil means
// time.Now).
func NewMemoryRefreshStore(now func() time.Time) *MemoryRefreshStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryRefreshStore{now: now, tokens: map[string]*memRefresh{}, families: map[string]*memFamily{}, subjects: map[string][]string{}}
}

// Create implements RefreshStore.
func (m *MemoryRefreshStore) Create(_ context.Context, rec RefreshRecord) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	if !now.Before(m.nextSweep) {
		m.sweepLocked(now)
		m.nextSweep = now.Add(refreshSweepInterval)
	}
	if !now.Before(rec.Expires) {
		return nil // expired already: it would be refused
	}
	f := m.families[rec.Family]
	if f == nil {
		m.evictLocked(rec.Subject, now)
		f = &memFamily{expires: rec.Expires}
		m.families[rec.Family] = f
		m.subjects[rec.Subject] = append(m.subjects[rec.Subject], rec.Family)
	}
	m.tokens[rec.Hash] = &memRefresh{rec: rec}
	f.hashes = append(f.hashes, rec.Hash)
	if rec.TokenID != "" {
		f.jtis = append(f.jtis, rec.TokenID)
	}
	if len(f.hashes) > maxFamilyTokens {
		// A family rotated this often, or a login that minted this many
		// sessions, forgets one token (presenting it is then
		// ErrRefreshInvalid): its oldest used one, else its oldest one
		// that is not the login's. Their jtis go too (those session tokens
		// expired long ago).
		drop := -1
		for i, h := range f.hashes {
			t := m.tokens[h]
			if t == nil || t.used {
				drop = i
				break
			}
			if drop < 0 && !t.rec.Login {
				drop = i
			}
		}
		if drop >= 0 {
			delete(m.tokens, f.hashes[drop])
			f.hashes = append(f.hashes[:drop:drop], f.hashes[drop+1:]...)
		}
	}
	if len(f.jtis) > maxFamilyTokens {
		f.jtis = append(f.jtis[:0:0], f.jtis[1:]...)
	}
	return nil
}

// evictLocked makes room for one more live family of sub: it forgets the
// subject's dead families (expired or revoked: their tokens are refused
// either way, and their session tokens were revoked when they were) and the
// oldest live ones beyond MaxFamilies-1.
func (m *MemoryRefreshStore) evictLocked(sub string, now time.Time) {
	max := m.MaxFamilies
	if max <= 0 {
		max = DefaultMaxFamilies
	}
	ids := m.subjects[sub]
	live := make([]string, 0, min(len(ids)+1, max))
	for _, id := range ids {
		switch f := m.families[id]; {
		case f == nil:
		case f.revoked || !now.Before(f.expires):
			m.forgetLocked(id)
		default:
			live = append(live, id)
		}
	}
	for len(live) >= max {
		m.forgetLocked(live[0])
		live = live[1:]
	}
	m.subjects[sub] = live
}

func (m *MemoryRefreshStore) forgetLocked(family string) {
	if f := m.families[family]; f != nil {
		for _, h := range f.hashes {
			delete(m.tokens, h)
		}
		delete(m.families, family)
	}
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

// Len returns the number of families (live, or revoked and not yet
// expired) and of tokens held, for metrics and tests.
func (m *MemoryRefreshStore) Len() (families, tokens int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.families), len(m.tokens)
}

// LiveFamilies returns the number of live families of sub.
func (m *MemoryRefreshStore) LiveFamilies(sub string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	now, n := m.now(), 0
	for _, id := range m.subjects[sub] {
		if f := m.families[id]; f != nil && !f.revoked && now.Before(f.expires) {
			n++
		}
	}
	return n
}

func (m *MemoryRefreshStore) sweepLocked(now time.Time) {
	for id, f := range m.families {
		if !now.Before(f.expires) {
			m.forgetLocked(id)
		}
	}
	for sub, ids := range m.subjects {
		live := ids[:0]
		for _, id := range ids {
			if m.families[id] != nil {
				live = append(live, id)
			}
		}
		if len(live) == 0 {
			delete(m.subjects, sub)
		} else {
			m.subjects[sub] = live
		}
	}
}
