package client_test

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
)

// hostile is a small test-only server that speaks just enough of the
// protocol (hello/welcome, sub, ping) to put a real client in a session,
// and then writes whatever frames the test hands it: it is the source of
// hostile input, signed with protocol.ServerSigner or deliberately not.
type hostile struct {
	t      *testing.T
	key    *protocol.PrivateKey
	signer *protocol.ServerSigner
	sid    string
	out    chan []byte
	hs     *httptest.Server

	// first, if set, makes the frames written in answer to a hello
	// instead of the welcome; closed receives the client's close code.
	first  func(hello *protocol.Envelope) [][]byte
	closed chan int

	conns atomic.Int32 // connections so far

	mu   sync.Mutex
	kill func(code int) // closes the latest connection with code
}

// closeWith closes the latest connection with a close frame with code.
func (h *hostile) closeWith(code int) {
	h.mu.Lock()
	kill := h.kill
	h.mu.Unlock()
	kill(code)
}

func newHostile(t *testing.T) *hostile {
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	h := &hostile{t: t, key: key, signer: &protocol.ServerSigner{Key: key}, sid: uuid.NewString(), out: make(chan []byte, 16), closed: make(chan int, 16)}
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	h.hs = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		h.conns.Add(1)
		var wmu sync.Mutex
		write := func(b []byte) {
			wmu.Lock()
			defer wmu.Unlock()
			_ = ws.WriteMessage(websocket.TextMessage, b)
		}
		h.mu.Lock()
		h.kill = func(code int) {
			wmu.Lock()
			defer wmu.Unlock()
			_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(code, "test"), time.Now().Add(time.Second))
		}
		h.mu.Unlock()
		done := make(chan struct{})
		defer close(done)
		go func() {
			for {
				select {
				case b := <-h.out:
					write(b)
				case <-done:
					return
				}
			}
		}()
		for {
			_, data, err := ws.ReadMessage()
			if err != nil {
				if ce, ok := err.(*websocket.CloseError); ok {
					h.closed <- ce.Code
				}
				return
			}
			payload, err := protocol.UnsafeClaims(data) // the client is not under test here
			if err != nil {
				return
			}
			var env protocol.Envelope
			_ = json.Unmarshal(payload, &env)
			var fr []byte
			switch env.Action {
			case protocol.ActHello:
				if h.first != nil {
					for _, fr := range h.first(&env) {
						write(fr)
					}
					continue
				}
				fr = h.welcome(&env)
			case protocol.ActSub:
				fr, _ = h.signer.SignBody(&protocol.Envelope{Action: protocol.ActReply, Session: h.sid, Corr: env.Corr, Channel: env.Channel},
					protocol.SubReplyBody{Members: []string{"alice"}})
			case protocol.ActPing:
				fr, _ = h.signer.Sign(&protocol.Envelope{Action: protocol.ActPong, Session: h.sid, Corr: env.Corr})
			default:
				continue
			}
			write(fr)
		}
	}))
	t.Cleanup(h.hs.Close)
	return h
}

// dial connects a real client to h as alice, with a fresh session key and
// the JWKS pinned to h's key (nothing is fetched); mod adjusts the options.
func (h *hostile) dial(mod func(*client.Options)) (*client.Client, error) {
	ks, err := protocol.NewKeySet(h.key.Public())
	must(h.t, err)
	ckey, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(h.t, err)
	o := &client.Options{
		Tokens: client.SessionToken(client.Token{Token: "opaque-test-token", Key: ckey, Session: h.sid, Subject: "alice"}),
		JWKS:   ks,
	}
	if mod != nil {
		mod(o)
	}
	return client.Dial(ctxT(h.t), "ws"+strings.TrimPrefix(h.hs.URL, "http")+"/v1/ws", o)
}

func (h *hostile) welcome(hello *protocol.Envelope) []byte {
	fr, err := h.signer.SignBody(&protocol.Envelope{Action: protocol.ActWelcome, Session: h.sid, Corr: hello.Corr},
		protocol.WelcomeBody{Session: h.sid, Subject: "alice", Roles: []string{"user"}, Expiry: time.Now().Add(time.Hour).UnixMilli(),
			Time: time.Now().UnixMilli(), Skew: 30000, Window: 30000, LastSeq: hello.Seq, MaxFrame: 65536})
	must(h.t, err)
	return fr
}

// deliver makes a server-signed delivery of a publish by sender.
func (h *hostile) deliver(sender *protocol.ClientSigner, ch, text string) []byte {
	inner, err := sender.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Body: json.RawMessage(`{"text":"` + text + `"}`)})
	must(h.t, err)
	jwk, _ := sender.Key.Public().MarshalJSON()
	fr, err := h.signer.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: ch},
		protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: sender.Subject})
	must(h.t, err)
	return fr
}

