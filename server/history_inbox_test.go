package server_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// inboxPolicy is the default policy with every inbox keeping size direct
// messages (spec.md §20.11).
func inboxPolicy(t testing.TB, size int) *protocol.Policy {
	t.Helper()
	p, err := protocol.DefaultPolicy().WithHistory([]protocol.HistoryRule{
		{Channel: "rooms.>", Size: 100}, {Channel: protocol.InboxPattern, Size: size}})
	must(t, err)
	return p
}

// connectInbox dials, says hello with inbox_since (if not nil) and
// returns the welcome's body.
func (c *client) connectInbox(since *protocol.Position) protocol.WelcomeBody {
	c.t.Helper()
	c.dial()
	body := mustJSON(c.t, protocol.HelloBody{Token: c.tok.Token, JWK: c.jwk, InboxSince: since})
	c.send(&protocol.Envelope{Action: protocol.ActHello, Corr: "hello", Body: body})
	m := c.recv()
	if m.Action != protocol.ActWelcome || m.Corr != "hello" {
		c.t.Fatalf("want the welcome, got %s %s", m.Action, m.Body)
	}
	var wb protocol.WelcomeBody
	must(c.t, protocol.DecodeBody(m.Body, &wb))
	return wb
}

// dmN sends n direct messages to to, each answered, with bodies {"n":
// from+i}.
func (c *client) dmN(to string, from, n int) {
	c.t.Helper()
	for i := range n {
		cid := fmt.Sprintf("d%d", from+i)
		c.send(&protocol.Envelope{Action: protocol.ActDM, To: to, Corr: cid, Body: mustJSON(c.t, map[string]int{"n": from + i})})
		m := c.recv()
		if m.Action != protocol.ActReply || m.Corr != cid {
			c.t.Fatalf("dm %s answered %s %s", cid, m.Action, m.Body)
		}
	}
}

// openDirect opens a direct frame end to end (sent by from) and returns
// its body's n and its position.
func (c *client) openDirect(d *protocol.Message, from string) (int, protocol.Position) {
	c.t.Helper()
	if d.Action != protocol.ActDirect || d.To != c.tok.Subject {
		c.t.Fatalf("not a direct frame to %s: %s %q", c.tok.Subject, d.Action, d.To)
	}
	pos, ok, err := protocol.DeliveryPosition(d)
	must(c.t, err)
	if !ok {
		c.t.Fatalf("direct frame without a position: %s", d.Body)
	}
	snd, inner, err := c.fv.OpenDelivery(d, nil)
	must(c.t, err)
	if snd.Subject != from || inner.Action != protocol.ActDM || inner.To != c.tok.Subject {
		c.t.Fatalf("direct from %q act %q to %q", snd.Subject, inner.Action, inner.To)
	}
	var b struct{ N int }
	must(c.t, json.Unmarshal(inner.Body, &b))
	return b.N, pos
}

// recvInboxHistory reads the history frames that follow a welcome until
// it has n stored direct frames, each verified as a stored direct frame
// to c's subject and end to end, and returns their bodies' n and
// positions.
func (c *client) recvInboxHistory(n int, from string) (ns []int, pos []protocol.Position) {
	c.t.Helper()
	for len(ns) < n {
		m := c.recvAct(protocol.ActHistory)
		if m.Channel != "" || m.Session != c.tok.Session || m.Corr != "hello" {
			c.t.Fatalf("inbox history frame ch %q sid %q cid %q", m.Channel, m.Session, m.Corr)
		}
		var hb protocol.HistoryBody
		must(c.t, protocol.DecodeBody(m.Body, &hb))
		for _, f := range hb.Frames {
			sd, err := c.fv.VerifyStoredDirect([]byte(f), c.tok.Subject)
			must(c.t, err)
			v, p := c.openDirect(sd.Message, from)
			if p != sd.Position {
				c.t.Fatalf("position %v vs %v", p, sd.Position)
			}
			ns, pos = append(ns, v), append(pos, p)
		}
	}
	if len(ns) != n {
		c.t.Fatalf("%d stored direct frames, want %d", len(ns), n)
	}
	return ns, pos
}

