package server_test

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

var b64 = base64.RawURLEncoding

// payload builds a client envelope payload for c without signing it.
func (c *client) payload(env *protocol.Envelope, seq uint64) []byte {
	if env.ID == "" {
		env.ID = uuid.NewString()
	}
	if env.TS == 0 {
		env.TS = time.Now().UnixMilli()
	}
	env.Seq, env.Session, env.Subject = seq, c.tok.Session, c.tok.Subject
	b, err := json.Marshal(env)
	must(c.t, err)
	return b
}

// signRaw signs payload with the session key as a client frame.
func (c *client) signRaw(payload []byte) []byte {
	fr, err := c.key.SignCompact(protocol.TypClient, payload)
	must(c.t, err)
	return []byte(fr)
}

// nextSeq reserves the next seq of the signer.
func (c *client) nextSeq() uint64 {
	s := c.signer.Seq() + 1
	c.signer.SetSeq(s)
	return s
}

func rawJWS(hdr string, payload []byte, sig []byte) []byte {
	return []byte(b64.EncodeToString([]byte(hdr)) + "." + b64.EncodeToString(payload) + "." + b64.EncodeToString(sig))
}

func edSign(c *client, input string) []byte {
	return ed25519.Sign(c.raw, []byte(input))
}

// hostileEnv: a server, a hostile client and a bystander subscribed to a
// channel, to check that the others are unaffected.
func hostileEnv(t *testing.T, mod func(*server.Config)) (*env, *client, *client) {
	e := newEnv(t, mod)
	bystander := e.login("bob").connect()
	bystander.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.watch", Corr: "s"})
	bystander.recvAct(protocol.ActReply)
	bystander.recvAct(protocol.ActJoin)
	return e, e.login("alice").connect(), bystander
}

func (c *client) unaffected() { c.ping() }

func TestHostile01Handshake(t *testing.T) {
	e, _, by := hostileEnv(t, func(c *server.Config) { c.HelloTimeout = 300 * time.Millisecond })
	// No subprotocol: refused with 400.
	_, resp, err := websocket.DefaultDialer.Dial(e.wsURL(), nil)
	if err == nil || resp == nil || resp.StatusCode != http.StatusBadRequest {
		t.Fatalf("no subprotocol: %v %v", err, resp)
	}
	// Foreign origin: 403.
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	_, resp, err = d.Dial(e.wsURL(), http.Header{"Origin": {"https://evil.example"}})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("foreign origin: %v %v", err, resp)
	}
	// Same origin is allowed.
	ws, _, err := d.Dial(e.wsURL(), http.Header{"Origin": {e.url}})
	must(t, err)
	ws.Close()
	// No hello: close 4000.
	c := e.login("alice").dial()
	c.expectClose(protocol.CloseHelloTimeout)
	// A first frame that is not hello: hello_required, 4001.
	c = e.login("alice").dial()
	c.send(&protocol.Envelope{Action: protocol.ActPing})
	c.expectHelloError(protocol.CodeHelloRequired)
	c.expectClose(protocol.CloseHelloRejected)
	by.unaffected()
}

func TestHostile02BadHello(t *testing.T) {
	srvKey, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	e, _, by := hostileEnv(t, func(c *server.Config) { c.Keys = []*protocol.PrivateKey{srvKey} })
	issuer := func(k *protocol.PrivateKey, at time.Time) *protocol.TokenIssuer {
		return &protocol.TokenIssuer{Key: k, Issuer: "sigil", Audience: "sigil.v1", TTL: time.Minute, Now: func() time.Time { return at }}
	}
	// Expired token: token_expired, 4002.
	c := e.login("alice")
	tok, _, err := issuer(srvKey, time.Now().Add(-time.Hour)).Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"user"}, JKT: c.key.Public().Thumbprint(), Session: c.tok.Session})
	must(t, err)
	c.dial().write(c.helloFrame(tok))
	c.expectHelloError(protocol.CodeTokenExpired)
	c.expectClose(protocol.CloseTokenExpired)
	// Token bound to another key: key_mismatch, 4001.
	c = e.login("alice")
	other := e.login("alice")
	c.dial().write(c.helloFrame(other.tok.Token))
	c.expectHelloError(protocol.CodeKeyMismatch)
	c.expectClose(protocol.CloseHelloRejected)
	// Token signed by an unknown key: bad_token, 4001.
	rogue, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	c = e.login("alice")
	tok, _, err = issuer(rogue, time.Now()).Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"admin"}, JKT: c.key.Public().Thumbprint(), Session: c.tok.Session})
	must(t, err)
	c.dial().write(c.helloFrame(tok))
	c.expectHelloError(protocol.CodeBadToken)
	c.expectClose(protocol.CloseHelloRejected)
	by.unaffected()
}

