package server_test

import (
	"encoding/json"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// historyPolicy is the default policy with the history of "rooms.>" set
// to size frames (and ttl seconds).
func historyPolicy(t testing.TB, size int, ttl int64) *protocol.Policy {
	t.Helper()
	p, err := protocol.DefaultPolicy().WithHistory([]protocol.HistoryRule{{Channel: "rooms.>", Size: size, TTL: ttl}})
	must(t, err)
	return p
}

// subSince subscribes c to ch (with since, if not nil) and returns the
// reply's body.
func (c *client) subSince(ch string, since *protocol.Position) protocol.SubReplyBody {
	c.t.Helper()
	env := &protocol.Envelope{Action: protocol.ActSub, Channel: ch, Corr: "sub-" + ch}
	if since != nil {
		env.Body = mustJSON(c.t, protocol.SubBody{Since: since})
	}
	c.send(env)
	m := c.recvAct(protocol.ActReply)
	if m.Corr != env.Corr {
		c.t.Fatalf("reply cid %q", m.Corr)
	}
	var rb protocol.SubReplyBody
	must(c.t, protocol.DecodeBody(m.Body, &rb))
	return rb
}

// pubN publishes n messages to ch, each answered, with bodies
// {"n": from+i}.
func (c *client) pubN(ch string, from, n int) {
	c.t.Helper()
	for i := range n {
		cid := "p" + strconv.Itoa(from+i)
		c.send(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Corr: cid, Body: mustJSON(c.t, map[string]int{"n": from + i})})
		if m := c.recvAct(protocol.ActReply); m.Corr != cid {
			c.t.Fatalf("reply cid %q, want %q", m.Corr, cid)
		}
	}
}

// openPositioned opens a deliver frame end to end and returns its body's n
// and its position.
func (c *client) openPositioned(d *protocol.Message) (int, protocol.Position) {
	c.t.Helper()
	pos, ok, err := protocol.DeliveryPosition(d)
	must(c.t, err)
	if !ok {
		c.t.Fatalf("deliver frame without a position: %s", d.Body)
	}
	_, inner, err := c.fv.OpenDelivery(d, nil)
	must(c.t, err)
	var b struct{ N int }
	must(c.t, json.Unmarshal(inner.Body, &b))
	return b.N, pos
}

// recvHistory reads history frames until it has n stored frames, each
// verified as a stored deliver frame of ch, and returns their positions'
// offsets and bodies' n.
func (c *client) recvHistory(ch string, n int) (offs []uint64, ns []int) {
	c.t.Helper()
	for len(offs) < n {
		m := c.recvAct(protocol.ActHistory)
		if m.Channel != ch || m.Session != c.tok.Session {
			c.t.Fatalf("history frame for %q/%q", m.Channel, m.Session)
		}
		var hb protocol.HistoryBody
		must(c.t, protocol.DecodeBody(m.Body, &hb))
		for _, f := range hb.Frames {
			sd, err := c.fv.VerifyStored([]byte(f), ch)
			must(c.t, err)
			v, pos := c.openPositioned(sd.Message)
			if pos != sd.Position {
				c.t.Fatalf("position %v vs %v", pos, sd.Position)
			}
			offs, ns = append(offs, pos.Offset), append(ns, v)
		}
	}
	if len(offs) != n {
		c.t.Fatalf("%d stored frames, want %d", len(offs), n)
	}
	return offs, ns
}

