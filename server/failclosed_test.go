package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

var errDown = errors.New("connection refused (the test switched the backend off)")

// flakyBroker is the in-memory broker with a switch per operation, as a
// networked broker whose server went away.
type flakyBroker struct {
	*server.MemoryBroker
	failPublish, failSubscribe, failUnsubscribe atomic.Bool
}

func (b *flakyBroker) Publish(ctx context.Context, p *server.Publication) error {
	if b.failPublish.Load() {
		return errDown
	}
	return b.MemoryBroker.Publish(ctx, p)
}

func (b *flakyBroker) Subscribe(ctx context.Context, t server.Topic) error {
	if b.failSubscribe.Load() {
		return errDown
	}
	return b.MemoryBroker.Subscribe(ctx, t)
}

func (b *flakyBroker) Unsubscribe(ctx context.Context, t server.Topic) error {
	if b.failUnsubscribe.Load() {
		return errDown
	}
	return b.MemoryBroker.Unsubscribe(ctx, t)
}

// flakyRevocations is the in-memory revocation store that, once armed,
// lets a given number of checks through and then fails every check until
// disarmed. calls counts the checks.
type flakyRevocations struct {
	*server.MemoryRevocationStore
	mu        sync.Mutex
	calls     int
	armed     bool
	passFirst int
}

func (r *flakyRevocations) IsRevoked(ctx context.Context, jti, sub string, iat time.Time) (bool, error) {
	r.mu.Lock()
	r.calls++
	fail := r.armed && r.passFirst <= 0
	if r.armed {
		r.passFirst--
	}
	r.mu.Unlock()
	if fail {
		return false, errDown
	}
	return r.MemoryRevocationStore.IsRevoked(ctx, jti, sub, iat)
}

// arm makes the checks after the next pass fail.
func (r *flakyRevocations) arm(pass int) {
	r.mu.Lock()
	r.armed, r.passFirst = true, pass
	r.mu.Unlock()
}

func (r *flakyRevocations) disarm() {
	r.mu.Lock()
	r.armed = false
	r.mu.Unlock()
}

func (r *flakyRevocations) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

// flakyReplay is the in-memory replay store with a switch.
type flakyReplay struct {
	protocol.ReplayStore
	fail atomic.Bool
}

func (r *flakyReplay) Check(ctx context.Context, c protocol.ReplayCheck) error {
	if r.fail.Load() {
		return errDown
	}
	return r.ReplayStore.Check(ctx, c)
}

// quiet checks that c receives nothing before the answer to a ping.
func (c *client) quiet() {
	c.t.Helper()
	c.send(&protocol.Envelope{Action: protocol.ActPing, Corr: "quiet"})
	if m := c.recv(); m.Action != protocol.ActPong || m.Corr != "quiet" {
		c.t.Fatalf("expected nothing before the pong, got %s %s", m.Action, m.Body)
	}
}

// expectUnavailable reads the error frame answering the frame sent with
// cid: code unavailable, with its cid and ref.
func (c *client) expectUnavailable(cid string) {
	c.t.Helper()
	m := c.recvAct(protocol.ActError)
	var eb protocol.ErrorBody
	must(c.t, json.Unmarshal(m.Body, &eb))
	if eb.Code != protocol.CodeUnavailable || m.Corr != cid || eb.Ref == "" {
		c.t.Fatalf("want unavailable answering %q with a ref, got %s cid %q", cid, m.Body, m.Corr)
	}
}

func (e *env) metric(prefix string) string {
	e.t.Helper()
	resp, err := http.Get(e.url + "/metrics")
	must(e.t, err)
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return grepLines(string(body), prefix)
}

