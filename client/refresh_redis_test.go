package client_test

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// TestRefreshUnavailableNewSession: an in-band refresh that fails because
// the server's Redis does not answer (stopped here; on a loaded machine, a
// call beyond RedisConfig.OpTimeout) refuses nothing, so a client whose
// token source mints sessions (a login here) stops sending as the session,
// never presents its refresh token again, and goes on with a new session,
// its subscription included; a client given one session (SessionToken)
// fails closed as before (spec.md §12.2).
func TestRefreshUnavailableNewSession(t *testing.T) {
	rd := sigiltest.StartRedis(t)
	t.Cleanup(rd.Resume) // before Redis stops (cleanups run last first)
	r, err := server.NewRedis(server.RedisConfig{URL: rd.URL, OpTimeout: 200 * time.Millisecond})
	must(t, err)
	t.Cleanup(r.Close)
	store := server.NewRedisRefreshStore(r, 0)
	e := newEnv(t, func(c *server.Config) {
		c.Refresh = store
		c.TokenTTL = 4 * time.Second // the server warns, and the clients refresh, 2 s after they connect
		c.SweepInterval = 20 * time.Millisecond
	})
	ctx := ctxT(t)
	req := &client.TokenRequest{BaseURL: httpBase(e.url), HTTPClient: e.hs.Client()}
	l, err := client.LogIn(ctx, req, "alice", "pw")
	must(t, err)
	failed := make(chan error, 2)
	onError := func(o *client.Options) {
		o.OnError = func(err error) {
			if errors.Is(err, client.ErrRefreshFailed) {
				select {
				case failed <- err:
				default:
				}
			}
		}
	}
	c := e.dial("alice", func(o *client.Options) { o.Tokens = client.LoginSessions(*l); onError(o) })
	sub, err := c.Subscribe(ctx, "rooms.x")
	must(t, err)
	one, err := client.LoginSessions(*l).Token(ctx, req)
	must(t, err)
	single := e.dial("alice", func(o *client.Options) { o.Tokens = client.SessionToken(*one) })
	first := c.Token()

	rd.Pause()
	// Publishes go on meanwhile: one is sent behind the refresh that
	// fails and is never answered. The server handles no frame after a
	// refresh it answers unavailable, so the client signs it again on
	// the new session: it succeeds.
	stop, pubs := make(chan struct{}), make(chan error, 1)
	go func() {
		for {
			err := c.Publish(context.Background(), "rooms.x", text{"during the outage"})
			select {
			case <-stop:
				pubs <- err
				return
			default:
			}
			if err != nil {
				pubs <- err
				return
			}
		}
	}()
	select {
	case err := <-failed:
		if protocol.CodeOf(err) != protocol.CodeUnavailable && !errors.Is(err, client.ErrConnectionLost) {
			t.Fatalf("refresh failure: %v", err)
		}
	case <-c.Done():
		t.Fatalf("the login's client closed: %v", c.Err())
	case <-time.After(sigiltest.WaitLimit):
		t.Fatal("the login's client did not report its refresh failure")
	}
	select {
	case <-single.Done():
	case <-time.After(sigiltest.WaitLimit):
		t.Fatal("the single session's client did not fail closed")
	}
	rd.Resume()

	if err := single.Err(); !errors.Is(err, client.ErrRefreshFailed) {
		t.Fatalf("single session: %v", err)
	}
	sigiltest.Eventually(t, "a new session", func() bool {
		sid, _ := c.Session()
		return sid != first.Session && c.State() == client.StateConnected
	})
	close(stop)
	select {
	case err := <-pubs:
		if err != nil {
			t.Fatalf("a publish during the outage: %v", err)
		}
	case <-time.After(sigiltest.WaitLimit):
		t.Fatal("a publish sent behind the failed refresh never returned")
	}
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	must(t, c.Publish(ctx, "rooms.x", text{"on the new session"}))
	if m := next(t, sub); m.From != "alice" {
		t.Fatalf("from %q", m.From)
	}
	// The old session's refresh token was never presented again: the
	// store still holds it unused.
	if _, err := store.Get(ctx, server.HashRefreshToken(first.RefreshToken)); err != nil {
		t.Fatalf("the abandoned refresh token: %v", err)
	}
}

// TestExpiryDuringRefreshNoReuse: the session token expires (4002) while
// its in-band refresh waits on the server's Redis (stopped here; on a
// loaded machine, slow calls). The server may have used the refresh token
// by then, so the client must not present it again over /v1/refresh: that
// is reuse, which revokes the login with all its sessions (spec.md §4.3,
// §12.2). It goes on with a new session from the login, and the login
// stays good.
func TestExpiryDuringRefreshNoReuse(t *testing.T) {
	rd := sigiltest.StartRedis(t)
	t.Cleanup(rd.Resume) // before Redis stops (cleanups run last first)
	// Store calls wait for Redis rather than fail.
	r, err := server.NewRedis(server.RedisConfig{URL: rd.URL, OpTimeout: sigiltest.WaitLimit})
	must(t, err)
	t.Cleanup(r.Close)
	e := newEnv(t, func(c *server.Config) {
		c.Refresh = server.NewRedisRefreshStore(r, 0)
		c.TokenTTL = 4 * time.Second // the refresh 2 s after the dial, the expiry at 4 s
		c.SweepInterval = 20 * time.Millisecond
	})
	ctx := ctxT(t)
	req := &client.TokenRequest{BaseURL: httpBase(e.url), HTTPClient: e.hs.Client()}
	l, err := client.LogIn(ctx, req, "alice", "pw")
	must(t, err)
	lost := make(chan struct{})
	var once sync.Once
	c := e.dial("alice", func(o *client.Options) {
		o.Tokens = client.LoginSessions(*l)
		o.OnStateChange = func(s client.State, _ error) {
			if s == client.StateReconnecting {
				once.Do(func() { close(lost) })
			}
		}
	})
	first := c.Token()
	rd.Pause()
	select {
	case <-lost:
	case <-c.Done():
		t.Fatalf("closed: %v", c.Err())
	case <-time.After(sigiltest.WaitLimit):
		t.Fatal("the connection was not closed at the token's expiry")
	}
	rd.Resume()
	sigiltest.Eventually(t, "a new session", func() bool {
		sid, _ := c.Session()
		return c.Err() != nil || sid != first.Session && c.State() == client.StateConnected
	})
	if err := c.Err(); err != nil {
		t.Fatal(err)
	}
	// The login was not revoked: it still mints sessions.
	if _, err := client.LoginSessions(*l).Token(ctx, req); err != nil {
		t.Fatalf("the login after the expiry: %v", err)
	}
}
