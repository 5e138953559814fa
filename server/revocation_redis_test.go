package server

import (
	"context"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"testing"
	"time"

	"github.com/google/uuid"
)

// A revocation written on one node is seen by the other's IsRevoked, with
// the same answers as the memory store gives.
func TestRedisRevocationAcrossNodes(t *testing.T) { testRevocationAcrossNodes(t, standalone(t)) }

func testRevocationAcrossNodes(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisRevocationStore(ra), NewRedisRevocationStore(rb)
	mem := NewMemoryRevocationStore()

	jti, other := uuid.NewString(), uuid.NewString()
	at := time.Unix(1_700_000_000, 500_000_000)
	for _, s := range []RevocationStore{a, mem} {
		noErr(t, s.RevokeToken(ctx, jti, time.Now().Add(time.Hour)))
		noErr(t, s.RevokeSubject(ctx, "alice", at))
	}
	for _, q := range []struct {
		jti, sub string
		iat      time.Time
		want     bool
	}{
		{jti, "bob", at, true},                               // by token id
		{other, "bob", at, false},                            // nothing
		{other, "alice", at.Add(-time.Hour), true},           // issued before
		{other, "alice", at, true},                           // issued at the instant
		{other, "alice", time.Unix(1_700_000_000, 0), true},  // the same second, earlier
		{other, "alice", time.Unix(1_700_000_001, 0), false}, // issued after
		{other, "alice}", at, false},                         // another subject
	} {
		got, err := b.IsRevoked(ctx, q.jti, q.sub, q.iat)
		noErr(t, err)
		memGot, _ := mem.IsRevoked(ctx, q.jti, q.sub, q.iat)
		if got != q.want || memGot != q.want {
			t.Fatalf("IsRevoked(%s, %s, %v) = %v (memory %v), want %v", q.jti, q.sub, q.iat, got, memGot, q.want)
		}
	}

	// The latest subject revocation is kept: an earlier one written later
	// does not un-revoke anything.
	// The memory store keeps the latest too.
	for _, w := range [][2]RevocationStore{{b, a}, {mem, mem}} {
		noErr(t, w[0].RevokeSubject(ctx, "alice", at.Add(-24*time.Hour)))
		if got, err := w[1].IsRevoked(ctx, other, "alice", at.Add(-time.Minute)); err != nil || !got {
			t.Fatalf("%T: an older subject revocation lowered the newer one: %v, %v", w[0], got, err)
		}
		noErr(t, w[0].RevokeSubject(ctx, "alice", at.Add(time.Hour)))
		if got, err := w[1].IsRevoked(ctx, other, "alice", at.Add(time.Minute)); err != nil || !got {
			t.Fatalf("%T: a newer subject revocation was not kept: %v, %v", w[0], got, err)
		}
	}
	if err := a.RevokeSubject(ctx, "alice", time.Time{}); err == nil {
		t.Fatal("RevokeSubject accepted the zero time")
	}
}

// A token's revocation lasts until its expiry, measured by Redis; a
// shorter revocation of the same token does not shorten a longer one.
func TestRedisRevocationExpiry(t *testing.T) { testRevocationExpiry(t, standalone(t)) }

func testRevocationExpiry(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisRevocationStore(ra), NewRedisRevocationStore(rb)
	hour := uuid.NewString()
	noErr(t, a.RevokeToken(ctx, hour, time.Now().Add(time.Hour)))
	checkTTL(t, ra, a.tokenKey(hour), time.Hour)
	if got, err := b.IsRevoked(ctx, hour, "bob", time.Now()); err != nil || !got {
		t.Fatalf("IsRevoked = %v, %v; want true", got, err)
	}

	jti := uuid.NewString()
	noErr(t, a.RevokeToken(ctx, jti, time.Now().Add(100*time.Millisecond)))
	sigiltest.Eventually(t, "the revoked token's key to expire", func() bool { return !exists(t, ra, a.tokenKey(jti)) })
	if got, err := b.IsRevoked(ctx, jti, "bob", time.Now()); err != nil || got {
		t.Fatalf("IsRevoked after expiry = %v, %v; want false", got, err)
	}

	long := uuid.NewString()
	noErr(t, a.RevokeToken(ctx, long, time.Now().Add(time.Hour)))
	noErr(t, b.RevokeToken(ctx, long, time.Now().Add(time.Millisecond)))
	pttl, err := ra.client.Do(ctx, ra.client.B().Pttl().Key(a.tokenKey(long)).Build()).AsInt64()
	if err != nil || pttl < (59*time.Minute).Milliseconds() {
		t.Fatalf("PTTL after a shorter revocation = %d, %v; want about an hour", pttl, err)
	}
}

// watchEvents starts s.Watch and returns its events as a channel.
func watchEvents(t testing.TB, s *RedisRevocationStore) (<-chan RevocationEvent, context.CancelFunc) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	ch := make(chan RevocationEvent, 100)
	if err := s.Watch(ctx, func(ev RevocationEvent) { ch <- ev }); err != nil {
		t.Fatalf("Watch: %v", err)
	}
	return ch, cancel
}

func nextEvent(t testing.TB, ch <-chan RevocationEvent) RevocationEvent {
	t.Helper()
	select {
	case ev := <-ch:
		return ev
	case <-time.After(sigiltest.WaitLimit):
		t.Fatalf("no revocation event within %v", sigiltest.WaitLimit)
		return RevocationEvent{}
	}
}

// A revocation on one node reaches the Watch of the other; a notice that
// does not decode becomes a Resync; a cancelled Watch unsubscribes.
func TestRedisRevocationWatch(t *testing.T) { testRevocationWatch(t, standalone(t)) }

func testRevocationWatch(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisRevocationStore(ra), NewRedisRevocationStore(rb)
	events, cancel := watchEvents(t, b)

	jti, until := uuid.NewString(), time.Now().Add(time.Hour)
	sent := time.Now()
	noErr(t, a.RevokeToken(ctx, jti, until))
	ev := nextEvent(t, events)
	t.Logf("notice reached the other node after %v", time.Since(sent))
	if ev.TokenID != jti || !ev.Until.Equal(until) || ev.Subject != "" || ev.Resync {
		t.Fatalf("token event %+v", ev)
	}
	at := time.Now()
	noErr(t, a.RevokeSubject(ctx, "alice", at))
	if ev := nextEvent(t, events); ev.Subject != "alice" || !ev.At.Equal(at) || ev.TokenID != "" || ev.Resync {
		t.Fatalf("subject event %+v", ev)
	}

	for _, bad := range []string{`not json`, `{}`, `{"jti":"x","sub":"y"}`, `{"jti":"x","extra":1}`, `{"jti":"x","jti":"y"}`} {
		noErr(t, ra.client.Do(ctx, ra.client.B().Publish().Channel(a.channel).Message(bad).Build()).Error())
		if ev := nextEvent(t, events); !ev.Resync || ev.TokenID != "" || ev.Subject != "" {
			t.Fatalf("notice %s gave %+v, want a Resync", bad, ev)
		}
	}

	cancel()
	sigiltest.Eventually(t, "the cancelled Watch to unsubscribe", func() bool {
		n, err := ra.client.Do(ctx, ra.client.B().PubsubNumsub().Channel(a.channel).Build()).AsIntMap()
		return err == nil && n[a.channel] == 0
	})
}