func TestHostileServerFrames(t *testing.T) {
	h := newHostile(t)
	var mu sync.Mutex
	var codes []protocol.Code
	st := newStates()
	ctx := ctxT(t)
	c, err := h.dial(func(o *client.Options) {
		o.OnError = func(err error) {
			mu.Lock()
			codes = append(codes, protocol.CodeOf(err))
			mu.Unlock()
		}
		o.OnStateChange = st.record
	})
	must(t, err)
	defer c.Close()
	sub, err := c.Subscribe(ctx, "rooms.x")
	must(t, err)

	bobKey, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	bob := &protocol.ClientSigner{Key: bobKey, Session: uuid.NewString(), Subject: "bob"}

	good := h.deliver(bob, "rooms.x", "one")
	h.out <- good
	if m := next(t, sub); m.From != "bob" || string(m.Body) != `{"text":"one"}` {
		t.Fatalf("good delivery: %+v", m)
	}

	// 1. The same server frame again: replay_id.
	h.out <- good
	// 2. A delivery signed by another key under the server's kid: bad_signature.
	_, otherRaw, _ := ed25519.GenerateKey(nil)
	impostor, err := protocol.NewPrivateKey(otherRaw, h.key.KeyID())
	must(t, err)
	forged, err := (&protocol.ServerSigner{Key: impostor}).SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.x"},
		json.RawMessage(`{"x":1}`))
	must(t, err)
	h.out <- forged
	// 3. A frame signed by the server key but typed as a client frame: bad_typ.
	env := &protocol.Envelope{ID: uuid.NewString(), TS: time.Now().UnixMilli(), Action: protocol.ActPong, Session: h.sid}
	payload, _ := env.Marshal()
	wrongTyp, err := h.key.SignCompact(protocol.TypClient, payload)
	must(t, err)
	h.out <- []byte(wrongTyp)
	// 4. A genuine server signature over a delivery whose inner frame was not
	// signed by the key it names (a lying server or relay): unknown_key.
	mallKey, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	inner, _ := (&protocol.ClientSigner{Key: mallKey, Session: bob.Session, Subject: "bob"}).Sign(
		&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.x", Body: json.RawMessage(`{"text":"spoof"}`)})
	bobJWK, _ := bobKey.Public().MarshalJSON()
	spoof, _ := h.signer.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.x"},
		protocol.DeliverBody{Frame: string(inner), JWK: bobJWK, Sub: "bob"})
	h.out <- spoof
	// 5. A frame for another session: wrong_session.
	other, _ := h.signer.Sign(&protocol.Envelope{Action: protocol.ActPong, Session: uuid.NewString()})
	h.out <- other
	// 6. A stale frame: stale.
	old := &protocol.ServerSigner{Key: h.key, Now: func() time.Time { return time.Now().Add(-5 * time.Minute) }}
	stale, _ := old.Sign(&protocol.Envelope{Action: protocol.ActPong, Session: h.sid})
	h.out <- stale
	// 7. An expiring frame whose body is not {"exp": number}: bad_claims.
	badExp, _ := h.signer.SignBody(&protocol.Envelope{Action: protocol.ActExpiring, Session: h.sid}, map[string]string{"exp": "soon"})
	h.out <- badExp

	// The client stays consistent: the next good delivery arrives, once,
	// and the session still answers.
	h.out <- h.deliver(bob, "rooms.x", "two")
	if m := next(t, sub); string(m.Body) != `{"text":"two"}` {
		t.Fatalf("after hostile frames: %s", m.Body)
	}
	must(t, c.Ping(ctx))
	none(t, sub, 100*time.Millisecond)
	mu.Lock()
	got := append([]protocol.Code(nil), codes...)
	mu.Unlock()
	want := []protocol.Code{protocol.CodeReplayID, protocol.CodeBadSignature, protocol.CodeBadTyp, protocol.CodeUnknownKey, protocol.CodeWrongSession, protocol.CodeStale, protocol.CodeBadClaims}
	if len(got) != len(want) {
		t.Fatalf("reported %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("reported %v, want %v", got, want)
		}
	}
	if s := c.Stats(); s.Rejected != uint64(len(want)) || s.Delivered != 2 {
		t.Fatalf("stats %+v", s)
	}
	if c.State() != client.StateConnected || len(st.list()) != 1 {
		t.Fatalf("state %s %v", c.State(), st.list())
	}
	_ = context.Background
}

