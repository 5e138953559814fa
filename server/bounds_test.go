package server_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// stepClock is a clock that moves only when a test moves it. It starts at
// the real time, and only moves forward, so that socket deadlines computed
// from it are never in the past.
type stepClock struct {
	mu  sync.Mutex
	now time.Time
}

func newStepClock() *stepClock { return &stepClock{now: time.Now()} }

func (c *stepClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *stepClock) Add(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func mustSign(t testing.TB, s *protocol.ClientSigner, env *protocol.Envelope) []byte {
	t.Helper()
	fr, err := s.Sign(env)
	must(t, err)
	return fr
}

// loginOn logs user in and makes its client sign and check frames on clk.
func (e *env) loginOn(user string, clk *stepClock) *client {
	e.t.Helper()
	c := e.login(user)
	c.signer.Now, c.fv.Now = clk.Now, clk.Now
	return c
}

// waitUntil polls cond until it holds, failing after a generous limit.
func waitUntil(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// A subject holds at most MaxRefreshFamilies live refresh families: a login
// beyond it evicts the oldest, whose refresh token is then refused, while
// the newer ones, and other subjects, are untouched.
func TestRefreshFamiliesPerSubjectBounded(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.MaxRefreshFamilies = 3 })
	bob := e.login("bob")
	var logins []*client
	for i := 0; i < 5; i++ {
		logins = append(logins, e.login("alice"))
	}
	for i, c := range append(logins, bob) {
		rt := c.tok.RefreshToken
		var ae apiErr
		st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": c.refreshProof(rt)}, &ae)
		want := 200
		if i < 2 {
			want = 401 // evicted by logins 3 and 4
		}
		if st != want {
			t.Errorf("login %d: refresh %d %v, want %d", i, st, ae, want)
		}
	}
}

// The memory refresh store's size depends on the subjects and MaxFamilies,
// not on how often they log in; expired families go by time.
func TestMemoryRefreshStoreBounded(t *testing.T) {
	clk := newStepClock()
	m := server.NewMemoryRefreshStore(clk.Now)
	ctx := context.Background()
	for i := 0; i < 5000; i++ {
		sub := fmt.Sprint("user-", i%5)
		_, hash, err := server.NewRefreshToken()
		must(t, err)
		fam := fmt.Sprint("fam-", i)
		must(t, m.Create(ctx, server.RefreshRecord{Hash: hash, Family: fam, Subject: sub, TokenID: fam, Expires: clk.Now().Add(24 * time.Hour)}))
		if i%7 == 0 && i < 4000 { // some families are revoked, as a reuse would
			_, err := m.RevokeFamily(ctx, fam)
			must(t, err)
		}
	}
	if f, tok := m.Len(); f > 5*(server.DefaultMaxFamilies+1) || tok != f {
		t.Fatalf("after 5000 logins of 5 users: %d families, %d tokens; want at most %d", f, tok, 5*(server.DefaultMaxFamilies+1))
	}
	for i := 0; i < 5; i++ {
		if n := m.LiveFamilies(fmt.Sprint("user-", i)); n != server.DefaultMaxFamilies {
			t.Fatalf("user-%d has %d live families", i, n)
		}
	}
	// A day later every family has expired; the next login sweeps them.
	clk.Add(24*time.Hour + time.Minute)
	_, hash, _ := server.NewRefreshToken()
	must(t, m.Create(ctx, server.RefreshRecord{Hash: hash, Family: "new", Subject: "user-0", Expires: clk.Now().Add(time.Hour)}))
	if f, tok := m.Len(); f != 1 || tok != 1 {
		t.Fatalf("after expiry: %d families, %d tokens", f, tok)
	}
}

// Once a session disconnects, the replay store keeps only its seq
// high-water mark (and the ids still inside the window): after the window
// and one sweep interval of the server's clock, its ids are gone, while its
// seq still rejects a replay of its frames on a new connection.
func TestReplayStateAfterDisconnect(t *testing.T) {
	clk := newStepClock()
	replay := protocol.NewMemoryReplayStore(0, clk.Now)
	e := newEnv(t, func(c *server.Config) { c.Now, c.Replay = clk.Now, replay })
	alice := e.loginOn("alice", clk).connect()
	for i := 0; i < 50; i++ {
		alice.ping()
	}
	if n := replay.IDs(); n < 51 {
		t.Fatalf("%d ids held for a live session, want at least 51", n)
	}
	_ = alice.ws.Close()
	waitUntil(t, "the session to end", func() bool { return e.srv.Stats().Sessions == 0 })

	clk.Add(protocol.DefaultSkew + protocol.ReplaySweepInterval + time.Second)
	bob := e.loginOn("bob", clk).connect() // its hello's check sweeps
	bob.ping()
	if n, ids := replay.Len(), replay.IDs(); n != 2 || ids > 2 {
		t.Fatalf("replay state: %d sessions, %d ids; want 2 sessions and only bob's ids (2)", n, ids)
	}
	// alice's token still opens a session, where a fresh frame with a seq
	// she used before is still a replay.
	again := &client{t: t, e: e, key: alice.key, raw: alice.raw, jwk: alice.jwk, tok: alice.tok, signer: alice.signer, fv: alice.fv}
	again.connect()
	old := &protocol.ClientSigner{Key: alice.key, Session: alice.tok.Session, Subject: "alice", Now: clk.Now}
	old.SetSeq(9)
	again.write(mustSign(t, old, &protocol.Envelope{Action: protocol.ActPing}))
	again.expectError(protocol.CodeReplaySeq)
}