func TestHostile03HeaderAttacks(t *testing.T) {
	_, c, by := hostileEnv(t, nil)
	kid := c.key.KeyID()
	p := c.payload(&protocol.Envelope{Action: protocol.ActPing}, c.nextSeq())
	// alg none.
	c.write(rawJWS(`{"alg":"none","kid":"`+kid+`","typ":"sigil-client+jws"}`, p, []byte{0}))
	c.expectError(protocol.CodeBadHeader)
	// HS256 keyed with the public key.
	h := `{"alg":"HS256","kid":"` + kid + `","typ":"sigil-client+jws"}`
	input := b64.EncodeToString([]byte(h)) + "." + b64.EncodeToString(p)
	mac := hmac.New(sha256.New, c.key.Public().Key().(ed25519.PublicKey))
	mac.Write([]byte(input))
	c.write([]byte(input + "." + b64.EncodeToString(mac.Sum(nil))))
	c.expectError(protocol.CodeBadHeader)
	// Embedded jwk (with a valid signature).
	h = `{"alg":"EdDSA","jwk":` + string(c.jwk) + `,"kid":"` + kid + `","typ":"sigil-client+jws"}`
	input = b64.EncodeToString([]byte(h)) + "." + b64.EncodeToString(p)
	c.write([]byte(input + "." + b64.EncodeToString(edSign(c, input))))
	c.expectError(protocol.CodeBadHeader)
	c.ping()
	by.unaffected()
}

func TestHostile04WrongTyp(t *testing.T) {
	_, c, by := hostileEnv(t, nil)
	p := c.payload(&protocol.Envelope{Action: protocol.ActPing}, c.nextSeq())
	fr, err := c.key.SignCompact(protocol.TypServer, p)
	must(t, err)
	c.write([]byte(fr))
	c.expectError(protocol.CodeBadTyp)
	// A session token sent as a message.
	c.write([]byte(c.tok.Token))
	c.expectError(protocol.CodeBadTyp)
	c.ping()
	by.unaffected()
}

func TestHostile05BitFlips(t *testing.T) {
	_, c, by := hostileEnv(t, nil)
	fr := c.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.watch", Body: json.RawMessage(`{"text":"x"}`)})
	parts := strings.Split(string(fr), ".")
	flip := func(seg int, find string) []byte {
		raw, err := b64.DecodeString(parts[seg])
		must(t, err)
		i := 0
		if find != "" {
			i = bytes.Index(raw, []byte(find)) + len(find)
		}
		raw[i] ^= 0x01
		out := append([]string(nil), parts...)
		out[seg] = b64.EncodeToString(raw)
		return []byte(strings.Join(out, "."))
	}
	c.write(flip(0, `"kid":"`)) // a bit of the kid
	c.expectError(protocol.CodeUnknownKey)
	c.write(flip(1, `"ch":"`)) // a bit of the channel name
	c.expectError(protocol.CodeBadSignature)
	c.write(flip(2, ""))
	c.expectError(protocol.CodeBadSignature)
	c.ping()
	by.unaffected()
}

