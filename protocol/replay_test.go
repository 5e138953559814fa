package protocol_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

func TestReplayStoreAtomic(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	m := protocol.NewMemoryReplayStore(0, func() time.Time { return now })
	var wins atomic.Int32
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			// 64 goroutines race to use seq 1 with different ids.
			err := m.Check(context.Background(), protocol.ReplayCheck{Session: "s", ID: fmt.Sprint("id-", i), Seq: 1, IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Hour)})
			if err == nil {
				wins.Add(1)
			} else if protocol.CodeOf(err) != protocol.CodeReplaySeq {
				t.Errorf("unexpected error %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins.Load() != 1 {
		t.Fatalf("%d goroutines accepted seq 1; want exactly 1", wins.Load())
	}
}

func TestReplayStoreBoundedAndExpiring(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	m := protocol.NewMemoryReplayStore(8, func() time.Time { return now })
	ctx := context.Background()
	for i := 1; i <= 100; i++ {
		if err := m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: fmt.Sprint("id-", i), Seq: uint64(i), IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Minute)}); err != nil {
			t.Fatal(err)
		}
	}
	// An evicted id with an old seq is still a replay, by seq.
	if err := m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: "id-1", Seq: 1, IDExpiry: now.Add(time.Minute)}); protocol.CodeOf(err) != protocol.CodeReplaySeq {
		t.Fatalf("evicted id: %v", err)
	}
	// A recent id is a replay by id even with a new seq.
	if err := m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: "id-100", Seq: 101, IDExpiry: now.Add(time.Minute)}); protocol.CodeOf(err) != protocol.CodeReplayID {
		t.Fatalf("recent id: %v", err)
	}
	if last, _ := m.LastSeq(ctx, "s"); last != 100 {
		t.Fatalf("LastSeq = %d", last)
	}
	// Exactly the 8 newest ids are remembered (after the ring wrapped many
	// times); the one before them is forgotten.
	seq := uint64(200)
	for i := 93; i <= 100; i++ {
		seq++
		if err := m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: fmt.Sprint("id-", i), Seq: seq, IDExpiry: now.Add(time.Minute)}); protocol.CodeOf(err) != protocol.CodeReplayID {
			t.Fatalf("id-%d: %v, want replay_id", i, err)
		}
	}
	if err := m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: "id-92", Seq: seq, IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Minute)}); err != nil {
		t.Fatalf("id-92 should have been evicted: %v", err)
	}
	// Expired ids are dropped before the bound is reached.
	now = now.Add(90 * time.Second)
	if err := m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: "id-100", Seq: seq + 1, IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Minute)}); err != nil {
		t.Fatalf("expired id-100: %v", err)
	}
	// Sessions are forgotten after their expiry.
	now = now.Add(2 * time.Minute)
	m.Sweep()
	if m.Len() != 0 {
		t.Fatalf("%d sessions after expiry", m.Len())
	}
}

func TestPolicyPatterns(t *testing.T) {
	p, err := protocol.NewPolicy([]protocol.Rule{
		{Action: "pub", Channel: "rooms.*", Roles: []string{"user"}},
		{Action: "sub", Channel: "feeds.>", Roles: []string{"user"}},
		{Action: "ping", Roles: []string{}},
	})
	if err != nil {
		t.Fatal(err)
	}
	user := []string{"user"}
	cases := []struct {
		act, ch string
		roles   []string
		ok      bool
	}{
		{"pub", "rooms.lobby", user, true},
		{"pub", "rooms", user, false},
		{"pub", "rooms.a.b", user, false},
		{"pub", "rooms.lobby", []string{"guest"}, false},
		{"pub", "", user, false},
		{"sub", "feeds.a", user, true},
		{"sub", "feeds.a.b.c", user, true},
		{"sub", "feeds", user, false},
		{"ping", "", nil, true},
		{"dm", "", user, false},
	}
	for _, c := range cases {
		err := p.Allow(c.act, c.ch, c.roles)
		if (err == nil) != c.ok {
			t.Errorf("Allow(%q, %q, %v) = %v; want ok=%v", c.act, c.ch, c.roles, err, c.ok)
		}
	}
	for _, bad := range []string{`{"rules":[{"action":"pub","channel":"a.>.b","roles":[]}]}`, `{"rules":[{"action":"pub"}]}`,
		`{"rules":[{"action":"pub","roles":[],"extra":1}]}`, `{"rules":[],"rules":[]}`, `{"rules":[{"action":"Pub","roles":[]}]}`} {
		if _, err := protocol.ParsePolicy([]byte(bad)); err == nil {
			t.Errorf("ParsePolicy(%s) accepted", bad)
		}
	}
}