// TestBrokerFailureFailsClosed: while the broker fails, pub, dm and a sub
// that needs it are answered unavailable (with cid and ref), nothing is
// delivered, nothing is left subscribed, other sessions carry on, and everything works again once the
// broker is back.
func TestBrokerFailureFailsClosed(t *testing.T) {
	b := &flakyBroker{MemoryBroker: server.NewMemoryBroker()}
	e := newEnv(t, func(c *server.Config) { c.Broker = b; c.MaxViolations = 2 })
	alice := e.login("alice").connect()
	bob := e.login("bob").connect()
	carol := e.login("carol").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	bob.recvAct(protocol.ActReply)
	bob.recvAct(protocol.ActJoin)

	b.failPublish.Store(true)
	for i := 0; i < 3; i++ { // more than MaxViolations: none is a violation
		alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`"lost"`), Corr: "p"})
		alice.expectUnavailable("p")
	}
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`"lost"`), Corr: "d"})
	alice.expectUnavailable("d")
	bob.quiet() // nothing was delivered
	alice.ping()
	b.failPublish.Store(false)

	b.failSubscribe.Store(true)
	carol.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.b", Corr: "s"})
	carol.expectUnavailable("s")
	carol.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.b", Corr: "m"})
	if m := carol.recvAct(protocol.ActReply); string(m.Body) != `{"members":[]}` {
		t.Fatalf("the failed sub was not rolled back: %s", m.Body)
	}
	// A sub to a channel the node already has needs no broker call.
	carol.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s2"})
	carol.recvAct(protocol.ActReply)
	// A first session of a subject cannot be made reachable: welcome, then
	// unavailable, then 4006; it is not left registered.
	dave := e.login("admin").dial()
	dave.write(dave.helloFrame(dave.tok.Token))
	if m := dave.recv(); m.Action != protocol.ActWelcome {
		t.Fatalf("want welcome first, got %s", m.Action)
	}
	dave.expectError(protocol.CodeUnavailable)
	dave.expectClose(protocol.CloseServerError)
	for _, si := range e.srv.Sessions() {
		if si.Subject == "admin" {
			t.Fatal("a session whose subject could not be subscribed is registered")
		}
	}
	b.failSubscribe.Store(false)

	// Back: everything works, and the failures were logged and counted.
	carol.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.b", Corr: "s3"})
	var sr protocol.SubReplyBody
	must(t, json.Unmarshal(carol.recvAct(protocol.ActReply).Body, &sr))
	if len(sr.Members) != 1 || sr.Members[0] != "carol" {
		t.Fatalf("members %v", sr.Members)
	}
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`"kept"`), Corr: "p2"})
	alice.recvAct(protocol.ActReply)
	if _, inner, err := protocol.OpenDelivery(bob.recvAct(protocol.ActDeliver), nil); err != nil || string(inner.Body) != `"kept"` {
		t.Fatalf("after recovery: %v", err)
	}
	e.login("admin").connect().ping()
	got := e.metric(`sigil_backend_errors_total{backend="broker"`)
	if !strings.Contains(got, `op="publish"} 4`) || !strings.Contains(got, `op="subscribe"} 2`) {
		t.Fatalf("broker errors counted:\n%s", got)
	}
}

