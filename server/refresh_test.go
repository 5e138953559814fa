package server_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

var errStoreDown = errors.New("store down (injected)")

// flakyRefresh is the memory refresh store with RevokeFamily failing while
// down is set, and Get and Use failing while lookupDown is set.
type flakyRefresh struct {
	*server.MemoryRefreshStore
	down, lookupDown atomic.Bool
}

func (f *flakyRefresh) Get(ctx context.Context, hash string) (server.RefreshRecord, error) {
	if f.lookupDown.Load() {
		return server.RefreshRecord{}, errStoreDown
	}
	return f.MemoryRefreshStore.Get(ctx, hash)
}

func (f *flakyRefresh) Use(ctx context.Context, hash string) (server.RefreshRecord, error) {
	if f.lookupDown.Load() {
		return server.RefreshRecord{}, errStoreDown
	}
	return f.MemoryRefreshStore.Use(ctx, hash)
}

func (f *flakyRefresh) RevokeFamily(ctx context.Context, family string) ([]string, error) {
	if f.down.Load() {
		return nil, errStoreDown
	}
	return f.MemoryRefreshStore.RevokeFamily(ctx, family)
}

// failingRevokeStore is the memory revocation store with RevokeToken failing
// while down is set.
type failingRevokeStore struct {
	*server.MemoryRevocationStore
	down atomic.Bool
}

func (f *failingRevokeStore) RevokeToken(ctx context.Context, jti string, until time.Time) error {
	if f.down.Load() {
		return errStoreDown
	}
	return f.MemoryRevocationStore.RevokeToken(ctx, jti, until)
}

func metricsText(t *testing.T, e *env) string {
	t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	must(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

// A refresh-token reuse whose family revocation fails in a store fails
// closed: the request is answered 503 unavailable (not invalid_grant as if the
// family were revoked), the failure is counted, the session's live sockets
// close with 4003 anyway, and a retry once the store is back completes the
// revocation.
func TestRefreshReuseStoreFailureFailsClosed(t *testing.T) {
	for _, which := range []string{"refresh", "revocation"} {
		t.Run(which, func(t *testing.T) {
			refresh := &flakyRefresh{MemoryRefreshStore: server.NewMemoryRefreshStore(nil)}
			revs := &failingRevokeStore{MemoryRevocationStore: server.NewMemoryRevocationStore()}
			e := newEnv(t, func(c *server.Config) { c.Refresh, c.Revocations = refresh, revs })
			c := e.login("alice").connect()
			rt1 := c.tok.RefreshToken
			var r2 server.TokenResponse
			if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt1, "proof": c.refreshProof(rt1)}, &r2); st != 200 {
				t.Fatalf("refresh %d", st)
			}
			if which == "refresh" {
				refresh.down.Store(true)
			} else {
				revs.down.Store(true)
			}
			var ae apiErr
			if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt1, "proof": c.refreshProof(rt1)}, &ae); st != 503 || ae.Error != server.ErrCodeUnavailable {
				t.Fatalf("reuse with the %s store down: %d %v, want 503 unavailable", which, st, ae)
			}
			c.expectClose(protocol.CloseRevoked)
			if m := metricsText(t, e); !strings.Contains(m, `sigil_backend_errors_total{backend="store",op="`+which+`"} 1`) {
				t.Fatalf("store error not counted:\n%s", grepLines(m, "sigil_backend_errors_total"))
			}
			refresh.down.Store(false)
			revs.down.Store(false)
			if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt1, "proof": c.refreshProof(rt1)}, &ae); st != 401 || ae.Error != server.ErrCodeInvalidGrant {
				t.Fatalf("retried reuse: %d %v", st, ae)
			}
			// The family is revoked now: its newest token is refused too,
			// and the session token issued in it no longer opens a session.
			if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": r2.RefreshToken, "proof": c.refreshProof(r2.RefreshToken)}, &ae); st != 401 {
				t.Fatalf("family not revoked: %d", st)
			}
			c2 := &client{t: t, e: e, key: c.key, raw: c.raw, jwk: c.jwk, tok: r2, signer: c.signer, fv: c.fv}
			c2.dial().write(c2.helloFrame(r2.Token))
			c2.expectHelloError("token_revoked")
		})
	}
}

// An in-band refresh whose refresh store fails fails closed (spec.md
// §12.2): unavailable with the frame's cid and ref, then 4006; the failure
// is logged and counted once; other sessions carry on; and the refresh
// token, never consumed, still works once the store is back.
func TestInBandRefreshStoreFailure(t *testing.T) {
	refresh := &flakyRefresh{MemoryRefreshStore: server.NewMemoryRefreshStore(nil)}
	e := newEnv(t, func(c *server.Config) { c.Refresh = refresh })
	c := e.login("alice").connect()
	bob := e.login("bob").connect()
	body := mustJSON(t, protocol.RefreshBody{RefreshToken: c.tok.RefreshToken})
	refresh.lookupDown.Store(true)
	c.send(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, Corr: "r"})
	c.expectUnavailable("r")
	c.expectClose(protocol.CloseServerError)
	bob.ping()
	if got := e.metric(`sigil_backend_errors_total{backend="store"`); !strings.Contains(got+"\n", `op="refresh"} 1`+"\n") {
		t.Fatalf("want the refresh store's failure counted once:\n%s", got)
	}
	refresh.lookupDown.Store(false)
	c.connect()
	c.send(&protocol.Envelope{Action: protocol.ActRefresh, Body: body, Corr: "again"})
	if m := c.recvAct(protocol.ActRefreshed); m.Corr != "again" {
		t.Fatalf("refreshed cid %q", m.Corr)
	}
}
