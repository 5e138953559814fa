package server

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"reflect"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// newRefresh returns a record of a new token of family (a new family when
// family is "").
func newRefresh(t testing.TB, sub, family string, expires time.Time) (string, RefreshRecord) {
	t.Helper()
	token, hash, err := NewRefreshToken()
	noErr(t, err)
	jti := uuid.NewString()
	if family == "" {
		family = jti
	}
	now := time.Now()
	return token, RefreshRecord{
		Hash: hash, Family: family, Session: uuid.NewString(), Subject: sub, Roles: []string{"user", "admin"},
		JKT: "jkt-" + jti, JWK: []byte(`{"kty":"OKP","crv":"Ed25519","x":"` + jti + `"}`),
		TokenID: jti, TokenIat: now.Truncate(time.Second), TokenExp: now.Add(15 * time.Minute), Expires: expires,
	}
}

func sameRecord(a, b RefreshRecord) bool {
	return a.Hash == b.Hash && a.Family == b.Family && a.Session == b.Session && a.Subject == b.Subject &&
		reflect.DeepEqual(a.Roles, b.Roles) && a.JKT == b.JKT && string(a.JWK) == string(b.JWK) &&
		a.TokenID == b.TokenID && a.TokenIat.Equal(b.TokenIat) && a.TokenExp.Equal(b.TokenExp) && a.Expires.Equal(b.Expires) &&
		a.Login == b.Login
}

// A sequence of operations spread over two nodes gives the same records and
// errors as the memory store: rotation, reuse, revocation of the family.
func TestRedisRefreshAcrossNodesMatchesMemory(t *testing.T) {
	testRefreshAcrossNodesMatchesMemory(t, standalone(t))
}

func testRefreshAcrossNodesMatchesMemory(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisRefreshStore(ra, 0), NewRedisRefreshStore(rb, 0)
	mem := NewMemoryRefreshStore(nil)
	exp := time.Now().Add(time.Hour)

	_, r1 := newRefresh(t, "alice", "", exp)
	_, r2 := newRefresh(t, "alice", r1.Family, exp) // the rotation of r1
	_, r3 := newRefresh(t, "alice", r1.Family, exp) // the rotation of r2
	_, other := newRefresh(t, "alice", "", exp)     // another login
	_, past := newRefresh(t, "bob", "", time.Now().Add(-time.Second))

	type result struct {
		rec RefreshRecord
		err error
	}
	steps := []struct {
		name string
		op   func(s RefreshStore) result
		want error
	}{
		{"create r1 on a", func(s RefreshStore) result { return result{err: s.Create(ctx, r1)} }, nil},
		{"create other on b", func(s RefreshStore) result { return result{err: s.Create(ctx, other)} }, nil},
		{"create past on a", func(s RefreshStore) result { return result{err: s.Create(ctx, past)} }, nil},
		{"get r1 on b", func(s RefreshStore) result { r, err := s.Get(ctx, r1.Hash); return result{r, err} }, nil},
		{"use r1 on b", func(s RefreshStore) result { r, err := s.Use(ctx, r1.Hash); return result{r, err} }, nil},
		{"create r2 on b", func(s RefreshStore) result { return result{err: s.Create(ctx, r2)} }, nil},
		{"get r1 on a", func(s RefreshStore) result { r, err := s.Get(ctx, r1.Hash); return result{r, err} }, ErrRefreshReused},
		{"use r2 on a", func(s RefreshStore) result { r, err := s.Use(ctx, r2.Hash); return result{r, err} }, nil},
		{"create r3 on a", func(s RefreshStore) result { return result{err: s.Create(ctx, r3)} }, nil},
		{"reuse r1 on a", func(s RefreshStore) result { r, err := s.Use(ctx, r1.Hash); return result{r, err} }, ErrRefreshReused},
		{"unknown on b", func(s RefreshStore) result { r, err := s.Use(ctx, "nope"); return result{r, err} }, ErrRefreshInvalid},
		{"expired on b", func(s RefreshStore) result { r, err := s.Get(ctx, past.Hash); return result{r, err} }, ErrRefreshInvalid},
		{"use expired on a", func(s RefreshStore) result { r, err := s.Use(ctx, past.Hash); return result{r, err} }, ErrRefreshInvalid},
		{"use other on a", func(s RefreshStore) result { r, err := s.Use(ctx, other.Hash); return result{r, err} }, nil},
	}
	for i, st := range steps {
		node := RefreshStore(a)
		if i%2 == 1 {
			node = b
		}
		got, want := st.op(node), st.op(mem)
		if got.err != want.err || !errors.Is(got.err, st.want) || (st.want == nil) != (got.err == nil) {
			t.Fatalf("%s: redis %v, memory %v, want %v", st.name, got.err, want.err, st.want)
		}
		if !sameRecord(got.rec, want.rec) {
			t.Fatalf("%s: redis record %+v, memory %+v", st.name, got.rec, want.rec)
		}
	}

	// Reuse is detected; the server then revokes the family, on any node.
	jtis, err := b.RevokeFamily(ctx, r1.Family)
	noErr(t, err)
	memJTIs, _ := mem.RevokeFamily(ctx, r1.Family)
	if want := []string{r1.TokenID, r2.TokenID, r3.TokenID}; !reflect.DeepEqual(jtis, want) || !reflect.DeepEqual(memJTIs, want) {
		t.Fatalf("RevokeFamily = %v (memory %v), want %v", jtis, memJTIs, want)
	}
	for _, s := range []RefreshStore{a, b} {
		if rec, err := s.Use(ctx, r3.Hash); err != ErrRefreshReused || rec.Hash != r3.Hash {
			t.Fatalf("unused token of a revoked family: %v, %v; want its record and ErrRefreshReused", rec.Hash, err)
		}
	}
	if rec, err := a.Get(ctx, other.Hash); err != ErrRefreshReused || rec.Hash != other.Hash {
		t.Fatalf("the other family was touched: %v", err)
	}
	if jtis, err := a.RevokeFamily(ctx, uuid.NewString()); err != nil || jtis != nil {
		t.Fatalf("RevokeFamily of an unknown family = %v, %v", jtis, err)
	}
}