func TestHostile06Replay(t *testing.T) {
	e, c, by := hostileEnv(t, nil)
	fr := c.sign(&protocol.Envelope{Action: protocol.ActPing, Corr: "1"})
	c.write(fr)
	c.recvAct(protocol.ActPong)
	c.write(fr) // exact replay
	c.expectError(protocol.CodeReplayID)
	// Same id, new timestamp and a fresh seq, validly signed.
	var env protocol.Envelope
	raw, _ := b64.DecodeString(strings.Split(string(fr), ".")[1])
	must(t, json.Unmarshal(raw, &env))
	id := env.ID
	c.write(c.signRaw(c.payload(&protocol.Envelope{ID: id, Action: protocol.ActPing, TS: time.Now().UnixMilli() + 5}, c.nextSeq())))
	c.expectError(protocol.CodeReplayID)
	// Replay on a new connection of the same session.
	c2 := &client{t: t, e: e, key: c.key, raw: c.raw, jwk: c.jwk, tok: c.tok, signer: c.signer, fv: c.fv}
	c2.connect()
	c2.write(fr)
	c2.expectError(protocol.CodeReplayID)
	c2.ping()
	c.ping()
	by.unaffected()
}

func TestHostile07FreshnessAndSeq(t *testing.T) {
	_, c, by := hostileEnv(t, nil)
	c.write(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActPing, TS: time.Now().Add(-time.Hour).UnixMilli()}, c.nextSeq())))
	c.expectError(protocol.CodeStale)
	c.write(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActPing, TS: time.Now().Add(time.Hour).UnixMilli()}, c.nextSeq())))
	c.expectError(protocol.CodeFuture)
	c.ping()
	last := c.signer.Seq()
	c.write(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActPing}, last-1))) // backwards
	c.expectError(protocol.CodeReplaySeq)
	c.write(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActPing}, last))) // repeated
	c.expectError(protocol.CodeReplaySeq)
	c.ping()
	by.unaffected()
}

func TestHostile08DuplicateClaims(t *testing.T) {
	_, c, by := hostileEnv(t, nil)
	base := string(c.payload(&protocol.Envelope{Action: "ping"}, c.nextSeq()))
	dup := strings.Replace(base, `"act":"ping"`, `"act":"ping","act":"admin"`, 1)
	c.write(c.signRaw([]byte(dup)))
	c.expectError(protocol.CodeBadClaims)
	base = string(c.payload(&protocol.Envelope{Action: "ping"}, c.nextSeq()))
	variant := strings.Replace(base, `"act":"ping"`, `"act":"ping","Act":"admin"`, 1)
	c.write(c.signRaw([]byte(variant)))
	c.expectError(protocol.CodeBadClaims)
	c.ping()
	by.unaffected()
}

