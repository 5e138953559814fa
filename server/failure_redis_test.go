package server

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// redisStores are one node's Redis stores.
type redisStores struct {
	replay     *RedisReplayStore
	revocation *RedisRevocationStore
	refresh    *RedisRefreshStore
}

func newRedisStores(r *Redis) redisStores {
	return redisStores{NewRedisReplayStore(r, nil), NewRedisRevocationStore(r), NewRedisRefreshStore(r, 0)}
}

// calls returns every store call, each reporting what it answered.
func (s redisStores) calls(t testing.TB, r *Redis, sid string, seq *uint64) map[string]func() (string, error) {
	ctx := context.Background()
	return map[string]func() (string, error){
		"Ping": func() (string, error) { return "pong", r.Ping(ctx) },
		"ReplayStore.Check": func() (string, error) {
			*seq++
			return "accepted", s.replay.Check(ctx, replayCheck(sid, uuid.NewString(), *seq))
		},
		"ReplayStore.LastSeq": func() (string, error) {
			n, err := s.replay.LastSeq(ctx, sid)
			return fmt.Sprint(n), err
		},
		"RevocationStore.IsRevoked": func() (string, error) {
			v, err := s.revocation.IsRevoked(ctx, uuid.NewString(), "alice", time.Now())
			return fmt.Sprint(v), err
		},
		"RevocationStore.RevokeToken": func() (string, error) {
			return "revoked", s.revocation.RevokeToken(ctx, uuid.NewString(), time.Now().Add(time.Hour))
		},
		"RevocationStore.RevokeSubject": func() (string, error) {
			return "revoked", s.revocation.RevokeSubject(ctx, "mallory", time.Now())
		},
		"RevocationStore.Watch": func() (string, error) {
			ctx, cancel := context.WithCancel(ctx)
			t.Cleanup(cancel)
			return "watching", s.revocation.Watch(ctx, func(RevocationEvent) {})
		},
		"RefreshStore.Create": func() (string, error) {
			_, rec := newRefresh(t, "alice", "", time.Now().Add(time.Hour))
			return "created", s.refresh.Create(ctx, rec)
		},
		"RefreshStore.Create+Use": func() (string, error) {
			_, rec := newRefresh(t, "alice", "", time.Now().Add(time.Hour))
			if err := s.refresh.Create(ctx, rec); err != nil {
				return "", err
			}
			_, err := s.refresh.Use(ctx, rec.Hash)
			return "used", err
		},
		"RefreshStore.Get": func() (string, error) {
			rec, err := s.refresh.Get(ctx, "some-hash")
			return rec.Hash, err
		},
		"RefreshStore.Use": func() (string, error) {
			rec, err := s.refresh.Use(ctx, "some-hash")
			return rec.Hash, err
		},
		"RefreshStore.RevokeFamily": func() (string, error) {
			jtis, err := s.refresh.RevokeFamily(ctx, uuid.NewString())
			return fmt.Sprint(jtis), err
		},
	}
}

// checkAllFail asserts that every call fails with ErrRedisUnavailable:
// none answers, none accepts.
func checkAllFail(t *testing.T, rounds int, calls map[string]func() (string, error)) {
	t.Helper()
	for round := range rounds {
		for name, call := range calls {
			start := time.Now()
			got, err := call()
			if !errors.Is(err, ErrRedisUnavailable) {
				t.Fatalf("round %d: %s without Redis answered %q, %v; want ErrRedisUnavailable", round, name, got, err)
			}
			if round == 0 {
				t.Logf("%s failed after %v: %v", name, time.Since(start).Round(time.Millisecond), err)
			}
		}
	}
}

// With Redis stopped, every call of every store fails closed; when Redis
// is back, the same stores work again by themselves, and the other node's
// Watch re-subscribes and announces the gap with a Resync.
func TestRedisStoresFailClosed(t *testing.T) {
	srv, ra, rb := twoNodes(t)
	a, b := newRedisStores(ra), newRedisStores(rb)
	events, _ := watchEvents(t, b.revocation)
	sid := uuid.NewString()
	var seq uint64
	calls := a.calls(t, ra, sid, &seq)
	for name, call := range calls {
		if _, err := call(); err != nil && !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("%s with Redis up: %v", name, err)
		}
	}

	srv.Stop()
	checkAllFail(t, 3, calls)

	srv.Restart()
	sigiltest.Eventually(t, "a replay check to pass after the restart", func() bool {
		_, err := calls["ReplayStore.Check"]()
		return err == nil
	})
	for name, call := range calls {
		if got, err := call(); err != nil && !errors.Is(err, ErrRefreshInvalid) {
			t.Fatalf("%s after the restart: %q, %v", name, got, err)
		}
	}
	// The other node's Watch: drain the notices of the calls above until
	// the Resync of the new subscription, then a new notice arrives.
	for ev := nextEvent(t, events); !ev.Resync; ev = nextEvent(t, events) {
	}
	jti := uuid.NewString()
	noErr(t, a.revocation.RevokeToken(context.Background(), jti, time.Now().Add(time.Hour)))
	for ev := nextEvent(t, events); ev.TokenID != jti; ev = nextEvent(t, events) {
	}
	if v, err := b.revocation.IsRevoked(context.Background(), jti, "bob", time.Now()); err != nil || !v {
		t.Fatalf("IsRevoked on the other node after the restart: %v, %v", v, err)
	}
}

// A Redis that hangs (a partition: connections open, no answers) fails
// every call at OpTimeout instead of blocking it, and the stores work again
// when it answers.
func TestRedisStoresFailClosedWhenRedisHangs(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	r := newTestRedis(t, srv, func(c *RedisConfig) { c.OpTimeout = 200 * time.Millisecond })
	s := newRedisStores(r)
	sid := uuid.NewString()
	var seq uint64
	calls := s.calls(t, r, sid, &seq)
	sigiltest.Eventually(t, "a first replay check", func() bool { // 200 ms is short on a loaded machine
		_, err := calls["ReplayStore.Check"]()
		return err == nil
	})
	srv.Pause()
	checkAllFail(t, 1, calls)
	srv.Resume()
	// A call that timed out may still run when Redis answers again (it was
	// sent): a check refused as unavailable may have recorded its frame, so
	// a client resends with a new id and seq, as each call here does.
	sigiltest.Eventually(t, "a replay check to pass after Redis answers again", func() bool {
		_, err := calls["ReplayStore.Check"]()
		return err == nil
	})
}
