package server_test

import (
	"context"
	"encoding/json"
	"sync/atomic"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// createFails is a refresh store whose Create fails while down is set.
type createFails struct {
	*server.MemoryRefreshStore
	down atomic.Bool
}

func (f *createFails) Create(ctx context.Context, rec server.RefreshRecord) error {
	if f.down.Load() {
		return errStoreDown
	}
	return f.MemoryRefreshStore.Create(ctx, rec)
}

// TestIssueStoreFailureUnavailable: a password or login grant whose
// refresh token cannot be stored (on a loaded machine, a Redis call beyond
// RedisConfig.OpTimeout) is answered 503 unavailable, as a store failure
// is (spec.md §13.4), so that the client tries again (sigil send does),
// not 500 internal; nothing was consumed.
func TestIssueStoreFailureUnavailable(t *testing.T) {
	store := &createFails{MemoryRefreshStore: server.NewMemoryRefreshStore(nil)}
	e := newEnv(t, func(c *server.Config) { c.Refresh = store })
	lk, lr := e.loginFor("alice")
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	jwk, _ := key.Public().MarshalJSON()
	store.down.Store(true)
	var ae apiErr
	if st := e.postJSON("/v1/token", map[string]any{"grant_type": "password", "username": "alice", "password": "pw", "jwk": json.RawMessage(jwk)}, &ae); st != 503 || ae.Error != "unavailable" {
		t.Fatalf("password grant: %d %v, want 503 unavailable", st, ae)
	}
	if st, _, ae := e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jwk, nil), key); st != 503 || ae.Error != "unavailable" {
		t.Fatalf("login grant: %d %v, want 503 unavailable", st, ae)
	}
	store.down.Store(false)
	if st, _, ae := e.mint(lr.LoginToken, loginProof(t, lk, "alice", lr.LoginToken, jwk, nil), key); st != 200 {
		t.Fatalf("login grant once the store is back: %d %v", st, ae)
	}
}