func TestHostile09SizeDepthUTF8(t *testing.T) {
	e, c, by := hostileEnv(t, nil)
	// Over max_frame but under the read limit: too_large, stays up.
	big := strings.Repeat("a", protocol.DefaultMaxFrame)
	c.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.watch", Body: json.RawMessage(`"` + big + `"`)})
	c.expectError(protocol.CodeTooLarge)
	// Deeply nested JSON body.
	deep := strings.Repeat("[", 100) + strings.Repeat("]", 100)
	c.write(c.signRaw(c.payload(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.watch", Body: json.RawMessage(deep)}, c.nextSeq())))
	c.expectError(protocol.CodeBadClaims)
	// Invalid UTF-8 inside a signed payload: bad_claims.
	p := c.payload(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.watch", Body: json.RawMessage(`"x"`)}, c.nextSeq())
	p = bytes.Replace(p, []byte(`"x"`), []byte("\"\xff\""), 1)
	c.write(c.signRaw(p))
	c.expectError(protocol.CodeBadClaims)
	c.ping()
	// Over the read limit: close 1009.
	c.write([]byte(strings.Repeat("A", 4*protocol.DefaultMaxFrame+1)))
	c.expectClose(websocket.CloseMessageTooBig)
	// A text frame that is not UTF-8 (RFC 6455 §8.1): close 1007, with no
	// error frame, in a session and as the hello.
	c = e.login("alice").connect()
	c.write([]byte("\xff\xfe.\xff.\xff"))
	c.expectCloseFirst(websocket.CloseInvalidFramePayloadData)
	c = e.login("alice").dial()
	c.write(append(c.helloFrame(c.tok.Token), 0xff))
	c.expectCloseFirst(websocket.CloseInvalidFramePayloadData)
	by.unaffected()
}

func TestHostile10Forbidden(t *testing.T) {
	e, c, by := hostileEnv(t, nil)
	c.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "announce.all", Body: json.RawMessage(`1`), Corr: "x"})
	if eb := c.expectError(protocol.CodeForbidden); eb.Ref == "" {
		t.Fatal("no ref")
	}
	c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "secret.stuff"})
	c.expectError(protocol.CodeForbidden)
	m := e.login("mallory").connect() // no roles
	m.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`1`)})
	m.expectError(protocol.CodeForbidden)
	c.send(&protocol.Envelope{Action: "admin.anything", Corr: "y"})
	m2 := c.recvAct(protocol.ActError)
	if m2.Corr != "y" {
		t.Fatal("cid not copied into the error")
	}
	c.ping()
	by.unaffected()
}

func heapInuse() uint64 {
	var ms runtime.MemStats
	for i := 0; i < 3; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

func TestHostile11JunkFlood(t *testing.T) {
	e, _, by := hostileEnv(t, nil)
	other := e.login("carol").connect()
	before := heapInuse()
	c := e.login("alice").connect()
	var wg sync.WaitGroup
	wg.Add(1)
	sent := 0
	go func() {
		defer wg.Done()
		junk := []byte("this is not a jws at all")
		for ; sent < 10000; sent++ {
			if c.ws.WriteMessage(websocket.TextMessage, junk) != nil {
				return
			}
		}
	}()
	c.expectClose(websocket.ClosePolicyViolation)
	wg.Wait()
	c.ws.Close()
	by.unaffected()
	other.unaffected()
	// Memory returns to where it was (tolerance 1 MiB).
	var after uint64
	for i := 0; i < 50; i++ {
		if after = heapInuse(); after < before+1<<20 {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after > before+1<<20 {
		t.Fatalf("heap in use grew from %d to %d", before, after)
	}
	t.Logf("junk frames written before the close: %d; heap before %d after %d", sent, before, after)
}

func TestHostile12Churn(t *testing.T) {
	e := newEnv(t, nil)
	c := e.login("alice")
	c.connect()
	c.ws.Close()
	settle := func() int {
		n := runtime.NumGoroutine()
		for i := 0; i < 100; i++ {
			time.Sleep(20 * time.Millisecond)
			if m := runtime.NumGoroutine(); m == n {
				break
			} else {
				n = m
			}
		}
		return n
	}
	time.Sleep(100 * time.Millisecond)
	before := settle()
	cycles := 2000
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}}
	for i := 0; i < cycles; i++ {
		ws, _, err := d.Dial(e.wsURL(), nil)
		must(t, err)
		must(t, ws.WriteMessage(websocket.TextMessage, c.helloFrame(c.tok.Token)))
		_ = ws.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, _, err := ws.ReadMessage(); err != nil {
			t.Fatal(err)
		}
		if i%2 == 0 { // half close cleanly, half just drop the socket
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(1000, ""), time.Now().Add(time.Second))
		}
		ws.Close()
	}
	var after int
	for i := 0; i < 100; i++ {
		if after = settle(); after <= before {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if after > before {
		buf := make([]byte, 1<<20)
		t.Fatalf("goroutines: %d before, %d after %d cycles\n%s", before, after, cycles, buf[:runtime.Stack(buf, true)])
	}
	if n := len(e.srv.Sessions()); n != 0 {
		t.Fatalf("%d sessions left", n)
	}
}
