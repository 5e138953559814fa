package server

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// RedisRefreshStore is the RefreshStore that nodes share through Redis, so
// that a refresh token works on every node and is used at most once across
// all of them (spec §4.3).
//
// Everything of one subject lives in one hash and one sorted set under the
// subject's hash tag, so that the scripts that rotate, revoke and evict stay
// atomic on Redis Cluster:
//
//	<prefix>refresh:{<sub>}          hash: per token r:<hash> (the record, as
//	                                 strict JSON), e:<hash> (its expiry, Unix
//	                                 ms) and u:<hash> (used); per family
//	                                 t:<family> (its token hashes), x:<family>
//	                                 (its expiry) and v:<family> (revoked);
//	                                 l:<hash> marks a login's record
//	<prefix>refresh:{<sub>}:order    sorted set of the families, oldest first
//	<prefix>refresh:tok:<hash>       the subject and family of a token
//	<prefix>refresh:fam:<family>     the subject of a family
//
// Use is a Lua script: of any number of concurrent uses of one token, on
// any nodes, exactly one wins. Use and Get take two round trips (the token's
// index, then the subject's hash), Create two, RevokeFamily two.
//
// Every key expires with the last family it serves (TTLs computed on the
// node's clock), and a family whose expiry has passed is refused at once
// and its fields are removed at the subject's next Create.
//
// A family keeps at most 1,024 tokens, as MemoryRefreshStore's do: beyond,
// Create forgets its oldest used token, else its oldest that is not a
// login's (spec.md §4.5), so that a login that mints many sessions keeps
// its login token.
//
// A subject holds at most Max live (unexpired, unrevoked) families: Create
// of a new family beyond that evicts the oldest live ones. An evicted
// family is forgotten, not marked revoked: its tokens then give
// ErrRefreshInvalid (the holder logs in again), and its session tokens run
// out at their expiry. So a user who logs in in a loop holds at most Max
// families, plus the families revoked for reuse until they expire.
//
// A Redis failure is returned as an error wrapping ErrRedisUnavailable,
// never as a usable token.
type RedisRefreshStore struct {
	r   *Redis
	max int
}

var _ RefreshStore = (*RedisRefreshStore)(nil)

// NewRedisRefreshStore returns a refresh store on r that keeps at most
// maxFamilies live families per subject (0 means DefaultMaxFamilies).
func NewRedisRefreshStore(r *Redis, maxFamilies int) *RedisRefreshStore {
	if maxFamilies <= 0 {
		maxFamilies = DefaultMaxFamilies
	}
	return &RedisRefreshStore{r: r, max: maxFamilies}
}

// refreshWire is RefreshRecord as stored: the same fields, with stable JSON
// names. A field added to RefreshRecord breaks the conversion between the
// two at compile time, so it cannot be left out here by mistake.
type refreshWire struct {
	Hash     string    `json:"hash"`
	Family   string    `json:"family"`
	Session  string    `json:"sid"`
	Subject  string    `json:"sub"`
	Roles    []string  `json:"roles"`
	JKT      string    `json:"jkt"`
	JWK      []byte    `json:"jwk"`
	TokenID  string    `json:"jti"`
	TokenIat time.Time `json:"iat"`
	TokenExp time.Time `json:"exp"`
	Expires  time.Time `json:"expires"`
	Login    bool      `json:"login,omitempty"`
}

// decodeRefreshRecord reads a stored record strictly: strict JSON, no
// unknown, duplicate or case-variant members.
func decodeRefreshRecord(data string) (RefreshRecord, error) {
	var w refreshWire
	if err := protocol.DecodeBody([]byte(data), &w); err != nil {
		return RefreshRecord{}, errors.New("sigil: stored refresh record is invalid: " + err.Error())
	}
	return RefreshRecord(w), nil
}

func (s *RedisRefreshStore) userKey(sub string) string {
	return s.r.key("refresh", "{"+sub+"}")
}

func (s *RedisRefreshStore) orderKey(sub string) string {
	return s.r.key("refresh", "{"+sub+"}", "order")
}

func (s *RedisRefreshStore) tokenKey(hash string) string {
	return s.r.key("refresh", "tok", hash)
}

func (s *RedisRefreshStore) familyKey(family string) string {
	return s.r.key("refresh", "fam", family)
}