// TestBrokerUnsubscribeFailure: a failed broker Unsubscribe does not keep
// the session in the channel; the node retries it.
func TestBrokerUnsubscribeFailure(t *testing.T) {
	b := &flakyBroker{MemoryBroker: server.NewMemoryBroker()}
	e := newEnv(t, func(c *server.Config) {
		c.Broker = b
		c.SweepInterval = 10 * time.Millisecond
		c.PingInterval = 20 * time.Millisecond
	})
	alice := e.login("alice").connect()
	alice.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.c", Corr: "s"})
	alice.recvAct(protocol.ActReply)
	b.failUnsubscribe.Store(true)
	alice.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.c", Corr: "u"})
	alice.recvAct(protocol.ActReply)
	alice.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: "rooms.c", Corr: "m"})
	if m := alice.recvAct(protocol.ActReply); string(m.Body) != `{"members":[]}` {
		t.Fatalf("presence after unsub: %s", m.Body)
	}
	if !b.Interested(server.ChannelTopic("rooms.c")) {
		t.Fatal("the broker unsubscribe did not fail")
	}
	b.failUnsubscribe.Store(false)
	for deadline := time.Now().Add(10 * time.Second); b.Interested(server.ChannelTopic("rooms.c")); {
		if time.Now().After(deadline) {
			t.Fatal("the failed unsubscribe was not retried")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestStoreFailureFailsClosed: while the revocation or replay store
// fails, frames are answered unavailable and not accepted (nothing is
// delivered), a hello is answered unavailable and closed with 4006, the
// check after the welcome and the in-band refresh path close the session
// with 4006, and other sessions carry on.
func TestStoreFailureFailsClosed(t *testing.T) {
	rev := &flakyRevocations{MemoryRevocationStore: server.NewMemoryRevocationStore()}
	rep := &flakyReplay{ReplayStore: protocol.NewMemoryReplayStore(0, nil)}
	e := newEnv(t, func(c *server.Config) { c.Revocations = rev; c.Replay = rep; c.MaxViolations = 2 })
	alice := e.login("alice").connect()
	bob := e.login("bob").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	bob.recvAct(protocol.ActReply)
	bob.recvAct(protocol.ActJoin)

	// The pipeline: revocation store (§7 step 9), then replay store (step 8).
	rev.arm(0)
	for i := 0; i < 3; i++ {
		alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`"x"`), Corr: "p"})
		alice.expectUnavailable("p")
	}
	rev.disarm()
	rep.fail.Store(true)
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`"x"`), Corr: "d"})
	alice.expectUnavailable("d")
	// A hello: unavailable, then 4006 (reconnect with backoff).
	h := e.login("carol").dial()
	h.write(h.helloFrame(h.tok.Token))
	h.expectHelloError(protocol.CodeUnavailable)
	h.expectClose(protocol.CloseServerError)
	rep.fail.Store(false)
	bob.quiet()
	alice.ping() // still up: none of it counted toward 1008

	// The revocation check after the welcome: calibrate how many checks a
	// hello makes, then fail the last one.
	before := rev.count()
	e.login("carol").connect().ping()
	perHello := rev.count() - before - 1 // the ping made one
	w := e.login("carol").dial()
	rev.arm(perHello - 1)
	w.write(w.helloFrame(w.tok.Token))
	if m := w.recv(); m.Action != protocol.ActWelcome {
		t.Fatalf("want welcome, got %s", m.Action)
	}
	w.expectError(protocol.CodeUnavailable)
	w.expectClose(protocol.CloseServerError)
	rev.disarm()

	// The in-band refresh: a refused refresh token, and the check of
	// whether a reuse revoked the session fails.
	r := e.login("alice").connect()
	r.ping() // the hello's last check is done once a later frame is answered
	before = rev.count()
	r.ping()
	perFrame := rev.count() - before
	rev.arm(perFrame)
	r.send(&protocol.Envelope{Action: protocol.ActRefresh, Corr: "r", Body: mustJSON(t, protocol.RefreshBody{RefreshToken: "not-a-refresh-token"})})
	r.expectUnavailable("r")
	r.expectClose(protocol.CloseServerError)
	rev.disarm()

	bob.quiet()
	alice.ping()
	got := e.metric(`sigil_backend_errors_total{backend="store"`)
	for _, want := range []string{`op="verify"} 4`, `op="hello"} 1`, `op="welcome revocation check"} 1`, `op="refresh revocation check"} 1`} {
		if !strings.Contains(got, want) {
			t.Fatalf("store errors counted, want %s:\n%s", want, got)
		}
	}
}

// TestHTTPProofStoreFailure: a refresh proof or an admin proof that cannot
// be checked because the revocation store fails is answered 503 unavailable
// (spec.md §13.4), not as a bad credential, and the failure is counted.
func TestHTTPProofStoreFailure(t *testing.T) {
	rev := &flakyRevocations{MemoryRevocationStore: server.NewMemoryRevocationStore()}
	e := newEnv(t, func(c *server.Config) { c.Revocations = rev })
	alice := e.login("alice")
	adm := e.login("admin")
	rev.arm(0)
	rt := alice.tok.RefreshToken
	var ae apiErr
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": alice.refreshProof(rt)}, &ae); st != 503 || ae.Error != server.ErrCodeUnavailable {
		t.Fatalf("refresh with the revocation store down: %d %v, want 503 unavailable", st, ae)
	}
	st, body := adm.admin(http.MethodGet, "sessions", "")
	if st != 503 || !strings.Contains(string(body), `"error":"unavailable"`) {
		t.Fatalf("admin request with the revocation store down: %d %s, want 503 unavailable", st, body)
	}
	rev.disarm()
	got := e.metric(`sigil_backend_errors_total{backend="store"`)
	for _, want := range []string{`op="refresh proof"} 1`, `op="admin"} 1`} {
		if !strings.Contains(got, want) {
			t.Fatalf("store errors counted, want %s:\n%s", want, got)
		}
	}
	if st := e.postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": alice.refreshProof(rt)}, &ae); st != 200 {
		t.Fatalf("refresh once the store is back: %d %v", st, ae)
	}
	if st, body := adm.admin(http.MethodGet, "sessions", ""); st != 200 {
		t.Fatalf("admin request once the store is back: %d %s", st, body)
	}
}