// testInbox runs the inbox scenario on the servers of nodes (one, or two
// sharing a store): bob, on the last node, receives a stored dm live,
// drops, misses n dms sent from the first node, and recovers every one of
// them with inbox_since, in order, verified end to end, then gets the
// next one live; a position of another epoch is recovered:false; a dm to
// a subject that never connected is not_found.
func testInbox(t *testing.T, login func(node int, user string) *client, last int, srv *server.Server) {
	const n = 12
	alice := login(0, "alice").connectAndReturn()
	bob := login(last, "bob")
	wb := bob.connectInbox(nil)
	if wb.Inbox == nil || wb.Inbox.Offset != 0 || !protocol.ValidEpoch(wb.Inbox.Epoch) || wb.InboxRecovered != nil {
		t.Fatalf("first welcome's inbox: %+v %v", wb.Inbox, wb.InboxRecovered)
	}
	epoch := wb.Inbox.Epoch
	// A subject that never said hello has no inbox: not_found, nothing
	// stored.
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "nobody", Corr: "n", Body: mustJSON(t, 1)})
	if eb := alice.expectError(protocol.CodeNotFound); eb.Ref == "" {
		t.Fatal("not_found without ref")
	}
	alice.dmN("bob", 1, 1)
	v, pos := bob.openDirect(bob.recvAct(protocol.ActDirect), "alice")
	if v != 1 || pos != (protocol.Position{Epoch: epoch, Offset: 1}) {
		t.Fatalf("live stored dm: n=%d pos=%v", v, pos)
	}
	bob.ws.Close()
	// bob has no session now: his dms are accepted and stored.
	sigiltest.Eventually(t, "bob's session to be gone", func() bool {
		for _, si := range srv.Sessions() {
			if si.Subject == "bob" {
				return false
			}
		}
		return true
	})
	alice.dmN("bob", 2, n)

	wb = bob.connectInbox(&pos)
	if wb.Inbox == nil || *wb.Inbox != (protocol.Position{Epoch: epoch, Offset: 1 + n}) || wb.InboxRecovered == nil || !*wb.InboxRecovered {
		t.Fatalf("recovering welcome's inbox: %+v %v", wb.Inbox, wb.InboxRecovered)
	}
	ns, ps := bob.recvInboxHistory(n, "alice")
	for i := range ns {
		if ns[i] != 2+i || ps[i] != (protocol.Position{Epoch: epoch, Offset: uint64(2 + i)}) {
			t.Fatalf("recovered %d: n=%d pos=%v", i, ns[i], ps[i])
		}
	}
	alice.dmN("bob", 2+n, 1)
	if v, pos := bob.openDirect(bob.recvAct(protocol.ActDirect), "alice"); v != 2+n || pos.Offset != uint64(2+n) {
		t.Fatalf("live after recovery: n=%d pos=%v", v, pos)
	}

	// A position of another epoch: recovered:false, no history frame;
	// the next frame is the next live dm.
	bob.ws.Close()
	bob2 := login(last, "bob")
	wb = bob2.connectInbox(&protocol.Position{Epoch: "other", Offset: 3})
	if wb.InboxRecovered == nil || *wb.InboxRecovered || wb.Inbox.Offset != uint64(2+n) {
		t.Fatalf("welcome after another epoch: %+v %v", wb.Inbox, wb.InboxRecovered)
	}
	alice.dmN("bob", 3+n, 1)
	m := bob2.recv()
	if v, _ := bob2.openDirect(m, "alice"); v != 3+n {
		t.Fatalf("first frame after recovered:false: n=%d", v)
	}

	// Another user's inbox is its own: carol's starts empty.
	if wb := login(last, "carol").connectInbox(&protocol.Position{Epoch: epoch, Offset: 0}); wb.InboxRecovered == nil || *wb.InboxRecovered {
		t.Fatalf("carol recovered bob's inbox position: %+v %v", wb.Inbox, wb.InboxRecovered)
	}
}

// connectAndReturn is connect, for a chain.
func (c *client) connectAndReturn() *client { return c.connect() }

// TestInboxHistory: the memory engine keeps each user's direct messages
// on a per-user stream (spec.md §20.11).
func TestInboxHistory(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = inboxPolicy(t, 100) })
	testInbox(t, func(_ int, user string) *client { return e.login(user) }, 0, e.srv)
}