func TestKeyParsing(t *testing.T) {
	ed, _ := protocol.KeyFromSeed(protocol.EdDSA, "k", "")
	priv, _ := ed.MarshalPrivateJWK()
	if _, err := protocol.ParsePublicJWK(priv); err == nil {
		t.Error("a private JWK was accepted as a public key")
	}
	back, err := protocol.ParsePrivateJWK(priv)
	if err != nil || back.Public().Thumbprint() != ed.Public().Thumbprint() {
		t.Fatalf("private JWK round trip: %v", err)
	}
	for _, bad := range []string{
		`{"kty":"OKP","crv":"Ed25519","alg":"ES256","x":"4Un957t22fSv1GRE5VXU04PisjZ-4hlgxMHPLPGU3j4"}`,
		`{"kty":"OKP","crv":"Ed25519","x":"4Un957t22fSv1GRE5VXU04PisjZ-4hlgxMHPLPGU3j4","x":"AAAA"}`,
		`{"kty":"oct","k":"AAAA"}`,
		`{"kty":"OKP","crv":"Ed25519","use":"enc","x":"4Un957t22fSv1GRE5VXU04PisjZ-4hlgxMHPLPGU3j4"}`,
	} {
		if _, err := protocol.ParsePublicJWK([]byte(bad)); err == nil {
			t.Errorf("ParsePublicJWK(%s) accepted", bad)
		}
	}
	// A JWKS entry needs kid and alg.
	if _, err := protocol.ParseKeySet([]byte(`{"keys":[{"kty":"OKP","crv":"Ed25519","x":"4Un957t22fSv1GRE5VXU04PisjZ-4hlgxMHPLPGU3j4"}]}`)); err == nil {
		t.Error("JWKS key without kid/alg accepted")
	}
	// The thumbprint is RFC 7638's (RFC 8037 appendix A.3 example key).
	k, err := protocol.ParsePublicJWK([]byte(`{"kty":"OKP","crv":"Ed25519","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`))
	if err != nil || k.Thumbprint() != "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k" {
		t.Fatalf("thumbprint = %v, %v", k.Thumbprint(), err)
	}
}

func TestSessionRefresh(t *testing.T) {
	f := newFixture(t, "EdDSA")
	s := f.hello(t)
	// A refreshed token for the same session and key moves the session on.
	f.now = f.now.Add(10 * time.Minute)
	tok, c, err := f.issuer.Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"user"}, JKT: f.client.Public().Thumbprint(), Session: s.ID()})
	must(t, err)
	must(t, f.verifier.Refresh(context.Background(), s, tok))
	if s.TokenID() != c.ID || !s.Expiry().Equal(c.ExpiresAt()) {
		t.Fatalf("session not moved to the new token: %+v", s)
	}
	// A token for another session is refused.
	other, _, err := f.issuer.Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"user"}, JKT: f.client.Public().Thumbprint()})
	must(t, err)
	if err := f.verifier.Refresh(context.Background(), s, other); protocol.CodeOf(err) != protocol.CodeBadToken {
		t.Fatalf("refresh with another session's token: %v", err)
	}
	// After the old token's expiry the session still works on the new one.
	f.now = f.now.Add(6 * time.Minute)
	fr, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPing})
	must(t, err)
	if _, err := f.verifier.Verify(context.Background(), fr, s); err != nil {
		t.Fatal(err)
	}
	// Revoking the subject stops it at once.
	f.revoked.RevokeSubject("alice", f.now)
	fr, _ = f.signer.Sign(&protocol.Envelope{Action: protocol.ActPing})
	if _, err := f.verifier.Verify(context.Background(), fr, s); protocol.CodeOf(err) != protocol.CodeTokenRevoked {
		t.Fatalf("after revocation: %v", err)
	}
}

