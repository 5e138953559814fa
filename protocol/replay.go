package protocol

import (
	"context"
	"math"
	"sync"
	"time"
)

// ReplayCheck is one frame's claim to freshness.
type ReplayCheck struct {
	Session       string    // sid
	ID            string    // message id
	Seq           uint64    // message seq
	IDExpiry      time.Time // the id may be forgotten after this (ts + skew)
	SessionExpiry time.Time // session state may be forgotten after this (token exp + skew)
}

// ReplayStore remembers, per session, the highest accepted seq and the ids
// seen within the freshness window. Check must be atomic: of two concurrent
// checks of the same id or seq, at most one succeeds.
//
// A verifier calls Check only after the frame's signature has verified, so an
// attacker cannot poison the state with forged frames.
type ReplayStore interface {
	// Check returns an *Error with CodeReplayID if the id was already seen
	// for the session, CodeReplaySeq if seq is not greater than the last
	// accepted seq, and otherwise records both and returns nil.
	Check(ctx context.Context, c ReplayCheck) error
	// LastSeq returns the highest seq accepted for the session (0 if none).
	LastSeq(ctx context.Context, session string) (uint64, error)
}

// MemoryReplayStore is the in-process ReplayStore. The zero value is not
// usable; call NewMemoryReplayStore.
//
// Its memory is bounded in count and in time. A session holds at most
// maxIDs ids. Once a minute (of the store's clock; checked by Check and by
// Sweep, never by a count of operations) the store forgets the sessions
// whose expiry has passed and compacts the others: ids whose freshness
// window has ended are dropped and the session's tables are rebuilt at their
// new size, so that a session that has disconnected soon holds only its seq
// high-water mark (which it needs until its expiry: its token may still
// open a new connection) and the ids still inside the window.
//
// A session's tables are sized for what it holds: an idle session, which
// sent only its hello, holds one id in a one-entry ring (about 190 bytes
// with the id and its entry in the store); up to smallReplayIDs ids are
// looked up by a scan of the ring, and only beyond that is an index (a
// map) built.
type MemoryReplayStore struct {
	maxIDs int
	now    func() time.Time

	mu        sync.Mutex
	sessions  map[string]*replaySession
	nextSweep time.Time
}

// ReplaySweepInterval is how often, by their clocks, MemoryReplayStore and
// MemoryRevocations forget expired state.
const ReplaySweepInterval = time.Minute

// smallReplayIDs is the number of ids a session holds without an index:
// they are found by scanning the ring, which for so few is as fast as a
// map lookup and needs no map.
const smallReplayIDs = 8

type replaySession struct {
	lastSeq uint64
	expiry  int64 // Unix nanoseconds; the session may be forgotten after it
	// ring holds the ids in insertion order, oldest at head, for bounded
	// eviction; it grows (1, 2, 4, ...) up to maxIDs and is then reused in
	// place. An id whose window ended may still be in it (behind the
	// head) and be recorded again: the newer entry is the one that counts.
	ring    []replayID
	head, n int
	// ids indexes the ring when it holds more than smallReplayIDs ids: id →
	// the expiry of its newest entry. nil otherwise.
	ids map[string]int64
}

// replayID is one remembered id and when its window ends (Unix ns).
type replayID struct {
	id  string
	exp int64
}

// NewMemoryReplayStore returns a store that keeps at most maxIDs ids per
// session (0 means 4096). Once full, the oldest id is evicted first: the
// strictly increasing seq still rejects any replay of an evicted frame. now
// is the clock used to expire state (nil means time.Now).
func NewMemoryReplayStore(maxIDs int, now func() time.Time) *MemoryReplayStore {
	if maxIDs <= 0 {
		maxIDs = 4096
	}
	if now == nil {
		now = time.Now
	}
	return &MemoryReplayStore{maxIDs: maxIDs, now: now, sessions: make(map[string]*replaySession)}
}

// ReplayError is the error a ReplayStore's Check returns for the frame
// whose id is ref: code is CodeReplayID (the id was already seen) or
// CodeReplaySeq (seq is not greater than the last accepted seq).
func ReplayError(code Code, ref string) *Error {
	msg := "message id already seen"
	if code == CodeReplaySeq {
		msg = "seq must be greater than the last accepted seq"
	}
	return &Error{Code: code, Message: msg, Ref: ref}
}

