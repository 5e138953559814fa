package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

func TestFlowPubSubPresenceDM(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.login("alice").connect()
	bob := e.login("bob").connect()

	// sub → reply with members, then join to everyone.
	alice.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby", Corr: "s1"})
	m := alice.recvAct(protocol.ActReply)
	var sr protocol.SubReplyBody
	must(t, json.Unmarshal(m.Body, &sr))
	if m.Corr != "s1" || len(sr.Members) != 1 || sr.Members[0] != "alice" {
		t.Fatalf("sub reply %q %s", m.Corr, m.Body)
	}
	alice.recvAct(protocol.ActJoin)
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.lobby"})
	bob.recvAct(protocol.ActReply)
	j := alice.recvAct(protocol.ActJoin)
	var jb protocol.JoinBody
	must(t, protocol.DecodeBody(j.Body, &jb))
	if jb.Sub != "bob" || j.Channel != "rooms.lobby" {
		t.Fatalf("join %s", j.Body)
	}
	bob.recvAct(protocol.ActJoin)

	// presence
	bob.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.lobby"})
	m = bob.recvAct(protocol.ActReply)
	var pb protocol.PresenceBody
	must(t, protocol.DecodeBody(m.Body, &pb))
	if len(pb.Members) != 2 {
		t.Fatalf("presence %s", m.Body)
	}

	// pub → deliver to both, end-to-end verifiable.
	sent := alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: json.RawMessage(`{"text":"hi"}`)})
	for _, c := range []*client{alice, bob} {
		d := c.recvAct(protocol.ActDeliver)
		if d.Session != "" || d.Seq != 0 {
			t.Fatal("deliver carries sid or seq")
		}
		snd, inner, err := protocol.OpenDelivery(d, nil)
		must(t, err)
		if snd.Subject != "alice" || inner.ID != sent.ID || string(inner.Body) != `{"text":"hi"}` {
			t.Fatalf("delivery %v %s", snd.Subject, inner.Body)
		}
	}

	// dm → direct to every session of bob.
	bob2 := e.login("bob").connect()
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`"psst"`)})
	for _, c := range []*client{bob, bob2} {
		d := c.recvAct(protocol.ActDirect)
		snd, inner, err := protocol.OpenDelivery(d, nil)
		must(t, err)
		if snd.Subject != "alice" || string(inner.Body) != `"psst"` {
			t.Fatal("direct")
		}
	}
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "nobody", Body: json.RawMessage(`1`), Corr: "d"})
	if eb := alice.expectError(protocol.CodeNotFound); eb.Ref == "" {
		t.Fatal("no ref")
	}

	// unsub → leave broadcast to the rest.
	bob.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.lobby", Corr: "u"})
	bob.recvAct(protocol.ActReply)
	l := alice.recvAct(protocol.ActLeave)
	must(t, protocol.DecodeBody(l.Body, &jb))
	if jb.Sub != "bob" {
		t.Fatal("leave")
	}

	// Server-side publish from Go.
	must(t, e.srv.Publish(context.Background(), "rooms.lobby", map[string]string{"motd": "hello"}))
	d := alice.recvAct(protocol.ActDeliver)
	var db protocol.DeliverBody
	must(t, json.Unmarshal(d.Body, &db))
	if db.Sub != "server" {
		t.Fatal("server publish sub")
	}
	snd, inner, err := alice.fv.OpenDelivery(d, nil)
	must(t, err)
	if !snd.Server || db.Sub != protocol.ServerSubject || inner.Action != protocol.ActPub || string(inner.Body) != `{"motd":"hello"}` {
		t.Fatalf("server publish %s", inner.Body)
	}
	if len(e.srv.Sessions()) != 3 {
		t.Fatalf("sessions %d", len(e.srv.Sessions()))
	}
}

func TestAppHandlers(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		p, err := protocol.NewPolicy(append(protocol.DefaultPolicy().Rules(),
			protocol.Rule{Action: "orders.create", Roles: []string{"user"}},
			protocol.Rule{Action: "orders.fail", Roles: []string{"user"}},
			protocol.Rule{Action: "orders.missing", Roles: []string{"user"}}))
		must(t, err)
		c.Policy = p
	})
	e.srv.Handle("orders.create", func(ctx context.Context, m *server.Message) (any, error) {
		var in struct{ Qty int }
		if err := json.Unmarshal(m.Body, &in); err != nil {
			return nil, &protocol.Error{Code: protocol.CodeBadRequest, Message: "bad order"}
		}
		return map[string]any{"ok": true, "qty": in.Qty, "by": m.Session.Subject}, nil
	})
	e.srv.Handle("orders.fail", func(ctx context.Context, m *server.Message) (any, error) {
		return nil, errors.New("out of stock")
	})
	a := e.login("alice").connect()
	a.send(&protocol.Envelope{Action: "orders.create", Corr: "o1", Body: json.RawMessage(`{"Qty":3}`)})
	m := a.recvAct(protocol.ActReply)
	if m.Corr != "o1" || string(m.Body) != `{"by":"alice","ok":true,"qty":3}` {
		t.Fatalf("reply %s", m.Body)
	}
	a.send(&protocol.Envelope{Action: "orders.create", Corr: "o2", Body: json.RawMessage(`"x"`)})
	if eb := a.expectError(protocol.CodeBadRequest); eb.Message != "bad order" {
		t.Fatal(eb)
	}
	a.send(&protocol.Envelope{Action: "orders.fail", Corr: "o3", Body: json.RawMessage(`{}`)})
	a.expectError(protocol.CodeAppError)
	a.send(&protocol.Envelope{Action: "orders.missing", Corr: "o4", Body: json.RawMessage(`{}`)})
	a.expectError(protocol.CodeUnknownAction)
	a.send(&protocol.Envelope{Action: "orders.unlisted", Corr: "o5", Body: json.RawMessage(`{}`)})
	a.expectError(protocol.CodeForbidden)
	a.ping()
}

