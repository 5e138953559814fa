// Command goside is the Go half of the cross-implementation test
// (client/js/test/cross.test.mjs): a Sigil client built on the protocol
// package and gorilla/websocket that talks to a JS client through one
// server. It prints one line per event on stdout:
//
//	GO READY
//	GO GOT from=<sub> verified=true text=<text>
//	GO SENT
//
// and exits 0 after it has received `want` verified messages from the peer
// and answered each one.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

func main() {
	base := flag.String("url", "", "server base URL")
	user := flag.String("user", "", "username")
	pass := flag.String("password", "", "password")
	ch := flag.String("ch", "rooms.lobby", "channel")
	peer := flag.String("peer", "", "subject of the JS peer")
	want := flag.Int("want", 1, "messages to receive from the peer")
	flag.Parse()
	if err := run(*base, *user, *pass, *ch, *peer, *want); err != nil {
		fmt.Println("GO ERROR", err)
		os.Exit(1)
	}
}

func post(url string, body any, out any) error {
	b, _ := json.Marshal(body)
	res, err := http.Post(url, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	defer res.Body.Close()
	data, _ := io.ReadAll(res.Body)
	if res.StatusCode != 200 {
		return fmt.Errorf("%s: %d %s", url, res.StatusCode, data)
	}
	return json.Unmarshal(data, out)
}

func run(base, user, pass, ch, peer string, want int) error {
	key, err := protocol.GenerateKey(protocol.ES256, nil)
	if err != nil {
		return err
	}
	var tok struct {
		Token string `json:"token"`
		Sid   string `json:"sid"`
		Sub   string `json:"sub"`
		WSURL string `json:"ws_url"`
	}
	if err := post(base+"/v1/token", map[string]any{"grant_type": "password", "username": user, "password": pass, "jwk": key.Public()}, &tok); err != nil {
		return err
	}
	res, err := http.Get(base + "/.well-known/jwks.json")
	if err != nil {
		return err
	}
	jwksData, _ := io.ReadAll(res.Body)
	res.Body.Close()
	jwks, err := protocol.ParseKeySet(jwksData)
	if err != nil {
		return err
	}
	d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 5 * time.Second}
	conn, _, err := d.Dial(tok.WSURL, nil)
	if err != nil {
		return err
	}
	defer conn.Close()
	signer := &protocol.ClientSigner{Key: key, Session: tok.Sid, Subject: tok.Sub}
	var offset time.Duration
	fv := &protocol.FrameVerifier{Keys: jwks, Session: tok.Sid, Subject: tok.Sub, Now: func() time.Time { return time.Now().Add(offset) }}
	send := func(env *protocol.Envelope) error {
		f, err := signer.Sign(env)
		if err != nil {
			return err
		}
		return conn.WriteMessage(websocket.TextMessage, f)
	}
	jwk, _ := json.Marshal(key.Public())
	hello, _ := json.Marshal(map[string]any{"token": tok.Token, "jwk": json.RawMessage(jwk)})
	if err := send(&protocol.Envelope{Action: protocol.ActHello, Body: hello}); err != nil {
		return err
	}
	read := func() (*protocol.Message, error) {
		conn.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, data, err := conn.ReadMessage()
		if err != nil {
			return nil, err
		}
		return fv.Verify(data)
	}
	m, err := read()
	if err != nil {
		return fmt.Errorf("welcome: %w", err)
	}
	var wb protocol.WelcomeBody
	if m.Action != protocol.ActWelcome || json.Unmarshal(m.Body, &wb) != nil {
		return fmt.Errorf("expected welcome, got %s %s", m.Action, m.Body)
	}
	offset = time.Until(time.UnixMilli(wb.Time))
	signer.SetClockOffset(offset)
	signer.SetSeq(wb.LastSeq)
	if err := send(&protocol.Envelope{Action: protocol.ActSub, Channel: ch, Corr: "sub-1"}); err != nil {
		return err
	}
	got := 0
	for got < want {
		m, err := read()
		if err != nil {
			return err
		}
		switch m.Action {
		case protocol.ActReply:
			if m.Corr == "sub-1" {
				fmt.Println("GO READY")
			}
		case protocol.ActError:
			return fmt.Errorf("server error: %s", m.Body)
		case protocol.ActDeliver:
			sender, sm, err := protocol.OpenDelivery(m, nil)
			if err != nil {
				fmt.Println("GO INVALID", protocol.CodeOf(err))
				return err
			}
			if sender.Subject != peer {
				continue // our own publishes come back too
			}
			var body struct {
				Text string `json:"text"`
			}
			json.Unmarshal(sm.Body, &body)
			fmt.Printf("GO GOT from=%s verified=true alg=%s text=%s\n", sender.Subject, sender.Key.Algorithm(), strings.ReplaceAll(body.Text, "\n", " "))
			got++
			reply, _ := json.Marshal(map[string]string{"text": "go heard: " + body.Text})
			if err := send(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Body: reply, Corr: fmt.Sprintf("pub-%d", got)}); err != nil {
				return err
			}
			fmt.Println("GO SENT")
		}
	}
	// Wait for the answer to the last publish, so it was accepted.
	for {
		m, err := read()
		if err != nil {
			return err
		}
		if m.Action == protocol.ActError {
			return fmt.Errorf("server error: %s", m.Body)
		}
		if m.Action == protocol.ActReply && m.Corr == fmt.Sprintf("pub-%d", got) {
			fmt.Println("GO DONE")
			return nil
		}
	}
}
