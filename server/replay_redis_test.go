package server

import (
	"context"
	"errors"
	"fmt"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"math"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/protocol"
)

func replayCheck(sid, id string, seq uint64) protocol.ReplayCheck {
	now := time.Now()
	return protocol.ReplayCheck{Session: sid, ID: id, Seq: seq, IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Hour)}
}

// The Redis store answers a sequence of checks spread over two nodes
// exactly as the memory store answers it on one: same errors, same codes,
// same refs.
func TestRedisReplayAcrossNodesMatchesMemory(t *testing.T) {
	testReplayAcrossNodesMatchesMemory(t, standalone(t))
}

func testReplayAcrossNodesMatchesMemory(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisReplayStore(ra, nil), NewRedisReplayStore(rb, nil)
	mem := protocol.NewMemoryReplayStore(0, nil)

	sid, other := uuid.NewString(), uuid.NewString()
	id1, id2, id3, id4 := uuid.NewString(), uuid.NewString(), uuid.NewString(), uuid.NewString()
	steps := []struct {
		node *RedisReplayStore
		c    protocol.ReplayCheck
		want protocol.Code // "" means accepted
	}{
		{a, replayCheck(sid, id1, 1), ""},
		{b, replayCheck(sid, id1, 2), protocol.CodeReplayID},  // same id on the other node
		{b, replayCheck(sid, id2, 1), protocol.CodeReplaySeq}, // same seq on the other node
		{b, replayCheck(sid, id2, 0), protocol.CodeReplaySeq}, // lower seq
		{b, replayCheck(sid, id2, 5), ""},
		{a, replayCheck(sid, id3, 4), protocol.CodeReplaySeq}, // lower than the other node's
		{a, replayCheck(sid, id1, 9), protocol.CodeReplayID},
		{a, replayCheck(other, id1, 1), ""}, // ids and seqs are per session
		{a, replayCheck(sid, id4, 6), ""},
	}
	for i, st := range steps {
		got := st.node.Check(ctx, st.c)
		want := mem.Check(ctx, st.c)
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("step %d: redis %v, memory %v", i, got, want)
		}
		var pe *protocol.Error
		switch {
		case st.want == "" && got != nil:
			t.Fatalf("step %d: want accepted, got %v", i, got)
		case st.want != "" && (!errors.As(got, &pe) || pe.Code != st.want || pe.Ref != st.c.ID):
			t.Fatalf("step %d: want %s with ref %s, got %#v", i, st.want, st.c.ID, got)
		}
		if pe != nil {
			var me *protocol.Error
			errors.As(want, &me)
			if *pe != *me {
				t.Fatalf("step %d: redis error %#v, memory error %#v", i, *pe, *me)
			}
		}
	}
	for _, s := range []*RedisReplayStore{a, b} {
		if n, err := s.LastSeq(ctx, sid); err != nil || n != 6 {
			t.Fatalf("LastSeq = %d, %v; want 6", n, err)
		}
		if n, err := s.LastSeq(ctx, uuid.NewString()); err != nil || n != 0 {
			t.Fatalf("LastSeq of an unknown session = %d, %v; want 0", n, err)
		}
	}
}

// Fifty goroutines on two nodes race one frame: exactly one wins. Then
// fifty race fifty different frames with one seq: again exactly one wins.
func TestRedisReplayRace(t *testing.T) { testReplayRace(t, standalone(t)) }

func testReplayRace(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	nodes := []*RedisReplayStore{NewRedisReplayStore(ra, nil), NewRedisReplayStore(rb, nil)}
	sid := uuid.NewString()

	race := func(check func(i int) protocol.ReplayCheck) (wins int, codes map[protocol.Code]int) {
		var mu sync.Mutex
		codes = map[protocol.Code]int{}
		var wg sync.WaitGroup
		start := make(chan struct{})
		for i := range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				err := nodes[i%2].Check(ctx, check(i))
				mu.Lock()
				defer mu.Unlock()
				var pe *protocol.Error
				switch {
				case err == nil:
					wins++
				case errors.As(err, &pe):
					codes[pe.Code]++
				default:
					t.Errorf("check %d: %v", i, err)
				}
			}()
		}
		close(start)
		wg.Wait()
		return wins, codes
	}

	frame := replayCheck(sid, uuid.NewString(), 1)
	wins, codes := race(func(int) protocol.ReplayCheck { return frame })
	if wins != 1 || codes[protocol.CodeReplayID] != 49 {
		t.Fatalf("one frame raced 50 times: %d accepted, rejections %v; want 1 and 49 replay_id", wins, codes)
	}
	ids := make([]string, 50)
	for i := range ids {
		ids[i] = uuid.NewString()
	}
	wins, codes = race(func(i int) protocol.ReplayCheck { return replayCheck(sid, ids[i], 2) })
	if wins != 1 || codes[protocol.CodeReplaySeq] != 49 {
		t.Fatalf("50 frames with one seq: %d accepted, rejections %v; want 1 and 49 replay_seq", wins, codes)
	}
}