func TestEncryption(t *testing.T) {
	e := newEnv(t, nil)
	enc := func(user string) *client { return e.loginEncrypted(user).connect() }
	alice, bob := enc("alice"), enc("bob")
	plainBob := e.login("bob").connect()
	for _, c := range []*client{alice, bob} {
		c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.secret"})
		r := c.recvAct(protocol.ActReply)
		var sr protocol.SubReplyBody
		must(t, json.Unmarshal(r.Body, &sr))
		k, err := protocol.UnwrapContentKey(sr.Key, c.ekey)
		must(t, err)
		c.addKey(k)
	}
	// Encrypted publish with the channel key.
	chKey := alice.keyFor("ch:rooms.secret")
	sealed, err := protocol.SealBody(chKey, []byte(`{"text":"secret"}`))
	must(t, err)
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.secret", Enc: sealed})
	d := bob.recvAct(protocol.ActDeliver)
	_, inner, err := protocol.OpenDelivery(d, bob.keys)
	must(t, err)
	if !inner.Encrypted || string(inner.Body) != `{"text":"secret"}` {
		t.Fatalf("encrypted deliver %s", inner.Body)
	}
	// Bad enc is rejected.
	bad, _ := protocol.SealBody(&protocol.ContentKey{ID: chKey.ID, Key: make([]byte, 32), Scope: chKey.Scope}, []byte(`1`))
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.secret", Enc: bad, Corr: "b"})
	alice.expectError(protocol.CodeBadEnc)

	// Encrypted dm: re-sealed to each recipient session's key.
	sk := alice.keyFor(protocol.ScopeSession)
	sealed, err = protocol.SealBody(sk, []byte(`"for bob"`))
	must(t, err)
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Enc: sealed})
	d = bob.recvAct(protocol.ActDirect)
	_, inner, err = protocol.OpenDelivery(d, bob.keys)
	must(t, err)
	if string(inner.Body) != `"for bob"` {
		t.Fatalf("dm %s", inner.Body)
	}
	d = plainBob.recvAct(protocol.ActDirect)
	var db protocol.DeliverBody
	must(t, json.Unmarshal(d.Body, &db))
	if db.Enc != "" {
		t.Fatal("a session without a key got a re-sealed body")
	}

	// A leaving member rotates the channel key: bob gets a key frame.
	alice.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.secret"})
	kf := bob.recvAct(protocol.ActKey)
	var kb protocol.KeyBody
	must(t, json.Unmarshal(kf.Body, &kb))
	nk, err := protocol.UnwrapContentKey(kb.Key, bob.ekey)
	must(t, err)
	if nk.ID == chKey.ID || nk.Scope != "ch:rooms.secret" {
		t.Fatal("key not rotated")
	}
}

// slowRevocations is a revocation store with the latency of a networked
// one: every check takes delay.
type slowRevocations struct {
	*server.MemoryRevocationStore
	delay time.Duration
}

func (s slowRevocations) IsRevoked(ctx context.Context, jti, sub string, iat time.Time) (bool, error) {
	time.Sleep(s.delay)
	return s.MemoryRevocationStore.IsRevoked(ctx, jti, sub, iat)
}

// trafficTo keeps sender busy sending direct messages to user, each
// waiting for its answer, until stop is closed. It returns how many were
// answered.
func trafficTo(sender *client, user string, stop <-chan struct{}) <-chan int {
	n := make(chan int, 1)
	go func() {
		sent := 0
		defer func() { n <- sent }()
		for {
			select {
			case <-stop:
				return
			default:
			}
			fr, err := sender.signer.Sign(&protocol.Envelope{Action: protocol.ActDM, To: user, Corr: "t", Body: json.RawMessage(`"x"`)})
			if err != nil || sender.ws.WriteMessage(websocket.TextMessage, fr) != nil {
				return
			}
			for { // the reply, or not_found while user has no session
				_ = sender.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, data, err := sender.ws.ReadMessage()
				if err != nil {
					return
				}
				if m, err := sender.fv.Verify(data); err == nil && m.Corr == "t" {
					break
				}
			}
			sent++
		}
	}()
	return n
}