// A hundred goroutines on two nodes race one refresh token: exactly one
// wins, and every other gets the record and ErrRefreshReused.
func TestRedisRefreshRace(t *testing.T) { testRefreshRace(t, standalone(t)) }

func testRefreshRace(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	nodes := []*RedisRefreshStore{NewRedisRefreshStore(ra, 0), NewRedisRefreshStore(rb, 0)}
	_, rec := newRefresh(t, "alice", "", time.Now().Add(time.Hour))
	noErr(t, nodes[0].Create(ctx, rec))

	var (
		mu           sync.Mutex
		wins, reused int
		wg           sync.WaitGroup
	)
	start := make(chan struct{})
	for i := range 100 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, err := nodes[i%2].Use(ctx, rec.Hash)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case err == nil && got.Hash == rec.Hash:
				wins++
			case err == ErrRefreshReused && got.Hash == rec.Hash:
				reused++
			default:
				t.Errorf("use %d: %v, %v", i, got.Hash, err)
			}
		}()
	}
	close(start)
	wg.Wait()
	if wins != 1 || reused != 99 {
		t.Fatalf("100 racing uses: %d won, %d reused; want 1 and 99", wins, reused)
	}
}

// A subject keeps at most Max live families: a new login evicts the
// oldest, on whichever node it happens. Revoked families do not count, and
// other subjects are not touched.
func TestRedisRefreshFamilyCap(t *testing.T) { testRefreshFamilyCap(t, standalone(t)) }

func testRefreshFamilyCap(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	nodes := []*RedisRefreshStore{NewRedisRefreshStore(ra, 3), NewRedisRefreshStore(rb, 3)}
	exp := time.Now().Add(time.Hour)

	_, bob := newRefresh(t, "bob", "", exp)
	noErr(t, nodes[0].Create(ctx, bob))
	var fams []RefreshRecord
	for i := range 5 {
		_, rec := newRefresh(t, "alice", "", exp)
		noErr(t, nodes[i%2].Create(ctx, rec))
		// Rotations of a live family do not count as new families.
		_, rot := newRefresh(t, "alice", rec.Family, exp)
		noErr(t, nodes[(i+1)%2].Create(ctx, rot))
		fams = append(fams, rec, rot)
	}
	// 5 families, cap 3: the first two (with their rotations) are gone.
	for i, rec := range fams {
		_, err := nodes[i%2].Get(ctx, rec.Hash)
		if evicted := i < 4; evicted != (err == ErrRefreshInvalid) || (!evicted && err != nil) {
			t.Fatalf("token %d of family %d: %v (evicted=%v)", i, i/2, err, evicted)
		}
		if i < 4 && exists(t, ra, nodes[0].tokenKey(rec.Hash)) {
			t.Fatalf("evicted token %d keeps its index key", i)
		}
	}
	if _, err := nodes[1].Get(ctx, bob.Hash); err != nil {
		t.Fatalf("another subject's family was evicted: %v", err)
	}
	if jtis, err := nodes[1].RevokeFamily(ctx, fams[0].Family); err != nil || jtis != nil {
		t.Fatalf("RevokeFamily of an evicted family = %v, %v; want nothing", jtis, err)
	}

	// A family revoked for reuse is not live: it is kept (its tokens still
	// report reuse) and leaves room for a new family.
	_, err := nodes[0].RevokeFamily(ctx, fams[4].Family)
	noErr(t, err)
	_, next := newRefresh(t, "alice", "", exp)
	noErr(t, nodes[1].Create(ctx, next))
	for _, rec := range []RefreshRecord{fams[6], fams[8], next} {
		if _, err := nodes[0].Get(ctx, rec.Hash); err != nil {
			t.Fatalf("live family evicted although a revoked one made room: %v", err)
		}
	}
	if _, err := nodes[0].Get(ctx, fams[4].Hash); err != ErrRefreshReused {
		t.Fatalf("token of the revoked family: %v, want ErrRefreshReused", err)
	}
	_, last := newRefresh(t, "alice", "", exp)
	noErr(t, nodes[0].Create(ctx, last))
	if _, err := nodes[1].Get(ctx, fams[6].Hash); err != ErrRefreshInvalid {
		t.Fatalf("oldest live family after one more login: %v, want evicted", err)
	}
}