// The subject "server" is reserved for the server application's own
// deliveries (spec.md §10.3): no token is issued for it.
func TestServerSubjectReserved(t *testing.T) {
	f := newFixture(t, "EdDSA")
	if _, _, err := f.issuer.Issue(protocol.IssueRequest{Subject: protocol.ServerSubject, Roles: []string{"user"}, JKT: f.client.Public().Thumbprint()}); err == nil {
		t.Fatal(`a token was issued for sub "server"`)
	}
}

func TestMemoryRevocationsForgetExpiredTokens(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	r := protocol.NewMemoryRevocationsWithClock(func() time.Time { return now })
	ctx := context.Background()
	r.RevokeToken("live", now.Add(time.Hour))
	for i := 0; i < 5000; i++ {
		r.RevokeToken(fmt.Sprint("old-", i), now.Add(time.Second))
	}
	// Expired ids are swept by time, not by count: a minute of the store's
	// clock later, the next revocation forgets them.
	now = now.Add(protocol.ReplaySweepInterval)
	r.RevokeToken("next", now.Add(time.Hour))
	if n := r.Len(); n != 2 {
		t.Fatalf("%d entries after a sweep interval, want 2", n)
	}
	r.RevokeToken("soon", now.Add(time.Second))
	now = now.Add(2 * time.Second)
	r.Sweep()
	if n := r.Len(); n != 2 {
		t.Fatalf("%d entries after Sweep, want 2", n)
	}
	if revoked, _ := r.IsRevoked(ctx, "live", "alice", now); !revoked {
		t.Fatal("a live revoked token was forgotten")
	}
	// Revoking again never shortens the time a token is remembered.
	r.RevokeToken("live", now.Add(-time.Hour))
	r.Sweep()
	if revoked, _ := r.IsRevoked(ctx, "live", "alice", now); !revoked {
		t.Fatal("re-revoking shortened the entry")
	}
	r.RevokeSubject("bob", now)
	if revoked, _ := r.IsRevoked(ctx, "x", "bob", now.Add(-time.Minute)); !revoked {
		t.Fatal("a token of a revoked subject issued before the revocation is accepted")
	}
	if revoked, _ := r.IsRevoked(ctx, "y", "bob", now.Add(time.Minute)); revoked {
		t.Fatal("a token issued after the subject's revocation is refused")
	}
	// The latest revocation of a subject is kept: an earlier one, written
	// later (a late notice from another node, say), revokes nothing less.
	r.RevokeSubject("bob", now.Add(-time.Hour))
	if revoked, _ := r.IsRevoked(ctx, "x", "bob", now.Add(-time.Minute)); !revoked {
		t.Fatal("an earlier subject revocation replaced the later one")
	}
}

// A session that stops sending (it disconnected) is compacted by time: once
// its ids' windows have ended it holds only its seq high-water mark, which
// still rejects a replay, until its expiry; ids still inside the window are
// kept. Sweeps run by the store's clock, not by a count of checks.
func TestReplayStoreCompactsIdleSessions(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	m := protocol.NewMemoryReplayStore(0, func() time.Time { return now })
	ctx := context.Background()
	check := func(sid string, seq int, idLife time.Duration) error {
		return m.Check(ctx, protocol.ReplayCheck{Session: sid, ID: fmt.Sprint(sid, "-", seq), Seq: uint64(seq),
			IDExpiry: now.Add(idLife), SessionExpiry: now.Add(15 * time.Minute)})
	}
	for i := 1; i <= 1000; i++ {
		must(t, check("gone", i, time.Minute))
	}
	for i := 1; i <= 10; i++ {
		must(t, check("late", i, 5*time.Minute)) // ids with a longer window
	}
	if n := m.IDs(); n != 1010 {
		t.Fatalf("%d ids, want 1010", n)
	}
	// A minute and a bit later both are idle; the next check sweeps.
	now = now.Add(protocol.ReplaySweepInterval + time.Second)
	must(t, check("live", 1, time.Minute))
	if n, ids := m.Len(), m.IDs(); n != 3 || ids != 11 {
		t.Fatalf("after a sweep: %d sessions, %d ids; want 3 sessions, 11 ids (late's 10 and live's 1)", n, ids)
	}
	if last, _ := m.LastSeq(ctx, "gone"); last != 1000 {
		t.Fatalf("compacted session lost its seq: %d", last)
	}
	if err := check("gone", 1000, time.Minute); protocol.CodeOf(err) != protocol.CodeReplaySeq {
		t.Fatalf("replay to a compacted session: %v", err)
	}
	if err := check("late", 10, time.Minute); protocol.CodeOf(err) != protocol.CodeReplayID && protocol.CodeOf(err) != protocol.CodeReplaySeq {
		t.Fatalf("replay of an id inside the window: %v", err)
	}
	must(t, check("gone", 1001, time.Minute)) // a compacted session goes on
	// After the sessions' expiry only their state goes.
	now = now.Add(15*time.Minute + time.Second)
	m.Sweep()
	if n := m.Len(); n != 0 {
		t.Fatalf("%d sessions after expiry", n)
	}
}