// Check implements ReplayStore.
func (m *MemoryReplayStore) Check(_ context.Context, c ReplayCheck) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.maybeSweepLocked(now)
	s := m.sessions[c.Session]
	if s == nil {
		s = &replaySession{}
		m.sessions[c.Session] = s
	}
	if exp := unixNanos(c.SessionExpiry); exp > s.expiry {
		s.expiry = exp
	}
	nowN := unixNanos(now)
	if s.seen(c.ID, nowN) {
		return ReplayError(CodeReplayID, c.ID)
	}
	if c.Seq <= s.lastSeq {
		return ReplayError(CodeReplaySeq, c.ID)
	}
	s.lastSeq = c.Seq
	s.add(c.ID, unixNanos(c.IDExpiry), nowN, m.maxIDs)
	return nil
}

// unixNanos is t in Unix nanoseconds, clamped to what an int64 holds (the
// zero Time, for one, is before it: math.MinInt64).
func unixNanos(t time.Time) int64 {
	switch {
	case t.Before(minNanoTime):
		return math.MinInt64
	case t.After(maxNanoTime):
		return math.MaxInt64
	}
	return t.UnixNano()
}

var minNanoTime, maxNanoTime = time.Unix(0, math.MinInt64), time.Unix(0, math.MaxInt64)

// seen reports whether id is held with a window that has not ended.
func (s *replaySession) seen(id string, now int64) bool {
	if s.ids != nil {
		exp, ok := s.ids[id]
		return ok && now <= exp
	}
	for i := 0; i < s.n; i++ {
		if e := s.ring[(s.head+i)%len(s.ring)]; e.id == id && now <= e.exp {
			return true
		}
	}
	return false
}

// add records id, first dropping expired ids from the front and, when the
// session already holds max ids, the oldest.
func (s *replaySession) add(id string, exp, now int64, limit int) {
	for s.n > 0 {
		old := s.ring[s.head]
		if now <= old.exp && s.n < limit {
			break
		}
		if s.ids != nil && s.ids[old.id] == old.exp { // not an older entry of a recorded-again id
			delete(s.ids, old.id)
		}
		s.ring[s.head] = replayID{}
		s.head = (s.head + 1) % len(s.ring)
		s.n--
	}
	if s.n == len(s.ring) { // grow, keeping insertion order
		s.resize(min(limit, max(1, 2*len(s.ring))))
	}
	s.ring[(s.head+s.n)%len(s.ring)] = replayID{id, exp}
	s.n++
	switch {
	case s.ids != nil:
		s.ids[id] = exp
	case s.n > smallReplayIDs:
		s.index()
	}
}

// resize moves the ring's entries, oldest first, to a new ring of size.
func (s *replaySession) resize(size int) {
	ring := make([]replayID, size)
	for i := 0; i < s.n; i++ {
		ring[i] = s.ring[(s.head+i)%len(s.ring)]
	}
	s.ring, s.head = ring, 0
}

// index builds ids from the ring; a newer entry of an id replaces an
// older one.
func (s *replaySession) index() {
	s.ids = make(map[string]int64, s.n)
	for i := 0; i < s.n; i++ {
		e := s.ring[(s.head+i)%len(s.ring)]
		s.ids[e.id] = e.exp
	}
}

// compact drops the ids whose window has ended (anywhere in the ring, not
// only at its head) and, if any was dropped, rebuilds the tables at the new
// size (a Go map never shrinks; up to smallReplayIDs ids need none); with
// no id left the session holds only its seq and expiry.
func (s *replaySession) compact(now int64) {
	keep := 0
	for i := 0; i < s.n; i++ {
		if now <= s.ring[(s.head+i)%len(s.ring)].exp {
			keep++
		}
	}
	if keep == s.n {
		return
	}
	if keep == 0 {
		s.ids, s.ring, s.head, s.n = nil, nil, 0, 0
		return
	}
	ring := make([]replayID, keep)
	j := 0
	for i := 0; i < s.n; i++ {
		if e := s.ring[(s.head+i)%len(s.ring)]; now <= e.exp {
			ring[j] = e
			j++
		}
	}
	s.ring, s.head, s.n, s.ids = ring, 0, keep, nil
	if keep > smallReplayIDs {
		s.index()
	}
}

// LastSeq implements ReplayStore.
func (m *MemoryReplayStore) LastSeq(_ context.Context, session string) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if s := m.sessions[session]; s != nil {
		return s.lastSeq, nil
	}
	return 0, nil
}

// Sweep forgets sessions whose expiry has passed and compacts the others
// (see MemoryReplayStore). Check sweeps once per ReplaySweepInterval of the
// store's clock; servers may also call Sweep from a ticker.
func (m *MemoryReplayStore) Sweep() {
	m.mu.Lock()
	defer m.mu.Unlock()
	now := m.now()
	m.sweepLocked(now)
	m.nextSweep = now.Add(ReplaySweepInterval)
}

func (m *MemoryReplayStore) maybeSweepLocked(now time.Time) {
	if !now.Before(m.nextSweep) {
		m.sweepLocked(now)
		m.nextSweep = now.Add(ReplaySweepInterval)
	}
}