// TestFrameBeforeWelcome: a server whose first frame is not the welcome
// answering the hello breaks spec.md §8.3. The client acts on nothing: it
// closes with 1002 and Dial fails with ErrProtocolViolation. The error
// frame that rejects a hello is not a violation.
func TestFrameBeforeWelcome(t *testing.T) {
	h := newHostile(t)
	sender, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	bob := &protocol.ClientSigner{Key: sender, Session: uuid.NewString(), Subject: "bob"}
	dial := func() (*client.Client, []error, error) {
		var mu sync.Mutex
		var reported []error
		c, err := h.dial(func(o *client.Options) {
			o.OnError = func(err error) {
				mu.Lock()
				reported = append(reported, err)
				mu.Unlock()
			}
		})
		mu.Lock()
		defer mu.Unlock()
		return c, reported, err
	}
	direct := func() []byte {
		inner, err := bob.Sign(&protocol.Envelope{Action: protocol.ActDM, To: "alice", Body: json.RawMessage(`"early"`)})
		must(t, err)
		jwk, _ := sender.Public().MarshalJSON()
		fr, err := h.signer.SignBody(&protocol.Envelope{Action: protocol.ActDirect, To: "alice"},
			protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "bob"})
		must(t, err)
		return fr
	}
	expiring := func() []byte {
		fr, err := h.signer.SignBody(&protocol.Envelope{Action: protocol.ActExpiring, Session: h.sid}, protocol.ExpiringBody{Expiry: time.Now().Add(time.Minute).UnixMilli()})
		must(t, err)
		return fr
	}
	otherCid := func(hello *protocol.Envelope) []byte {
		c := *hello
		c.Corr = uuid.NewString()
		return h.welcome(&c)
	}
	for _, tc := range []struct {
		name  string
		first func(hello *protocol.Envelope) [][]byte
	}{
		{"direct before welcome", func(hello *protocol.Envelope) [][]byte { return [][]byte{direct(), h.welcome(hello)} }},
		{"expiring before welcome", func(hello *protocol.Envelope) [][]byte { return [][]byte{expiring(), h.welcome(hello)} }},
		{"welcome for another hello", func(hello *protocol.Envelope) [][]byte { return [][]byte{otherCid(hello)} }},
		{"unsigned junk", func(hello *protocol.Envelope) [][]byte { return [][]byte{[]byte("a.b.c"), h.welcome(hello)} }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h.first = tc.first
			c, reported, err := dial()
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			if !errors.Is(err, client.ErrProtocolViolation) {
				t.Fatalf("want ErrProtocolViolation, got %v", err)
			}
			if len(reported) != 1 || !errors.Is(reported[0], client.ErrProtocolViolation) {
				t.Fatalf("OnError saw %v", reported)
			}
			select {
			case code := <-h.closed:
				if code != websocket.CloseProtocolError {
					t.Fatalf("client closed with %d, want 1002", code)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the client did not close with a close frame")
			}
		})
	}
	// The error frame rejecting a hello is not a violation.
	h.first = func(hello *protocol.Envelope) [][]byte {
		fr, err := h.signer.ErrorFrame("", nil, &protocol.Error{Code: protocol.CodeBadToken, Message: "no"})
		must(t, err)
		return [][]byte{fr}
	}
	_, _, err := dial()
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseHelloRejected || protocol.CodeOf(err) != protocol.CodeBadToken {
		t.Fatalf("want a 4001 CloseError with bad_token, got %v", err)
	}
}

// TestServerTextNotUTF8: a server text frame that is not UTF-8 fails the
// connection (RFC 6455 §8.1): the client closes with 1007 and reconnects.
func TestServerTextNotUTF8(t *testing.T) {
	h := newHostile(t)
	st := newStates()
	c, err := h.dial(func(o *client.Options) { o.Reconnect, o.OnStateChange = fastReconnect, st.record })
	must(t, err)
	defer c.Close()
	h.out <- []byte("\xff\xfe.\xff.\xff")
	select {
	case code := <-h.closed:
		if code != websocket.CloseInvalidFramePayloadData {
			t.Fatalf("client closed with %d, want 1007", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the client did not close the connection")
	}
	st.wait(t, client.StateReconnecting, 5*time.Second)
	st.wait(t, client.StateConnected, 5*time.Second)
	must(t, c.Ping(ctxT(t)))
	if s := c.Stats(); s.Rejected != 1 || s.Reconnects != 1 {
		t.Fatalf("stats %+v", s)
	}
}

// TestCloseCodeRules: the client follows the table of spec.md §12.3 as
// protocol.CloseCode holds it. After 1007 (a client bug), 1008, 4004 or an
// unknown 4xxx code it does not reconnect: it closes with a *CloseError
// carrying the code and the server's reason. After 1001, 4006 and other
// 1xxx codes it reconnects with backoff.
func TestCloseCodeRules(t *testing.T) {
	h := newHostile(t)
	dial := func(st *states) *client.Client {
		c, err := h.dial(func(o *client.Options) { o.Reconnect, o.OnStateChange = fastReconnect, st.record })
		must(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}
	for _, code := range []int{1007, 1008, 4004, 4100, 4999} {
		st := newStates()
		c := dial(st)
		before := h.conns.Load()
		h.closeWith(code)
		select {
		case <-c.Done():
		case <-time.After(10 * time.Second):
			t.Fatalf("%d: the client did not close", code)
		}
		var ce *client.CloseError
		if !errors.As(c.Err(), &ce) || int(ce.Code) != code || ce.Reason != "test" {
			t.Fatalf("%d: Err() = %v, want a CloseError with the code and reason", code, c.Err())
		}
		if slices.Contains(st.list(), client.StateReconnecting) || h.conns.Load() != before {
			t.Fatalf("%d: the client reconnected (states %v)", code, st.list())
		}
	}
	for _, code := range []int{1001, 1011, 4006} {
		st := newStates()
		c := dial(st)
		h.closeWith(code)
		st.wait(t, client.StateReconnecting, 5*time.Second)
		st.wait(t, client.StateConnected, 10*time.Second)
		must(t, c.Ping(ctxT(t)))
	}
}