// refreshCreateScript stores a record and, for a new family, evicts the
// subject's oldest live families beyond the cap. It first forgets the
// subject's expired families.
//
// KEYS[1] the subject's hash, KEYS[2] its order set.
// ARGV[1] token hash, ARGV[2] family, ARGV[3] record, ARGV[4] the record's
// expiry (Unix ms), ARGV[5] now (Unix ms), ARGV[6] the cap, ARGV[7] TTL (ms),
// ARGV[8] "1" for a login's record, ARGV[9] the most tokens a family keeps:
// beyond, it forgets its oldest used token, else its oldest that is not a
// login's (l:<hash>), as MemoryRefreshStore does.
// Returns the token hashes and the families it forgot, for their indexes.
var refreshCreateScript = rueidis.NewLuaScript(`
local U, O = KEYS[1], KEYS[2]
local h, f = ARGV[1], ARGV[2]
local exp, now, cap, ttl = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
local maxtok = tonumber(ARGV[9])
local toks, fams = {}, {}
local function forget(fam)
  for t in string.gmatch(redis.call('HGET', U, 't:'..fam) or '', '%S+') do
    redis.call('HDEL', U, 'r:'..t, 'e:'..t, 'u:'..t, 'l:'..t)
    table.insert(toks, t)
  end
  redis.call('HDEL', U, 't:'..fam, 'x:'..fam, 'v:'..fam)
  redis.call('ZREM', O, fam)
  table.insert(fams, fam)
end
for _, fam in ipairs(redis.call('ZRANGE', O, 0, -1)) do
  local x = tonumber(redis.call('HGET', U, 'x:'..fam))
  if fam ~= f and (not x or x <= now) then forget(fam) end
end
local new = redis.call('HEXISTS', U, 'x:'..f) == 0
local list = redis.call('HGET', U, 't:'..f)
redis.call('HSET', U, 'r:'..h, ARGV[3], 'e:'..h, ARGV[4], 't:'..f, list and (list..' '..h) or h)
if ARGV[8] == '1' then redis.call('HSET', U, 'l:'..h, '1') end
local all = {}
for t in string.gmatch(redis.call('HGET', U, 't:'..f), '%S+') do table.insert(all, t) end
if #all > maxtok then
  local drop
  for i, t in ipairs(all) do
    if redis.call('HEXISTS', U, 'u:'..t) == 1 then drop = i break end
    if not drop and redis.call('HEXISTS', U, 'l:'..t) == 0 then drop = i end
  end
  if drop then
    local t = table.remove(all, drop)
    redis.call('HDEL', U, 'r:'..t, 'e:'..t, 'u:'..t, 'l:'..t)
    redis.call('HSET', U, 't:'..f, table.concat(all, ' '))
    table.insert(toks, t)
  end
end
if new or exp > tonumber(redis.call('HGET', U, 'x:'..f)) then redis.call('HSET', U, 'x:'..f, ARGV[4]) end
if new then
  redis.call('ZADD', O, redis.call('HINCRBY', U, 'n', 1), f)
  local live = {}
  for _, fam in ipairs(redis.call('ZRANGE', O, 0, -1)) do
    if redis.call('HEXISTS', U, 'v:'..fam) == 0 then table.insert(live, fam) end
  end
  for i = 1, #live - cap do forget(live[i]) end
end
for _, k in ipairs(KEYS) do
  if redis.call('PTTL', k) < ttl then redis.call('PEXPIRE', k, ttl) end
end
return {toks, fams}
`)

// refreshLookupScript finds a token and, for Use, marks it used.
//
// KEYS[1] the subject's hash. ARGV[1] token hash, ARGV[2] family, ARGV[3]
// now (Unix ms), ARGV[4] "use" to consume it.
// Returns {0} (unknown or expired), {1, record} (usable; now used if
// ARGV[4] is "use") or {2, record} (already used, or its family revoked).
var refreshLookupScript = rueidis.NewLuaScript(`
local h = ARGV[1]
local v = redis.call('HMGET', KEYS[1], 'r:'..h, 'e:'..h, 'u:'..h, 'v:'..ARGV[2])
if not v[1] or not v[2] or tonumber(v[2]) <= tonumber(ARGV[3]) then return {0} end
if v[3] or v[4] then return {2, v[1]} end
if ARGV[4] == 'use' then redis.call('HSET', KEYS[1], 'u:'..h, '1') end
return {1, v[1]}
`)

// refreshRevokeScript marks a family revoked and returns its records.
//
// KEYS[1] the subject's hash. ARGV[1] family.
var refreshRevokeScript = rueidis.NewLuaScript(`
local f = ARGV[1]
if redis.call('HEXISTS', KEYS[1], 'x:'..f) == 0 then return {} end
redis.call('HSET', KEYS[1], 'v:'..f, '1')
local out = {}
for t in string.gmatch(redis.call('HGET', KEYS[1], 't:'..f) or '', '%S+') do
  local r = redis.call('HGET', KEYS[1], 'r:'..t)
  if r then table.insert(out, r) end
end
return out
`)

