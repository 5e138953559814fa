package server

import (
	"context"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// RevocationStore is the revocation list: the protocol's RevocationChecker
// plus the operations that write it. Implementations must be safe for
// concurrent use.
type RevocationStore interface {
	protocol.RevocationChecker
	// RevokeToken revokes one token id until its expiry.
	RevokeToken(ctx context.Context, jti string, until time.Time) error
	// RevokeSubject revokes every token of sub issued at or before at.
	RevokeSubject(ctx context.Context, sub string, at time.Time) error
}

// MemoryRevocationStore is the in-process RevocationStore.
type MemoryRevocationStore struct {
	list *protocol.MemoryRevocations
}

// NewMemoryRevocationStore returns an empty in-memory revocation list.
func NewMemoryRevocationStore() *MemoryRevocationStore {
	return &MemoryRevocationStore{list: protocol.NewMemoryRevocations()}
}

// IsRevoked implements protocol.RevocationChecker.
func (m *MemoryRevocationStore) IsRevoked(ctx context.Context, jti, sub string, iat time.Time) (bool, error) {
	return m.list.IsRevoked(ctx, jti, sub, iat)
}

// RevokeToken implements RevocationStore.
func (m *MemoryRevocationStore) RevokeToken(_ context.Context, jti string, until time.Time) error {
	m.list.RevokeToken(jti, until)
	return nil
}

// RevokeSubject implements RevocationStore.
func (m *MemoryRevocationStore) RevokeSubject(_ context.Context, sub string, at time.Time) error {
	m.list.RevokeSubject(sub, at)
	return nil
}