// TestHistoryRecoverAfterReconnect: a subscriber that drops misses
// publications; its sub with since gets every one of them, in order, as
// the original signed frames, then the live ones.
func TestHistoryRecoverAfterReconnect(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.login("alice").connect()
	bob := e.login("bob").connect()
	rb := alice.subSince("rooms.h", nil)
	if rb.Stream == nil || rb.Stream.Offset != 0 || !protocol.ValidEpoch(rb.Stream.Epoch) || rb.Recovered != nil {
		t.Fatalf("first sub reply: %+v", rb)
	}
	bob.pubN("rooms.h", 1, 5)
	var last protocol.Position
	for i := 1; i <= 5; i++ {
		n, pos := alice.openPositioned(alice.recvAct(protocol.ActDeliver))
		if n != i || pos.Offset != uint64(i) || pos.Epoch != rb.Stream.Epoch {
			t.Fatalf("live %d: n=%d pos=%v", i, n, pos)
		}
		last = pos
	}
	alice.ws.Close()
	bob.pubN("rooms.h", 6, 20)

	alice.connect()
	rb = alice.subSince("rooms.h", &last)
	if rb.Recovered == nil || !*rb.Recovered || rb.Stream.Offset != 25 || rb.Stream.Epoch != last.Epoch {
		t.Fatalf("recovering sub reply: %+v", rb)
	}
	offs, ns := alice.recvHistory("rooms.h", 20)
	for i := range offs {
		if offs[i] != uint64(6+i) || ns[i] != 6+i {
			t.Fatalf("recovered %d: offset %d n %d", i, offs[i], ns[i])
		}
	}
	bob.pubN("rooms.h", 26, 1)
	if n, pos := alice.openPositioned(alice.recvAct(protocol.ActDeliver)); n != 26 || pos.Offset != 26 {
		t.Fatalf("live after recovery: n=%d pos=%v", n, pos)
	}
}

// TestHistoryNotRecovered: an unknown epoch, a position ahead of the
// stream, trimmed by size or by age, or a gap beyond the recovery bound is
// answered recovered:false with no history frames; the live frames follow
// the stream position of the reply.
func TestHistoryNotRecovered(t *testing.T) {
	e := newEnvClock(t, func(c *server.Config) { c.Policy = historyPolicy(t, 10, 60) })
	bob := e.login("bob").connect() // the publisher, not subscribed
	probe := e.login("carol").connect()
	epoch := probe.subSince("rooms.w", nil).Stream.Epoch
	probe.ws.Close()
	bob.pubN("rooms.w", 1, 3)
	notRecovered := func(e *env, name, ch string, since protocol.Position) {
		t.Helper()
		a := e.login("alice").connect()
		defer a.ws.Close()
		rb := a.subSince(ch, &since)
		if rb.Recovered == nil || *rb.Recovered || rb.Stream == nil || rb.Stream.Epoch != epoch {
			t.Fatalf("%s: reply %+v", name, rb)
		}
		// Nothing recovered: the next frame is a live one, after the reply's position.
		bob.pubN(ch, 100, 1)
		if _, pos := a.openPositioned(a.recvAct(protocol.ActDeliver)); pos.Offset != rb.Stream.Offset+1 {
			t.Fatalf("%s: live offset %d after stream %v", name, pos.Offset, rb.Stream)
		}
	}
	notRecovered(e, "other epoch", "rooms.w", protocol.Position{Epoch: "AAAAAAAAAAAAAAAA", Offset: 3}) // top 4
	notRecovered(e, "ahead of the stream", "rooms.w", protocol.Position{Epoch: epoch, Offset: 50})     // top 5
	bob.pubN("rooms.w", 6, 9)                                                                          // top 14, kept 5..14
	notRecovered(e, "trimmed by size", "rooms.w", protocol.Position{Epoch: epoch, Offset: 3})          // top 15
	e.clock.Advance(61 * time.Second)
	notRecovered(e, "trimmed by age", "rooms.w", protocol.Position{Epoch: epoch, Offset: 14}) // top 16
	// Within the window: recovered.
	a := e.login("alice").connect()
	rb := a.subSince("rooms.w", &protocol.Position{Epoch: epoch, Offset: 15})
	if rb.Recovered == nil || !*rb.Recovered || rb.Stream.Offset != 16 {
		t.Fatalf("recoverable: %+v", rb)
	}
	if offs, _ := a.recvHistory("rooms.w", 1); offs[0] != 16 {
		t.Fatalf("recovered offsets %v", offs)
	}

	// A gap over MaxRecovery, though within the window.
	e2 := newEnv(t, func(c *server.Config) { c.Policy = historyPolicy(t, 100, 0); c.MaxRecovery = 3 })
	bob = e2.login("bob").connect()
	probe = e2.login("carol").connect()
	epoch = probe.subSince("rooms.b", nil).Stream.Epoch
	probe.ws.Close()
	bob.pubN("rooms.b", 1, 4)
	notRecovered(e2, "over the recovery bound", "rooms.b", protocol.Position{Epoch: epoch, Offset: 0})
	a = e2.login("alice").connect()
	if rb := a.subSince("rooms.b", &protocol.Position{Epoch: epoch, Offset: 2}); rb.Recovered == nil || !*rb.Recovered {
		t.Fatalf("within the bound: %+v", rb)
	}
	a.recvHistory("rooms.b", 3)
}