// drain reads and discards c's frames in the background.
func drain(c *client) {
	go func() {
		for {
			if _, _, err := c.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
}

// TestWelcomeIsFirstFrame: welcome is the first server frame of every
// session (spec.md §8.3), even while direct messages and presence events
// stream to the subject and the revocation store is slow, so that the
// hello's session is registered well before its last check is done.
func TestWelcomeIsFirstFrame(t *testing.T) {
	// ES256 throughout: P-256 runs in assembly, which the race detector
	// does not slow down as it does the pure-Go Ed25519.
	sk, err := protocol.GenerateKey(protocol.ES256, nil)
	must(t, err)
	e := newEnv(t, func(c *server.Config) {
		c.Keys = []*protocol.PrivateKey{sk}
		c.Revocations = slowRevocations{server.NewMemoryRevocationStore(), 5 * time.Millisecond}
	})
	// bob0 keeps bob reachable and sits in a channel with presence churn.
	bob0 := e.loginAlg("bob", protocol.ES256).connect()
	bob0.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.race", Corr: "s"})
	bob0.recvAct(protocol.ActReply)
	drain(bob0)
	stop := make(chan struct{})
	var counts []<-chan int
	for _, user := range []string{"alice", "carol"} {
		counts = append(counts, trafficTo(e.loginAlg(user, protocol.ES256).connect(), "bob", stop))
	}
	churn := e.loginAlg("carol", protocol.ES256).connect()
	churned := make(chan struct{})
	go func() {
		defer close(churned)
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			act := protocol.ActSub
			if i%2 == 1 {
				act = protocol.ActUnsub
			}
			fr, err := churn.signer.Sign(&protocol.Envelope{Action: act, Channel: "rooms.race", Corr: "c"})
			if err != nil || churn.ws.WriteMessage(websocket.TextMessage, fr) != nil {
				return
			}
			for { // paced by its answers
				_ = churn.ws.SetReadDeadline(time.Now().Add(10 * time.Second))
				_, data, err := churn.ws.ReadMessage()
				if err != nil {
					return
				}
				if m, err := churn.fv.Verify(data); err == nil && m.Corr == "c" {
					break
				}
			}
		}
	}()

	const dials, workers = 500, 8
	jobs := make(chan int, dials)
	for i := range dials {
		jobs <- i
	}
	close(jobs)
	errs := make(chan error, dials)
	var wg sync.WaitGroup
	for range workers {
		c := e.loginAlg("bob", protocol.ES256) // one session per worker: its hellos are in seq order
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, HandshakeTimeout: 10 * time.Second}
			for i := range jobs {
				errs <- func() error {
					ws, _, err := d.Dial(e.wsURL(), nil)
					if err != nil {
						return err
					}
					defer ws.Close()
					body := mustJSON(t, protocol.HelloBody{Token: c.tok.Token, JWK: c.jwk})
					hello, err := c.signer.Sign(&protocol.Envelope{Action: protocol.ActHello, Corr: "h", Body: body})
					if err != nil {
						return err
					}
					if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
						return err
					}
					_ = ws.SetReadDeadline(time.Now().Add(10 * time.Second))
					_, data, err := ws.ReadMessage()
					if err != nil {
						return fmt.Errorf("dial %d: %w", i, err)
					}
					m, err := c.fv.Verify(data)
					if err != nil {
						return fmt.Errorf("dial %d: first frame: %w", i, err)
					}
					if m.Action != protocol.ActWelcome || m.Corr != "h" {
						return fmt.Errorf("dial %d: first frame is %q, not the welcome", i, m.Action)
					}
					var wb protocol.WelcomeBody
					if err := protocol.DecodeBody(m.Body, &wb); err != nil {
						return err
					}
					c.signer.SetSeq(wb.LastSeq)
					c.fv.SetWelcomed(false) // the next dial is a new connection
					return nil
				}()
			}
		}()
	}
	t0 := time.Now()
	wg.Wait()
	t.Logf("dials took %v", time.Since(t0))
	close(stop)
	<-churned
	close(errs)
	failed := 0
	for err := range errs {
		if err != nil {
			if failed++; failed <= 5 {
				t.Error(err)
			}
		}
	}
	dms := 0
	for _, n := range counts {
		dms += <-n
	}
	t.Logf("%d of %d dials failed; %d direct messages answered meanwhile", failed, dials, dms)
	if failed > 0 {
		t.Fatalf("%d of %d dials did not get welcome first", failed, dials)
	}
	if dms == 0 {
		t.Fatal("no direct-message traffic")
	}
}