// Nothing outlives the family's expiry: Redis drops every key of a
// subject whose only family has expired (polled, on Redis' clock), and an
// expired family is refused at once, before Redis drops it.
func TestRedisRefreshExpiry(t *testing.T) { testRefreshExpiry(t, standalone(t)) }

func testRefreshExpiry(t *testing.T, e redisEnv) {
	ctx := context.Background()
	ra, rb := e.node(t), e.node(t)
	a, b := NewRedisRefreshStore(ra, 0), NewRedisRefreshStore(rb, 0)
	keysOf := func(rec RefreshRecord) []string {
		sub := redisKeyPart(rec.Subject)
		return []string{a.userKey(sub), a.orderKey(sub), a.tokenKey(rec.Hash), a.familyKey(rec.Family)}
	}
	_, hour := newRefresh(t, "dan", "", time.Now().Add(time.Hour))
	noErr(t, a.Create(ctx, hour))
	if _, err := b.Get(ctx, hour.Hash); err != nil {
		t.Fatalf("Get before expiry: %v", err)
	}
	for _, k := range keysOf(hour) {
		checkTTL(t, ra, k, time.Hour)
	}

	_, rec := newRefresh(t, "carol", "", time.Now().Add(100*time.Millisecond))
	noErr(t, a.Create(ctx, rec))
	keys := keysOf(rec)
	sigiltest.Eventually(t, "every key of the family to expire", func() bool {
		for _, k := range keys {
			if exists(t, ra, k) {
				return false
			}
		}
		return true
	})
	if _, err := b.Use(ctx, rec.Hash); err != ErrRefreshInvalid {
		t.Fatalf("Use after expiry: %v, want ErrRefreshInvalid", err)
	}

	// On a node whose clock has passed the expiry, the token is refused
	// although Redis still holds it.
	late := e.node(t, func(c *RedisConfig) {
		c.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	})
	_, rec2 := newRefresh(t, "carol", "", time.Now().Add(time.Hour))
	noErr(t, a.Create(ctx, rec2))
	if _, err := NewRedisRefreshStore(late, 0).Use(ctx, rec2.Hash); err != ErrRefreshInvalid {
		t.Fatalf("Use on a node past the expiry: %v, want ErrRefreshInvalid", err)
	}
	if _, err := b.Use(ctx, rec2.Hash); err != nil {
		t.Fatalf("an expired-looking use consumed the token: %v", err)
	}
}

// Stored records are strict JSON with every field of RefreshRecord.
func TestRedisRefreshRecordStrict(t *testing.T) {
	_, rec := newRefresh(t, "dave", "", time.Now().Add(time.Hour))
	rec.Login = true
	// Every field set, so a field the wire form dropped would show.
	v := reflect.ValueOf(rec)
	for i := range v.NumField() {
		if v.Field(i).IsZero() {
			t.Fatalf("test record leaves %s empty", v.Type().Field(i).Name)
		}
	}
	raw, err := json.Marshal(refreshWire(rec))
	noErr(t, err)
	data := string(raw)
	got, err := decodeRefreshRecord(data)
	noErr(t, err)
	if !sameRecord(got, rec) {
		t.Fatalf("round trip: %+v, want %+v", got, rec)
	}
	for _, bad := range []string{
		data[:len(data)-1] + `,"extra":1}`,    // unknown member
		data[:len(data)-1] + `,"sub":"eve"}`,  // duplicate
		`{"Hash":"x"}`,                        // case variant
		data[:len(data)-1] + `,"x":"\ud800"}`, // lone surrogate
		`[]`, ``,
	} {
		if _, err := decodeRefreshRecord(bad); err == nil {
			t.Fatalf("decoded %s", bad)
		}
	}
}