// TestHistoryEpochChangesOnRestart: the memory engine's streams do not
// survive a restart; a client that comes back to a new server is told
// recovered:false.
func TestHistoryEpochChangesOnRestart(t *testing.T) {
	e1 := newEnv(t, nil)
	a := e1.login("alice").connect()
	rb := a.subSince("rooms.r", nil)
	a.pubN("rooms.r", 1, 1)
	e2 := newEnv(t, nil)
	b := e2.login("alice").connect()
	rb2 := b.subSince("rooms.r", &protocol.Position{Epoch: rb.Stream.Epoch, Offset: 1})
	if rb2.Recovered == nil || *rb2.Recovered || rb2.Stream.Epoch == rb.Stream.Epoch {
		t.Fatalf("after restart: %+v (before: %+v)", rb2, rb)
	}
}

// TestHistoryNoGapNoDuplicateAtSwitch: publications keep coming while a
// subscriber recovers; what it receives — history frames, then live
// deliver frames — is every offset exactly once, in order.
func TestHistoryNoGapNoDuplicateAtSwitch(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = historyPolicy(t, 10000, 0); c.SendQueue = 4096 })
	alice := e.login("alice").connect()
	rb := alice.subSince("rooms.s", nil)
	alice.ws.Close()
	const pubs, per = 3, 150
	var wg sync.WaitGroup
	started := make(chan struct{}, pubs)
	for p := range pubs {
		c := e.login("bob").connect()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range per {
				cid := fmt.Sprintf("p%d-%d", p, i)
				fr, err := c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.s", Corr: cid, Body: json.RawMessage(`{"n":0}`)})
				if err != nil {
					t.Error(err)
					return
				}
				if err := c.ws.WriteMessage(1, fr); err != nil {
					t.Error(err)
					return
				}
				if _, _, err := c.ws.ReadMessage(); err != nil {
					t.Error(err)
					return
				}
				if i == 20 {
					started <- struct{}{}
				}
			}
		}()
	}
	for range pubs {
		<-started // every publisher is under way
	}
	alice.connect()
	rb2 := alice.subSince("rooms.s", rb.Stream)
	if rb2.Recovered == nil || !*rb2.Recovered {
		t.Fatalf("reply %+v", rb2)
	}
	wg.Wait()
	next := uint64(1)
	for next <= pubs*per {
		m := alice.recv()
		var offs []uint64
		switch m.Action {
		case protocol.ActHistory:
			var hb protocol.HistoryBody
			must(t, protocol.DecodeBody(m.Body, &hb))
			for _, f := range hb.Frames {
				sd, err := alice.fv.VerifyStored([]byte(f), "rooms.s")
				must(t, err)
				offs = append(offs, sd.Position.Offset)
			}
		case protocol.ActDeliver:
			_, pos := alice.openPositioned(m)
			offs = append(offs, pos.Offset)
		default:
			continue
		}
		for _, o := range offs {
			if o != next {
				t.Fatalf("offset %d, want %d (recovered up to %d)", o, next, rb2.Stream.Offset)
			}
			next++
		}
	}
}

