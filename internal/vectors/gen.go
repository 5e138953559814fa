package vectors

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"sort"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/sigil-ws/sigil/protocol"
)

// Fixed inputs of every vector.
const (
	NowMS    = int64(1767225600000) // 2026-01-01T00:00:00Z
	Issuer   = "https://sigil.test"
	Audience = "wss://sigil.test/v1/ws"
	SkewMS   = int64(30000)
	MaxFrame = 65536
)

// Policy is the policy every vector is checked against (policy.json): the
// default policy plus an application action.
var Policy = append(protocol.DefaultPolicy().Rules(), protocol.Rule{Action: "orders.create", Roles: []string{"trader"}})

var b64 = base64.RawURLEncoding

// gen holds the fixed keys and a deterministic source of ids.
type gen struct {
	now       time.Time
	rnd       io.Reader
	srv       *protocol.PrivateKey // signs tokens and server frames
	srvES     *protocol.PrivateKey // second JWKS key (ES256)
	rogue     *protocol.PrivateKey // a server key that is not in the JWKS
	sess      map[string]*protocol.PrivateKey
	agree     map[string]*ecdsa.PrivateKey
	jwks      *protocol.KeySet
	chKey     *protocol.ContentKey // channel key of rooms.lobby
	aliceKey  *protocol.ContentKey // alice's session content key
	bobKey    *protocol.ContentKey // bob's session content key
	ephemeral int                  // counts the ephemeral keys of hand-built wrapped keys
	out       []Vector
}

type seeded struct{ r *rand.ChaCha8 }

func (s seeded) Read(p []byte) (int, error) { return s.r.Read(p) }

func newGen() (*gen, error) {
	g := &gen{now: time.UnixMilli(NowMS), sess: map[string]*protocol.PrivateKey{}, agree: map[string]*ecdsa.PrivateKey{}}
	g.rnd = seeded{rand.NewChaCha8([32]byte([]byte("sigil test vectors, fixed seed!!")))}
	var err error
	if g.srv, err = protocol.KeyFromSeed(protocol.EdDSA, "sigil vectors server ed25519", "sigil-test-1"); err != nil {
		return nil, err
	}
	if g.srvES, err = protocol.KeyFromSeed(protocol.ES256, "sigil vectors server p256", "sigil-test-2"); err != nil {
		return nil, err
	}
	if g.rogue, err = protocol.KeyFromSeed(protocol.EdDSA, "sigil vectors rogue", "sigil-test-1"); err != nil {
		return nil, err
	}
	for _, k := range []struct {
		name string
		alg  jose.SignatureAlgorithm
	}{{"alice-eddsa", protocol.EdDSA}, {"alice-es256", protocol.ES256}, {"bob-eddsa", protocol.EdDSA}, {"mallory-eddsa", protocol.EdDSA}} {
		if g.sess[k.name], err = protocol.KeyFromSeed(k.alg, "sigil vectors session "+k.name, ""); err != nil {
			return nil, err
		}
	}
	for _, name := range []string{"alice", "bob"} {
		s := sha256.Sum256([]byte("sigil vectors agreement " + name))
		k, err := ecdsa.ParseRawPrivateKey(ecdsaCurve(), s[:])
		if err != nil {
			return nil, err
		}
		g.agree[name] = k
	}
	if g.jwks, err = protocol.NewKeySet(g.srv.Public(), g.srvES.Public()); err != nil {
		return nil, err
	}
	g.chKey = g.contentKey("ch:rooms.lobby")
	g.aliceKey = g.contentKey(protocol.ScopeSession)
	g.bobKey = g.contentKey(protocol.ScopeSession)
	return g, nil
}

func (g *gen) contentKey(scope string) *protocol.ContentKey {
	k, err := protocol.NewContentKey(scope, g.rnd)
	if err != nil {
		panic(err)
	}
	return k
}