// Seqs compare exactly across the whole uint64 range, where a float
// would round (2^53+1 and 2^53 are one double).
func TestRedisReplayLargeSeq(t *testing.T) { testReplayLargeSeq(t, standalone(t)) }

func testReplayLargeSeq(t *testing.T, e redisEnv) {
	ctx := context.Background()
	r := e.node(t)
	s := NewRedisReplayStore(r, nil)
	sid := uuid.NewString()
	for _, st := range []struct {
		seq uint64
		ok  bool
	}{
		{9, true}, {10, true}, {9, false}, {1 << 53, true}, {1<<53 + 1, true}, {1 << 53, false},
		{1<<53 + 1, false}, {math.MaxUint64 - 1, true}, {math.MaxUint64, true}, {math.MaxUint64, false},
	} {
		err := s.Check(ctx, replayCheck(sid, uuid.NewString(), st.seq))
		if (err == nil) != st.ok {
			t.Fatalf("seq %d: got %v, want accepted=%v", st.seq, err, st.ok)
		}
	}
	if n, err := s.LastSeq(ctx, sid); err != nil || n != math.MaxUint64 {
		t.Fatalf("LastSeq = %d, %v", n, err)
	}
}

// An id is forgotten when its expiry passes (on Redis' clock, found by
// polling the key); the seq mark lives until the session's expiry.
func TestRedisReplayExpiry(t *testing.T) { testReplayExpiry(t, standalone(t)) }

func testReplayExpiry(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisReplayStore(ra, nil), NewRedisReplayStore(rb, nil)
	sid, id := uuid.NewString(), uuid.NewString()
	now := time.Now()
	// The keys expire with the id and the session, not later.
	first := protocol.ReplayCheck{Session: sid, ID: uuid.NewString(), Seq: 1, IDExpiry: now.Add(time.Minute), SessionExpiry: now.Add(time.Hour)}
	noErr(t, a.Check(ctx, first))
	checkTTL(t, ra, a.idKey(sid, first.ID), time.Minute)
	checkTTL(t, ra, a.seqKey(sid), time.Hour)

	c := protocol.ReplayCheck{Session: sid, ID: id, Seq: 1, IDExpiry: time.Now().Add(100 * time.Millisecond), SessionExpiry: now.Add(time.Hour)}
	c.Seq = 2
	noErr(t, a.Check(ctx, c))
	sigiltest.Eventually(t, "the id's key to expire", func() bool { return !exists(t, ra, a.idKey(sid, id)) })
	// The id is free again, and the mark still rejects its old seq.
	if err := b.Check(ctx, c); !isCode(err, protocol.CodeReplaySeq) {
		t.Fatalf("old seq after the id expired: %v, want replay_seq", err)
	}
	c.Seq = 3
	if err := b.Check(ctx, c); err != nil {
		t.Fatalf("expired id with a new seq: %v", err)
	}

	// The mark's TTL is raised to the latest session expiry, never lowered.
	sid2 := uuid.NewString()
	short := protocol.ReplayCheck{Session: sid2, ID: uuid.NewString(), Seq: 1, IDExpiry: now.Add(time.Minute), SessionExpiry: time.Now().Add(150 * time.Millisecond)}
	if err := a.Check(ctx, short); err != nil {
		t.Fatal(err)
	}
	long := short
	long.ID, long.Seq, long.SessionExpiry = uuid.NewString(), 2, time.Now().Add(time.Hour)
	if err := b.Check(ctx, long); err != nil {
		t.Fatal(err)
	}
	shorter := long
	shorter.ID, shorter.Seq, shorter.SessionExpiry = uuid.NewString(), 3, time.Now().Add(50*time.Millisecond)
	if err := a.Check(ctx, shorter); err != nil {
		t.Fatal(err)
	}
	pttl, err := ra.client.Do(ctx, ra.client.B().Pttl().Key(a.seqKey(sid2)).Build()).AsInt64()
	if err != nil || pttl < (time.Hour-time.Minute).Milliseconds() {
		t.Fatalf("mark TTL %d ms, %v: want about an hour", pttl, err)
	}
	checkTTL(t, ra, a.seqKey(sid2), time.Hour)

	// A mark whose session expired is forgotten.
	sid3 := uuid.NewString()
	gone := protocol.ReplayCheck{Session: sid3, ID: uuid.NewString(), Seq: 7, IDExpiry: now.Add(time.Minute), SessionExpiry: time.Now().Add(100 * time.Millisecond)}
	if err := a.Check(ctx, gone); err != nil {
		t.Fatal(err)
	}
	sigiltest.Eventually(t, "the session's mark to expire", func() bool { return !exists(t, ra, a.seqKey(sid3)) })
	if n, err := b.LastSeq(ctx, sid3); err != nil || n != 0 {
		t.Fatalf("LastSeq after expiry = %d, %v; want 0", n, err)
	}
}