// TestInboxHistoryRedis: with the Redis engine, a dm sent on one node to a
// user away from the other is stored, and recovered there.
func TestInboxHistoryRedis(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	cl := newClusterEnv(t, 2, srv.URL, "inbox:", func(_ int, _ *server.ClusterConfig, c *server.Config) {
		if c != nil {
			c.Policy = inboxPolicy(t, 100)
		}
	})
	testInbox(t, cl.login, 1, cl.nodes[1].srv)
}

// TestInboxSinceMalformed: a hello whose inbox_since is not a position is
// rejected bad_claims, like any malformed hello body.
func TestInboxSinceMalformed(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = inboxPolicy(t, 100) })
	c := e.login("bob").dial()
	body := mustJSON(t, protocol.HelloBody{Token: c.tok.Token, JWK: c.jwk, InboxSince: &protocol.Position{Epoch: "not an epoch!", Offset: 1}})
	c.send(&protocol.Envelope{Action: protocol.ActHello, Body: body})
	c.expectHelloError(protocol.CodeBadClaims)
}

// TestInboxHistoryAction: the history action pages a user's own inbox
// (to, no ch), each frame a stored direct frame; another user's inbox is
// forbidden, and an inbox that keeps no history is not_found.
func TestInboxHistoryAction(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = inboxPolicy(t, 100) })
	alice := e.login("alice").connect()
	bob := e.login("bob")
	wb := bob.connectInbox(nil)
	alice.dmN("bob", 1, 5)
	for range 5 {
		bob.recvAct(protocol.ActDirect)
	}
	before := uint64(5)
	bob.send(&protocol.Envelope{Action: protocol.ActHistory, To: "bob", Corr: "h", Body: mustJSON(t, protocol.HistoryRequest{Limit: 2, Before: &before})})
	m := bob.recvAct(protocol.ActReply)
	var hr protocol.HistoryReplyBody
	must(t, protocol.DecodeBody(m.Body, &hr))
	if hr.Epoch != wb.Inbox.Epoch || hr.Top != 5 || len(hr.Frames) != 2 || !hr.More {
		t.Fatalf("inbox page: epoch %q top %d frames %d more %v", hr.Epoch, hr.Top, len(hr.Frames), hr.More)
	}
	for i, f := range hr.Frames {
		sd, err := bob.fv.VerifyStoredDirect([]byte(f), "bob")
		must(t, err)
		if v, pos := bob.openDirect(sd.Message, "alice"); v != 3+i || pos.Offset != uint64(3+i) {
			t.Fatalf("page frame %d: n=%d pos=%v", i, v, pos)
		}
	}
	// Not another user's inbox.
	alice.send(&protocol.Envelope{Action: protocol.ActHistory, To: "bob", Corr: "x"})
	if eb := alice.expectError(protocol.CodeForbidden); eb.Ref == "" {
		t.Fatal("forbidden without ref")
	}
	// No inbox history: not_found.
	e2 := newEnv(t, func(c *server.Config) { c.Policy = historyPolicy(t, 100, 0) }) // rooms.> only
	carol := e2.login("carol").connect()
	carol.send(&protocol.Envelope{Action: protocol.ActHistory, To: "carol", Corr: "y"})
	carol.expectError(protocol.CodeNotFound)
}

// BenchmarkInboxDM: one dm from alice to bob's live session, received and
// opened by bob, with bob's inbox keeping history (the direct frame signed
// once with its position and stored) and without (signed on delivery).
func BenchmarkInboxDM(b *testing.B) {
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("inbox=%v", on), func(b *testing.B) {
			p := historyPolicy(b, 100, 0)
			if on {
				p = inboxPolicy(b, 100)
			}
			e := newEnv(b, func(c *server.Config) { c.Policy = p })
			alice := e.login("alice").connect()
			bob := e.login("bob").connect()
			body := mustJSON(b, map[string]int{"n": 1})
			b.ResetTimer()
			for range b.N {
				alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: body})
				if _, _, err := protocol.OpenDelivery(bob.recvAct(protocol.ActDirect), nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
