package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// rawSession is a session driven frame by frame over a plain WebSocket, so
// that a test can send a frame again, to another node.
type rawSession struct {
	key    *protocol.PrivateKey
	jwk    []byte
	tok    server.TokenResponse
	signer *protocol.ClientSigner
	fv     *protocol.FrameVerifier
	ws     *websocket.Conn
}

// newRawSession logs user in at base (http://host:port) and fetches the
// server's keys there.
func newRawSession(t *testing.T, base, user, password string) *rawSession {
	t.Helper()
	k, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	jwk, _ := k.Public().MarshalJSON()
	body, _ := json.Marshal(map[string]any{"grant_type": "password", "username": user, "password": password, "jwk": json.RawMessage(jwk)})
	resp, err := http.Post(base+"/v1/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	r := &rawSession{key: k, jwk: jwk}
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&r.tok) != nil {
		t.Fatalf("login %s: HTTP %d", user, resp.StatusCode)
	}
	_, jwks := get(t, base+"/.well-known/jwks.json")
	ks, err := protocol.ParseKeySet([]byte(jwks))
	if err != nil {
		t.Fatal(err)
	}
	r.signer = &protocol.ClientSigner{Key: k, Session: r.tok.Session, Subject: r.tok.Subject}
	r.fv = &protocol.FrameVerifier{Keys: ks, Session: r.tok.Session, Subject: r.tok.Subject}
	return r
}

// connect opens a connection to wsURL and says hello with the session's
// token; the session's seq goes on from where it was. It returns the
// hello as sent.
func (r *rawSession) connect(t *testing.T, wsURL string) []byte {
	t.Helper()
	hb, _ := json.Marshal(protocol.HelloBody{Token: r.tok.Token, JWK: r.jwk})
	hello := r.sign(t, &protocol.Envelope{Action: protocol.ActHello, Body: hb})
	r.dial(t, wsURL)
	r.write(t, hello)
	if m := r.recv(t); m.Action != protocol.ActWelcome {
		t.Fatalf("want welcome, got %s %s", m.Action, m.Body)
	}
	return hello
}

func (r *rawSession) dial(t *testing.T, wsURL string) {
	t.Helper()
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 20 * time.Second}
	ws, _, err := d.Dial(wsURL, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", wsURL, err)
	}
	t.Cleanup(func() { ws.Close() })
	r.ws = ws
}

// expectHelloReplay opens a new connection to wsURL, sends hello (one the
// session sent before) and expects it refused as a replay.
func (r *rawSession) expectHelloReplay(t *testing.T, wsURL string, hello []byte) {
	t.Helper()
	r.dial(t, wsURL)
	r.write(t, hello)
	_ = r.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, data, err := r.ws.ReadMessage()
	if err != nil {
		t.Fatalf("recv: %v", err)
	}
	// An error answering a hello names no session; a welcome does.
	m, err := (&protocol.FrameVerifier{Keys: r.fv.Keys}).Verify(data)
	if err != nil {
		if w, werr := r.fv.Verify(data); werr == nil {
			t.Fatalf("a replayed hello was answered %s", w.Action)
		}
		t.Fatalf("server frame does not verify: %v", err)
	}
	var eb protocol.ErrorBody
	if m.Action != protocol.ActError || json.Unmarshal(m.Body, &eb) != nil ||
		(eb.Code != protocol.CodeReplayID && eb.Code != protocol.CodeReplaySeq) {
		t.Fatalf("a replayed hello was answered %s %s, want replay_id or replay_seq", m.Action, m.Body)
	}
}

func (r *rawSession) sign(t *testing.T, env *protocol.Envelope) []byte {
	t.Helper()
	fr, err := r.signer.Sign(env)
	if err != nil {
		t.Fatal(err)
	}
	return fr
}

func (r *rawSession) write(t *testing.T, frame []byte) {
	t.Helper()
	if err := r.ws.WriteMessage(websocket.TextMessage, frame); err != nil {
		t.Fatal(err)
	}
}

// recv reads and verifies the next server frame.
func (r *rawSession) recv(t *testing.T) *protocol.Message {
	t.Helper()
	_ = r.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	for {
		mt, data, err := r.ws.ReadMessage()
		if err != nil {
			t.Fatalf("recv: %v", err)
		}
		if mt != websocket.TextMessage {
			continue
		}
		m, err := r.fv.Verify(data)
		if err != nil {
			t.Fatalf("server frame does not verify: %v", err)
		}
		return m
	}
}

// publish publishes text to ch, waits for the acknowledgement and returns
// the frame as sent.
func (r *rawSession) publish(t *testing.T, ch, text string) []byte {
	t.Helper()
	body, _ := json.Marshal(text)
	fr := r.sign(t, &protocol.Envelope{Action: protocol.ActPub, Channel: ch, Corr: "pub", Body: body})
	r.write(t, fr)
	for {
		m := r.recv(t)
		switch {
		case m.Action == protocol.ActReply && m.Corr == "pub":
			return fr
		case m.Action == protocol.ActError:
			t.Fatalf("publish %q: %s", text, m.Body)
		}
	}
}