func isCode(err error, code protocol.Code) bool {
	var pe *protocol.Error
	return errors.As(err, &pe) && pe.Code == code
}

// CheckRevoked answers as Check then IsRevoked would, in one round trip:
// the replay verdict stands whatever the revocation says, a revoked
// token or subject is reported, and the script is loaded on first use
// (after SCRIPT FLUSH, EVALSHA answers NOSCRIPT). Only the revocation store
// it was built with is covered.
func TestRedisReplayCheckRevoked(t *testing.T) { testReplayCheckRevoked(t, standalone(t)) }

func testReplayCheckRevoked(t *testing.T, e redisEnv) {
	ctx := context.Background()
	r := e.node(t)
	rev := NewRedisRevocationStore(r)
	s := NewRedisReplayStore(r, rev)
	if !s.Covers(rev) || s.Covers(NewRedisRevocationStore(r)) || NewRedisReplayStore(r, nil).Covers(rev) {
		t.Fatal("Covers must hold exactly for the store given")
	}
	for _, n := range r.client.Nodes() {
		if err := n.Do(ctx, n.B().ScriptFlush().Build()).Error(); err != nil {
			t.Fatal(err)
		}
	}
	sid, jti, iat := uuid.NewString(), uuid.NewString(), time.Now().Add(-time.Minute)
	sub := "sub-" + uuid.NewString()[:8]
	id := uuid.NewString()
	if revoked, err := s.CheckRevoked(ctx, replayCheck(sid, id, 1), jti, sub, iat); err != nil || revoked {
		t.Fatalf("fresh frame: revoked=%v err=%v", revoked, err)
	}
	if _, err := s.CheckRevoked(ctx, replayCheck(sid, id, 2), jti, sub, iat); protocol.CodeOf(err) != protocol.CodeReplayID {
		t.Fatalf("same id: %v", err)
	}
	if err := rev.RevokeToken(ctx, jti, time.Now().Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	revoked, err := s.CheckRevoked(ctx, replayCheck(sid, uuid.NewString(), 3), jti, sub, iat)
	if err != nil || !revoked {
		t.Fatalf("revoked token: revoked=%v err=%v", revoked, err)
	}
	// The replay verdict comes first, and the frame was recorded.
	revoked, err = s.CheckRevoked(ctx, replayCheck(sid, uuid.NewString(), 3), jti, sub, iat)
	if protocol.CodeOf(err) != protocol.CodeReplaySeq || !revoked {
		t.Fatalf("replayed seq of a revoked token: revoked=%v err=%v", revoked, err)
	}
	// A subject revocation covers tokens issued before it, not after.
	other := uuid.NewString()
	if err := rev.RevokeSubject(ctx, sub, time.Now()); err != nil {
		t.Fatal(err)
	}
	if revoked, err := s.CheckRevoked(ctx, replayCheck(sid, uuid.NewString(), 4), other, sub, iat); err != nil || !revoked {
		t.Fatalf("subject revoked: revoked=%v err=%v", revoked, err)
	}
	if revoked, err := s.CheckRevoked(ctx, replayCheck(sid, uuid.NewString(), 5), other, sub, time.Now().Add(time.Minute)); err != nil || revoked {
		t.Fatalf("token issued after the subject's revocation: revoked=%v err=%v", revoked, err)
	}
}