// TestHistoryAction: the history action pages a channel's stream, and is
// authorized by the policy on its own.
func TestHistoryAction(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = historyPolicy(t, 50, 0) })
	bob := e.login("bob").connect()
	bob.pubN("rooms.p", 1, 60) // no subscriber: stored all the same; 11..60 kept
	read := func(c *client, body string) protocol.HistoryReplyBody {
		t.Helper()
		env := &protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.p", Corr: "h"}
		if body != "" {
			env.Body = json.RawMessage(body)
		}
		c.send(env)
		m := c.recvAct(protocol.ActReply)
		var hr protocol.HistoryReplyBody
		must(t, protocol.DecodeBody(m.Body, &hr))
		return hr
	}
	offsets := func(hr protocol.HistoryReplyBody) []uint64 {
		var out []uint64
		for _, f := range hr.Frames {
			sd, err := bob.fv.VerifyStored([]byte(f), "rooms.p")
			must(t, err)
			out = append(out, sd.Position.Offset)
		}
		return out
	}
	check := func(name string, hr protocol.HistoryReplyBody, first, last uint64, more bool) {
		t.Helper()
		o := offsets(hr)
		if hr.Top != 60 || len(o) != int(last-first+1) || o[0] != first || o[len(o)-1] != last || hr.More != more {
			t.Fatalf("%s: top %d offsets %v more %v", name, hr.Top, o, hr.More)
		}
	}
	check("latest", read(bob, ""), 11, 60, false) // the default page is 100: all 50 kept
	check("last 5", read(bob, `{"limit":5}`), 56, 60, true)
	check("before 20", read(bob, `{"limit":5,"before":20}`), 15, 19, true)
	check("before 13", read(bob, `{"limit":5,"before":13}`), 11, 12, false)
	check("after 50", read(bob, `{"limit":5,"after":50}`), 51, 55, true)
	check("after 57", read(bob, `{"after":57}`), 58, 60, false)
	check("after 0", read(bob, `{"limit":3,"after":0}`), 11, 13, true)
	if hr := read(bob, `{"after":60}`); len(hr.Frames) != 0 || hr.More {
		t.Fatalf("after the top: %+v", hr)
	}

	bob.send(&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.p", Corr: "x", Body: json.RawMessage(`{"before":3,"after":1}`)})
	bob.expectError(protocol.CodeBadRequest)
	bob.send(&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.p", Corr: "x", Body: json.RawMessage(`{"limit":1001}`)})
	bob.expectError(protocol.CodeBadRequest)
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.p", Corr: "x", Body: json.RawMessage(`{"since":{"epoch":"a b","offset":1}}`)})
	bob.expectError(protocol.CodeBadRequest)
	// announce.> has no history; mallory (no role) may not read it.
	carol := e.login("carol").connect()
	carol.send(&protocol.Envelope{Action: protocol.ActHistory, Channel: "announce.x", Corr: "x"})
	carol.expectError(protocol.CodeNotFound)
	mallory := e.login("mallory").connect()
	mallory.send(&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.p", Corr: "x"})
	mallory.expectError(protocol.CodeForbidden)
}

// TestHistoryRecoveryNeedsHistoryRole: a sub with since recovers only for
// a session the policy lets read the channel's history; others get
// recovered:false and the live frames.
func TestHistoryRecoveryNeedsHistoryRole(t *testing.T) {
	p, err := protocol.NewPolicy([]protocol.Rule{
		{Action: protocol.ActSub, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: protocol.ActPub, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: protocol.ActHistory, Channel: "rooms.>", Roles: []string{"announcer"}},
	})
	must(t, err)
	p, err = p.WithHistory([]protocol.HistoryRule{{Channel: "rooms.>", Size: 10}})
	must(t, err)
	e := newEnv(t, func(c *server.Config) { c.Policy = p })
	bob := e.login("bob").connect() // user
	rb := bob.subSince("rooms.q", nil)
	bob.pubN("rooms.q", 1, 2)
	bob2 := e.login("bob").connect()
	if r := bob2.subSince("rooms.q", rb.Stream); r.Recovered == nil || *r.Recovered {
		t.Fatalf("bob without the history role: %+v", r)
	}
	carol := e.login("carol").connect() // user, announcer
	if r := carol.subSince("rooms.q", rb.Stream); r.Recovered == nil || !*r.Recovered {
		t.Fatalf("carol: %+v", r)
	}
	carol.recvHistory("rooms.q", 2)
}