func (g *gen) uuid() string {
	var b [16]byte
	io.ReadFull(g.rnd, b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (g *gen) clock() time.Time { return g.now }

func (g *gen) config() Config {
	return Config{SkewMS: SkewMS, MaxFrame: MaxFrame, Issuer: Issuer, Audience: Audience}
}

// identity is a client session: key, token and signer.
type identity struct {
	key    *protocol.PrivateKey
	claims *protocol.SessionClaims
	token  string
	signer *protocol.ClientSigner
}

func (g *gen) issue(sub string, roles []string, key *protocol.PrivateKey, signWith *protocol.PrivateKey, mod func(*protocol.TokenIssuer)) (string, *protocol.SessionClaims) {
	iss := &protocol.TokenIssuer{Key: signWith, Issuer: Issuer, Audience: Audience, TTL: 15 * time.Minute, Now: func() time.Time { return g.now.Add(-time.Minute) }, Rand: g.rnd}
	if mod != nil {
		mod(iss)
	}
	tok, c, err := iss.Issue(protocol.IssueRequest{Subject: sub, Roles: roles, JKT: key.Public().Thumbprint()})
	if err != nil {
		panic(err)
	}
	return tok, c
}

func (g *gen) identity(sub string, roles []string, keyName string) *identity {
	key := g.sess[keyName]
	tok, c := g.issue(sub, roles, key, g.srv, nil)
	return &identity{key: key, claims: c, token: tok,
		signer: &protocol.ClientSigner{Key: key, Session: c.Session, Subject: sub, Now: g.clock, Rand: g.rnd}}
}

func (g *gen) sign(id *identity, env *protocol.Envelope) string {
	f, err := id.signer.Sign(env)
	if err != nil {
		panic(err)
	}
	return string(f)
}

func (g *gen) serverSign(env *protocol.Envelope) string {
	s := &protocol.ServerSigner{Key: g.srv, Now: g.clock, Rand: g.rnd}
	f, err := s.Sign(env)
	if err != nil {
		panic(err)
	}
	return string(f)
}

// rawJWS builds a compact JWS from literal header and payload JSON, signed
// with an Ed25519 key. It exists only to craft invalid inputs that a JOSE
// library refuses to produce.
func rawJWS(priv ed25519.PrivateKey, header, payload string) string {
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	return in + "." + b64.EncodeToString(ed25519.Sign(priv, []byte(in)))
}

func edPriv(k *protocol.PrivateKey) ed25519.PrivateKey {
	var raw struct {
		D string `json:"d"`
	}
	b, _ := k.MarshalPrivateJWK()
	json.Unmarshal(b, &raw)
	seed, _ := b64.DecodeString(raw.D)
	return ed25519.NewKeyFromSeed(seed)
}

func hdr(alg, kid, typ string) string {
	return fmt.Sprintf(`{"alg":%q,"kid":%q,"typ":%q}`, alg, kid, typ)
}

// payload marshals an envelope the way signers do.
func payload(env *protocol.Envelope) string {
	b, err := env.Marshal()
	if err != nil {
		panic(err)
	}
	return string(b)
}

// flip flips the lowest bit of the character at i of s, staying in the
// base64url alphabet.
func flip(s string, i int) string {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	j := strings.IndexByte(alphabet, s[i])
	return s[:i] + string(alphabet[j^1]) + s[i+1:]
}

func hs256(key []byte, header, payload string) string {
	in := b64.EncodeToString([]byte(header)) + "." + b64.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, key)
	m.Write([]byte(in))
	return in + "." + b64.EncodeToString(m.Sum(nil))
}

func (g *gen) add(v Vector) {
	if v.Now == 0 {
		v.Now = NowMS
	}
	if v.Config == (Config{}) {
		v.Config = g.config()
	}
	g.out = append(g.out, v)
}

func ok(claims string, body json.RawMessage) Expect {
	return Expect{Result: "ok", Claims: json.RawMessage(claims), Body: body}
}

func fail(code protocol.Code) Expect { return Expect{Result: "error", Code: string(code)} }

func claimsOf(frame string) string {
	parts := strings.Split(frame, ".")
	b, err := b64.DecodeString(parts[1])
	if err != nil {
		panic(err)
	}
	return string(b)
}

func bodyOf(frame string) json.RawMessage {
	var e struct {
		Body json.RawMessage `json:"body"`
	}
	json.Unmarshal([]byte(claimsOf(frame)), &e)
	return e.Body
}

func (g *gen) sessionOf(id *identity, keys ...*protocol.ContentKey) *Session {
	jwk, _ := id.key.Public().MarshalJSON()
	s := &Session{SID: id.claims.Session, Sub: id.claims.Subject, Roles: id.claims.Roles, JWK: jwk,
		JTI: id.claims.ID, IAT: id.claims.IssuedAt, EXP: id.claims.Expiry}
	for _, k := range keys {
		s.ContentKeys = append(s.ContentKeys, ContentKey{Kid: k.ID, K: b64.EncodeToString(k.Key), Scope: k.Scope})
	}
	return s
}

func ckOf(keys ...*protocol.ContentKey) []ContentKey {
	var out []ContentKey
	for _, k := range keys {
		out = append(out, ContentKey{Kid: k.ID, K: b64.EncodeToString(k.Key), Scope: k.Scope})
	}
	return out
}

// Files returns every file of testdata/vectors/, by path relative to it.
func Files() (map[string][]byte, error) {
	g, err := newGen()
	if err != nil {
		return nil, err
	}
	g.helloVectors()
	g.clientVectors()
	g.serverVectors()
	g.deliveryVectors()
	g.tokenVectors()
	g.encodingVectors()
	g.wrapVectors()
	g.jwkVectors()
	g.specVectors()
	g.grantsVectors()
	g.historyVectors()
	files := map[string][]byte{}
	names := map[string]bool{}
	for _, v := range g.out {
		if names[v.Name] {
			return nil, fmt.Errorf("duplicate vector name %s", v.Name)
		}
		names[v.Name] = true
		b, err := json.MarshalIndent(v, "", "  ")
		if err != nil {
			return nil, err
		}
		files["cases/"+v.Name+".json"] = append(b, '\n')
	}
	keys, err := g.keysFile()
	if err != nil {
		return nil, err
	}
	files["keys.json"] = keys
	pol, err := json.MarshalIndent(struct {
		Rules []protocol.Rule `json:"rules"`
	}{Policy}, "", "  ")
	if err != nil {
		return nil, err
	}
	files["policy.json"] = append(pol, '\n')
	return files, nil
}

func (g *gen) keysFile() ([]byte, error) {
	k := Keys{ServerPrivate: map[string]json.RawMessage{}, SessionKeys: map[string]json.RawMessage{}, Agreement: map[string]json.RawMessage{}}
	var err error
	if k.ServerJWKS, err = g.jwks.MarshalJSON(); err != nil {
		return nil, err
	}
	for name, key := range map[string]*protocol.PrivateKey{"sigil-test-1": g.srv, "sigil-test-2": g.srvES} {
		if k.ServerPrivate[name], err = key.MarshalPrivateJWK(); err != nil {
			return nil, err
		}
	}
	names := make([]string, 0, len(g.sess))
	for n := range g.sess {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		if k.SessionKeys[n], err = g.sess[n].MarshalPrivateJWK(); err != nil {
			return nil, err
		}
	}
	for n, a := range g.agree {
		b, err := json.Marshal(jose.JSONWebKey{Key: a, Algorithm: string(jose.ECDH_ES_A256KW), Use: "enc"})
		if err != nil {
			return nil, err
		}
		k.Agreement[n] = b
	}
	b, err := json.MarshalIndent(k, "", "  ")
	return append(b, '\n'), err
}