// Create implements RefreshStore.
func (s *RedisRefreshStore) Create(ctx context.Context, rec RefreshRecord) error {
	data, err := json.Marshal(refreshWire(rec))
	if err != nil {
		return err
	}
	sub, fam, hash := redisKeyPart(rec.Subject), redisKeyPart(rec.Family), redisKeyPart(rec.Hash)
	ttl := s.r.ttl(rec.Expires)
	loginFlag := "0"
	if rec.Login {
		loginFlag = "1"
	}
	return s.r.call(ctx, "refresh.create", func(ctx context.Context) error {
		c := s.r.client
		res, err := refreshCreateScript.Exec(ctx, c, []string{s.userKey(sub), s.orderKey(sub)}, []string{
			hash, fam, string(data), strconv.FormatInt(rec.Expires.UnixMilli(), 10),
			strconv.FormatInt(s.r.now().UnixMilli(), 10), strconv.Itoa(s.max), strconv.FormatInt(ttl, 10),
			loginFlag, strconv.Itoa(maxFamilyTokens),
		}).ToArray()
		if err != nil {
			return err
		}
		if len(res) != 2 {
			return errors.New("refresh create script: unexpected reply")
		}
		toks, err1 := res[0].AsStrSlice()
		fams, err2 := res[1].AsStrSlice()
		if err := errors.Join(err1, err2); err != nil {
			return err
		}
		// The indexes are separate keys (other slots on Cluster). An index
		// left behind by a failure points to nothing and reads as unknown.
		cmds := make(rueidis.Commands, 0, 2+len(toks)+len(fams))
		cmds = append(cmds,
			c.B().Set().Key(s.tokenKey(hash)).Value(sub+":"+fam).PxMilliseconds(ttl).Build(),
			c.B().Set().Key(s.familyKey(fam)).Value(sub).PxMilliseconds(ttl).Build())
		for _, t := range toks {
			cmds = append(cmds, c.B().Del().Key(s.tokenKey(t)).Build())
		}
		for _, f := range fams {
			cmds = append(cmds, c.B().Del().Key(s.familyKey(f)).Build())
		}
		for _, r := range c.DoMulti(ctx, cmds...) {
			if err := r.Error(); err != nil {
				return err
			}
		}
		return nil
	})
}

// Get implements RefreshStore.
func (s *RedisRefreshStore) Get(ctx context.Context, hash string) (RefreshRecord, error) {
	return s.lookup(ctx, "refresh.get", hash, "get")
}

// Use implements RefreshStore.
func (s *RedisRefreshStore) Use(ctx context.Context, hash string) (RefreshRecord, error) {
	return s.lookup(ctx, "refresh.use", hash, "use")
}

func (s *RedisRefreshStore) lookup(ctx context.Context, op, hash, mode string) (RefreshRecord, error) {
	var (
		verdict int64
		data    string
	)
	hash = redisKeyPart(hash)
	err := s.r.call(ctx, op, func(ctx context.Context) error {
		c := s.r.client
		idx, err := c.Do(ctx, c.B().Get().Key(s.tokenKey(hash)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return nil // verdict 0: unknown
		}
		if err != nil {
			return err
		}
		sub, fam, ok := strings.Cut(idx, ":")
		if !ok {
			return errors.New("refresh token index is invalid")
		}
		res, err := refreshLookupScript.Exec(ctx, c, []string{s.userKey(sub)},
			[]string{hash, fam, strconv.FormatInt(s.r.now().UnixMilli(), 10), mode}).ToArray()
		if err != nil {
			return err
		}
		if len(res) == 0 {
			return errors.New("refresh lookup script: empty reply")
		}
		if verdict, err = res[0].AsInt64(); err != nil || verdict == 0 {
			return err
		}
		if len(res) != 2 {
			return errors.New("refresh lookup script: unexpected reply")
		}
		data, err = res[1].ToString()
		return err
	})
	if err != nil {
		return RefreshRecord{}, err
	}
	if verdict == 0 {
		return RefreshRecord{}, ErrRefreshInvalid
	}
	rec, err := decodeRefreshRecord(data)
	if err != nil {
		return RefreshRecord{}, err
	}
	if verdict == 2 {
		return rec, ErrRefreshReused
	}
	return rec, nil
}

// RevokeFamily implements RefreshStore.
func (s *RedisRefreshStore) RevokeFamily(ctx context.Context, family string) ([]string, error) {
	var records []string
	fam := redisKeyPart(family)
	err := s.r.call(ctx, "refresh.revoke_family", func(ctx context.Context) error {
		c := s.r.client
		sub, err := c.Do(ctx, c.B().Get().Key(s.familyKey(fam)).Build()).ToString()
		if rueidis.IsRedisNil(err) {
			return nil
		}
		if err != nil {
			return err
		}
		records, err = refreshRevokeScript.Exec(ctx, c, []string{s.userKey(sub)}, []string{fam}).AsStrSlice()
		return err
	})
	if err != nil {
		return nil, err
	}
	var jtis []string
	for _, data := range records {
		rec, err := decodeRefreshRecord(data)
		if err != nil {
			return nil, err
		}
		if rec.TokenID != "" {
			jtis = append(jtis, rec.TokenID)
		}
	}
	return jtis, nil
}