func (m *MemoryReplayStore) sweepLocked(now time.Time) {
	nowN := unixNanos(now)
	for sid, s := range m.sessions {
		if nowN > s.expiry {
			delete(m.sessions, sid)
		} else {
			s.compact(nowN)
		}
	}
}

// Len returns the number of sessions with state, for metrics and tests.
func (m *MemoryReplayStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.sessions)
}

// IDs returns the number of message ids held over all sessions, for
// metrics and tests.
func (m *MemoryReplayStore) IDs() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	n := 0
	for _, s := range m.sessions {
		n += s.n
	}
	return n
}

// ReplayRevocationChecker is an optional extension of ReplayStore, for a
// store shared by several nodes that can make a frame's replay check (§7
// step 8) and its revocation check (step 9) in one round trip. A Verifier
// uses CheckRevoked in place of Check and RevocationChecker.IsRevoked when
// its Replay implements this interface and Covers its Revocation. The
// outcome is the same as the two calls in order: a replay error first, then
// expiry (checked locally), then revoked; an error of either read is an
// error, never an acceptance.
type ReplayRevocationChecker interface {
	ReplayStore
	// CheckRevoked is Check(c), and then, whatever Check answered,
	// whether the token (tokenID, subject, issuedAt) is revoked.
	CheckRevoked(ctx context.Context, c ReplayCheck, tokenID, subject string, issuedAt time.Time) (revoked bool, err error)
	// Covers reports whether CheckRevoked's revocation answer is r's.
	Covers(r RevocationChecker) bool
}

// RevocationChecker answers whether a session token has been revoked, by
// its jti or by its subject (every token of the subject issued at or before
// the revocation).
type RevocationChecker interface {
	IsRevoked(ctx context.Context, tokenID, subject string, issuedAt time.Time) (bool, error)
}

// MemoryRevocations is the in-process RevocationChecker. Safe for concurrent
// use. A revoked token id is kept until its token has expired (an expired
// token fails step 9 anyway) and then forgotten, so the list does not grow
// without bound: expired ids are swept once per ReplaySweepInterval of its
// clock, when a token is revoked, and by Sweep. A subject's revocation time
// is kept for good.
type MemoryRevocations struct {
	now       func() time.Time
	mu        sync.RWMutex
	tokens    map[string]time.Time // jti -> forget after
	subjects  map[string]time.Time // sub -> revoked at
	nextSweep time.Time
}

// NewMemoryRevocations returns an empty revocation list on the system clock.
func NewMemoryRevocations() *MemoryRevocations {
	return NewMemoryRevocationsWithClock(nil)
}

// NewMemoryRevocationsWithClock returns an empty revocation list whose
// entries expire by the clock now (nil means time.Now).
func NewMemoryRevocationsWithClock(now func() time.Time) *MemoryRevocations {
	if now == nil {
		now = time.Now
	}
	return &MemoryRevocations{now: now, tokens: map[string]time.Time{}, subjects: map[string]time.Time{}}
}

// RevokeToken revokes one token id; it may be forgotten after until (the
// token's expiry).
func (r *MemoryRevocations) RevokeToken(jti string, until time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if now := r.now(); !now.Before(r.nextSweep) {
		r.sweepLocked(now)
	}
	if until.After(r.tokens[jti]) {
		r.tokens[jti] = until
	}
}

// Sweep forgets revoked token ids whose tokens have expired.
func (r *MemoryRevocations) Sweep() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.sweepLocked(r.now())
}

func (r *MemoryRevocations) sweepLocked(now time.Time) {
	for jti, until := range r.tokens {
		if now.After(until) {
			delete(r.tokens, jti)
		}
	}
	r.nextSweep = now.Add(ReplaySweepInterval)
}

// Len returns the number of revoked token ids and subjects held.
func (r *MemoryRevocations) Len() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.tokens) + len(r.subjects)
}

// RevokeSubject revokes every token of sub issued at or before at. An
// earlier at than the one already held changes nothing: the latest
// revocation of a subject is kept.
func (r *MemoryRevocations) RevokeSubject(sub string, at time.Time) {
	r.mu.Lock()
	if at.After(r.subjects[sub]) {
		r.subjects[sub] = at
	}
	r.mu.Unlock()
}

// IsRevoked implements RevocationChecker.
func (r *MemoryRevocations) IsRevoked(_ context.Context, jti, sub string, iat time.Time) (bool, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if _, ok := r.tokens[jti]; ok {
		return true, nil
	}
	if at, ok := r.subjects[sub]; ok && !iat.After(at) {
		return true, nil
	}
	return false, nil
}