// A session's few ids are found by a scan of its ring, more through an
// index built past smallReplayIDs (8): both answer the same, across the
// switch and back after a compaction.
func TestReplayStoreSmallAndIndexed(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	m := protocol.NewMemoryReplayStore(0, func() time.Time { return now })
	ctx := context.Background()
	seq := uint64(0)
	check := func(id string, life time.Duration) error {
		seq++
		return m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: id, Seq: seq, IDExpiry: now.Add(life), SessionExpiry: now.Add(time.Hour)})
	}
	for i := 1; i <= 20; i++ {
		must(t, check(fmt.Sprint("id-", i), time.Duration(i)*time.Minute))
		for j := 1; j <= i; j++ { // every id held so far is a replay
			if err := check(fmt.Sprint("id-", j), time.Minute); protocol.CodeOf(err) != protocol.CodeReplayID {
				t.Fatalf("after %d ids, id-%d again: %v, want replay_id", i, j, err)
			}
		}
		if err := check(fmt.Sprint("new-", i), time.Minute); err != nil {
			t.Fatalf("after %d ids, a new id: %v", i, err)
		}
	}
	// 14 minutes on, the sweep keeps id-15..id-20 (6, no index) and
	// new-*'s are gone.
	now = now.Add(14*time.Minute + time.Second)
	m.Sweep()
	if n := m.IDs(); n != 6 {
		t.Fatalf("%d ids after the sweep, want 6", n)
	}
	for j := 1; j <= 20; j++ {
		err := check(fmt.Sprint("id-", j), time.Minute)
		if want := j >= 15; (protocol.CodeOf(err) == protocol.CodeReplayID) != want {
			t.Fatalf("after the sweep, id-%d again: %v (replay expected: %v)", j, err, want)
		}
	}
}

// An id whose window ended may be recorded again while its old entry is
// still held behind younger ones; evicting the old entry must not forget
// the new one.
func TestReplayStoreIDRecordedAgain(t *testing.T) {
	now := time.UnixMilli(1767225600000)
	m := protocol.NewMemoryReplayStore(12, func() time.Time { return now })
	ctx := context.Background()
	seq := uint64(0)
	check := func(id string, life time.Duration) error {
		seq++
		return m.Check(ctx, protocol.ReplayCheck{Session: "s", ID: id, Seq: seq, IDExpiry: now.Add(life), SessionExpiry: now.Add(time.Hour)})
	}
	must(t, check("x", 5*time.Minute))
	must(t, check("a", 10*time.Second))
	for i := 1; i <= 7; i++ {
		must(t, check(fmt.Sprint("f", i), 5*time.Minute))
	}
	now = now.Add(20 * time.Second)
	must(t, check("a", time.Minute)) // its window ended: a new frame may use it
	for i := 1; i <= 4; i++ {        // the ring is full: x, then the old a, go
		must(t, check(fmt.Sprint("g", i), 5*time.Minute))
	}
	if err := check("a", time.Minute); protocol.CodeOf(err) != protocol.CodeReplayID {
		t.Fatalf("a, recorded again 0 s ago: %v, want replay_id", err)
	}
}
