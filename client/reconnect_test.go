package client_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// TestRefreshInBand runs a client across several lifetimes of its token
// on a test clock: each time the clock reaches the server's expiry warning
// (60 s before the end of a 15 min token), the client refreshes in-band,
// once, and never reconnects. A refreshed token is not warned about at
// once, so there is no refresh loop.
func TestRefreshInBand(t *testing.T) {
	e := newEnvClock(t, func(c *server.Config) { c.SweepInterval = 20 * time.Millisecond })
	st := newStates()
	refreshed := make(chan client.Token, 16)
	alice := e.dial("alice", func(o *client.Options) {
		o.OnStateChange = st.record
		o.OnRefresh = func(tk client.Token) {
			select {
			case refreshed <- tk:
			default: // a refresh loop must fail the count below, not block
			}
		}
	})
	first := alice.Token()
	ctx := ctxT(t)
	s, err := alice.Subscribe(ctx, "rooms.r")
	must(t, err)
	must(t, alice.Ping(ctx)) // the join that follows the sub reply has arrived: nothing in flight
	const lifetimes = 4
	for n := range lifetimes {
		// 30 s before the token's end: inside the warning, not past it.
		e.clock.Advance(alice.Token().Expiry.Sub(e.clock.Now()) - 30*time.Second)
		select {
		case tk := <-refreshed:
			if tk.Session != first.Session {
				t.Fatal("OnRefresh session")
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("no refresh in lifetime %d", n)
		}
		must(t, alice.Publish(ctx, "rooms.r", map[string]int{"n": n}))
		if m := next(t, s); m.From != "alice" {
			t.Fatal(m.From)
		}
	}
	if got := alice.Stats(); got.Refreshes != lifetimes || got.Reconnects != 0 || got.Rejected != 0 {
		t.Fatalf("refreshes %d reconnects %d rejected %d, want %d, 0 and 0", got.Refreshes, got.Reconnects, got.Rejected, lifetimes)
	}
	last := alice.Token()
	if last.Session != first.Session || last.Token == first.Token || last.RefreshToken == first.RefreshToken || !last.Expiry.After(first.Expiry) {
		t.Fatalf("token did not move on: %v -> %v", first, last)
	}
	if l := st.list(); slices.Contains(l, client.StateReconnecting) || slices.Contains(l, client.StateClosed) {
		t.Fatalf("states %v", l)
	}
}

// TestRefreshFailureFailsClosed gives the client a refresh token the server
// does not know: once the token nears its end (a test clock), the in-band
// refresh fails and the client closes.
func TestRefreshFailureFailsClosed(t *testing.T) {
	e := newEnvClock(t, func(c *server.Config) { c.SweepInterval = 20 * time.Millisecond })
	ctx := ctxT(t)
	tok, err := client.Password("alice", "pw").Token(ctx, &client.TokenRequest{BaseURL: httpBase(e.url), HTTPClient: e.hs.Client()})
	must(t, err)
	tok.RefreshToken = "bm90LWEtcmVmcmVzaC10b2tlbi1hdC1hbGwtbm90LWV2ZW4tY2xvc2U"
	st := newStates()
	st.t = t
	c, err := client.Dial(ctx, e.url, &client.Options{Tokens: client.SessionToken(*tok), OnStateChange: st.record, Reconnect: fastReconnect, Now: e.clock.Now})
	must(t, err)
	defer c.Close()
	e.clock.Advance(tok.Expiry.Sub(e.clock.Now()) - 30*time.Second)
	select {
	case <-c.Done():
	case <-time.After(10 * time.Second):
		t.Fatal("client did not fail closed")
	}
	if !errors.Is(c.Err(), client.ErrRefreshFailed) || protocol.CodeOf(c.Err()) != protocol.CodeBadToken {
		t.Fatalf("err %v", c.Err())
	}
	if err := c.Publish(ctx, "rooms.x", text{"x"}); !errors.Is(err, client.ErrRefreshFailed) {
		t.Fatalf("publish after failed refresh: %v", err)
	}
	if l := st.list(); l[len(l)-1] != client.StateClosed || slices.Contains(l, client.StateReconnecting) {
		t.Fatalf("states %v", l)
	}
}

// TestServerRestart closes the server and starts a new one on the same
// address with the same keys: the clients reconnect, resubscribe, and no
// message is delivered twice.
func TestServerRestart(t *testing.T) {
	e := newEnv(t, nil)
	ast, bst := newStates(), newStates()
	alice := e.dial("alice", func(o *client.Options) { o.OnStateChange = ast.record })
	bob := e.dial("bob", func(o *client.Options) { o.OnStateChange = bst.record })
	ctx := ctxT(t)
	as, err := alice.Subscribe(ctx, "rooms.r")
	must(t, err)
	bs, err := bob.Subscribe(ctx, "rooms.r")
	must(t, err)
	inbox := bob.Inbox()

	got := map[*client.Subscription][]string{}
	recv := func(s *client.Subscription, n int) {
		for i := 0; i < n; i++ {
			m := next(t, s)
			got[s] = append(got[s], string(m.Body))
		}
	}
	for i := 0; i < 3; i++ {
		must(t, alice.Publish(ctx, "rooms.r", map[string]int{"before": i}))
	}
	recv(as, 3)
	recv(bs, 3)
	seqBefore := alice.Token().Seq

	e.restart()
	// Each waits for its own Reconnecting first: the Connected of the first
	// dial is still in the states' buffer.
	ast.wait(t, client.StateReconnecting, 5*time.Second)
	ast.wait(t, client.StateConnected, 10*time.Second)
	bst.wait(t, client.StateReconnecting, 5*time.Second)
	bst.wait(t, client.StateConnected, 10*time.Second)

	for i := 0; i < 3; i++ {
		must(t, alice.Publish(ctx, "rooms.r", map[string]int{"after": i}))
	}
	must(t, bob.Publish(ctx, "rooms.r", map[string]string{"from": "bob"}))
	recv(as, 4)
	recv(bs, 4)
	must(t, alice.Send(ctx, "bob", text{"dm after restart"}))
	if m := next(t, inbox); m.From != "alice" {
		t.Fatal(m.From)
	}
	none(t, as, 200*time.Millisecond)
	none(t, bs, 50*time.Millisecond)
	for s, l := range got {
		want := []string{`{"before":0}`, `{"before":1}`, `{"before":2}`, `{"after":0}`, `{"after":1}`, `{"after":2}`, `{"from":"bob"}`}
		if !slices.Equal(l, want) {
			t.Fatalf("%s got %v", s.Channel(), l)
		}
	}
	if alice.Stats().Reconnects != 1 || bob.Stats().Reconnects != 1 {
		t.Fatalf("reconnects %d %d", alice.Stats().Reconnects, bob.Stats().Reconnects)
	}
	// Same session, seq continued.
	if tk := alice.Token(); tk.Seq <= seqBefore {
		t.Fatalf("seq %d after %d", tk.Seq, seqBefore)
	}
	members, err := alice.Presence(ctx, "rooms.r")
	must(t, err)
	slices.Sort(members)
	if !slices.Equal(members, []string{"alice", "bob"}) {
		t.Fatalf("members after restart %v", members)
	}
}

// TestRevokedDoesNotReconnect revokes alice: her client closes with
// ErrRevoked and never dials again.
func TestRevokedDoesNotReconnect(t *testing.T) {
	e := newEnv(t, nil)
	st := newStates()
	alice := e.dial("alice", func(o *client.Options) { o.OnStateChange = st.record })
	ctx := ctxT(t)
	s, err := alice.Subscribe(ctx, "rooms.r")
	must(t, err)
	n, err := e.srv.RevokeSubject(context.Background(), "alice")
	must(t, err)
	if n != 1 {
		t.Fatalf("revoked %d sessions", n)
	}
	select {
	case <-alice.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("client still open after revocation")
	}
	if !errors.Is(alice.Err(), client.ErrRevoked) {
		t.Fatalf("err %v", alice.Err())
	}
	var ce *client.CloseError
	if !errors.As(alice.Err(), &ce) || ce.Code != 4003 {
		t.Fatalf("close error %v", alice.Err())
	}
	time.Sleep(300 * time.Millisecond) // several backoff periods
	if l := st.list(); slices.Contains(l, client.StateReconnecting) {
		t.Fatalf("states %v", l)
	}
	if len(e.srv.Sessions()) != 0 {
		t.Fatalf("sessions %v", e.srv.Sessions())
	}
	if _, ok := <-s.C(); ok {
		t.Fatal("subscription still open")
	}
	if !errors.Is(s.Err(), client.ErrRevoked) {
		t.Fatalf("subscription err %v", s.Err())
	}
	if err := alice.Publish(ctx, "rooms.r", text{"x"}); !errors.Is(err, client.ErrRevoked) {
		t.Fatalf("publish after revoke: %v", err)
	}
}

// TestKickedDoesNotReconnect: 4004 closes the client.
func TestKickedDoesNotReconnect(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	sid, _ := alice.Session()
	if n, err := e.srv.Kick(context.Background(), sid); err != nil || n != 1 {
		t.Fatal("kick")
	}
	<-alice.Done()
	var ce *client.CloseError
	if !errors.As(alice.Err(), &ce) || ce.Code != 4004 {
		t.Fatalf("err %v", alice.Err())
	}
}

// TestExpiredTokenReconnectsWithNewToken: the server is down while the token
// expires; on its return the client renews the token over /v1/refresh and
// carries on in the same session.
func TestExpiredTokenReconnectsWithNewToken(t *testing.T) {
	e := newEnvClock(t, func(c *server.Config) { c.Refresh = sharedRefresh })
	alice := e.dial("alice", nil)
	sid, _ := alice.Session()
	ctx := ctxT(t)
	s, err := alice.Subscribe(ctx, "rooms.r")
	must(t, err)
	addr := e.hs.Listener.Addr().String()
	e.stop()
	e.clock.Advance(alice.Token().Expiry.Sub(e.clock.Now()) + time.Minute) // the token expires meanwhile
	e.restartStopped(addr)
	pubCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	must(t, alice.Publish(pubCtx, "rooms.r", text{"back"}))
	if m := next(t, s); string(m.Body) != `{"text":"back"}` {
		t.Fatal(string(m.Body))
	}
	if got, _ := alice.Session(); got != sid {
		t.Fatalf("new session %s, want the same %s", got, sid)
	}
	if alice.Err() != nil {
		t.Fatal(alice.Err())
	}
	if st := alice.Stats(); st.Refreshes != 1 || st.Reconnects != 1 {
		t.Fatalf("stats %+v: want the expired token renewed once, on the one reconnect", st)
	}
	_ = fmt.Sprint
}

// TestKeyRotationBeforeWelcome: the server rotates its signing key and
// restarts. The client's JWKS predates the new key, so the welcome of its
// reconnect names a key it does not know: it fetches the JWKS again, once,
// and carries on in its session, with no protocol violation. A client
// whose JWKS is pinned does not fetch: the welcome is a violation, and it
// keeps retrying.
func TestKeyRotationBeforeWelcome(t *testing.T) {
	e := newEnv(t, nil)
	violations := func(n *atomic.Int32) func(error) {
		return func(err error) {
			if errors.Is(err, client.ErrProtocolViolation) {
				n.Add(1)
			}
		}
	}
	var aliceV, pinnedV atomic.Int32
	st := newStates()
	alice := e.dial("alice", func(o *client.Options) { o.OnStateChange, o.OnError = st.record, violations(&aliceV) })
	pinned := e.dial("bob", func(o *client.Options) { o.JWKS, o.OnError = e.srv.KeySet(), violations(&pinnedV) })
	k2, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	e.keys = append(e.keys, k2)
	e.restart()
	st.wait(t, client.StateReconnecting, 5*time.Second)
	st.wait(t, client.StateConnected, 10*time.Second)
	ctx := ctxT(t)
	must(t, alice.Ping(ctx)) // the pong is signed by the new key
	if n := aliceV.Load(); n != 0 || alice.Stats().Reconnects != 1 {
		t.Fatalf("%d protocol violations, %d reconnects; want 0 and 1", n, alice.Stats().Reconnects)
	}
	for pinnedV.Load() == 0 {
		select {
		case <-ctx.Done():
			t.Fatal("the client with a pinned JWKS reported no protocol violation")
		case <-time.After(10 * time.Millisecond):
		}
	}
	if s := pinned.State(); s != client.StateReconnecting {
		t.Fatalf("pinned client state %v, want reconnecting", s)
	}
}
