package client

import (
	"context"
	"crypto/ed25519"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// sinkServer answers hello with welcome and then reads and discards every
// frame, so that a benchmark measures the client alone.
func sinkServer(tb testing.TB) (url string, keys *protocol.KeySet, sid string) {
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		tb.Fatal(err)
	}
	signer := &protocol.ServerSigner{Key: key}
	sid = uuid.NewString()
	up := websocket.Upgrader{Subprotocols: []string{protocol.Subprotocol}}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		_, data, err := ws.ReadMessage()
		if err != nil {
			return
		}
		payload, _ := protocol.UnsafeClaims(data)
		var env protocol.Envelope
		_ = json.Unmarshal(payload, &env)
		fr, _ := signer.SignBody(&protocol.Envelope{Action: protocol.ActWelcome, Session: sid, Corr: env.Corr},
			protocol.WelcomeBody{Session: sid, Subject: "alice", Roles: []string{"user"}, Expiry: time.Now().Add(time.Hour).UnixMilli(),
				Time: time.Now().UnixMilli(), Skew: 30000, Window: 30000, LastSeq: env.Seq, MaxFrame: 65536})
		_ = ws.WriteMessage(websocket.TextMessage, fr)
		for {
			if _, _, err := ws.NextReader(); err != nil {
				return
			}
		}
	}))
	tb.Cleanup(hs.Close)
	keys, _ = protocol.NewKeySet(key.Public())
	return "ws" + strings.TrimPrefix(hs.URL, "http") + "/v1/ws", keys, sid
}

// BenchmarkPublishSigned measures the client's own cost per signed publish:
// everything Publish does before it waits for the server's answer —
// marshal the body, build the envelope, assign id, corrected ts and seq,
// sign (go-jose, EdDSA) and write the WebSocket frame to a loopback socket
// whose peer discards it. A raw ed25519.Sign over the same signing input is
// interleaved in the same loop (as in protocol/bench_test.go), and the
// ratio of the totals is reported as x-ed25519-sign. Both are timed by the
// benchmark's thread's CPU clock (threadCPU, its OS thread locked): the
// wall clock also counted the time the client's writer goroutine and the
// sink server, running on the same two cores, took from it (1.20–1.31× in
// six runs on a quiet machine, by wall clock).
func BenchmarkPublishSigned(b *testing.B) {
	url, keys, sid := sinkServer(b)
	ckey, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	c, err := Dial(context.Background(), url, &Options{
		Tokens: SessionToken(Token{Token: "t", Key: ckey, Session: sid, Subject: "alice"}),
		JWKS:   keys,
	})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	body := map[string]string{"text": "hello, world"}

	// Baseline input: a signing input of the same size as a publish frame.
	probe, _ := c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hello, world"}`)})
	input := probe[:strings.LastIndexByte(string(probe), '.')]
	priv := ed25519.NewKeyFromSeed(make([]byte, 32))

	cn, signer, err := c.waitReady(ctx)
	if err != nil {
		b.Fatal(err)
	}
	var op, base time.Duration
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		t0 := threadCPU()
		plain, err := marshalBody(body, true)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.requestOn(ctx, cn, signer, protocol.ActPub, "rooms.lobby", "", plain, false); err != nil {
			b.Fatal(err)
		}
		t1 := threadCPU()
		ed25519.Sign(priv, input)
		t2 := threadCPU()
		op += t1 - t0
		base += t2 - t1
	}
	b.ReportMetric(float64(op)/float64(base), "x-ed25519-sign")
	b.ReportMetric(float64(op.Nanoseconds())/float64(b.N), "op-ns")
	b.ReportMetric(float64(base.Nanoseconds())/float64(b.N), "base-ns")
}
