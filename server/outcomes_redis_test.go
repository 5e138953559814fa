package server_test

import (
	"context"
	"encoding/json"
	"regexp"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// gateOutcomes holds the frames to one channel while armed, after they
// were accepted (their ids recorded) and before their action runs, until
// the test opens the gate: the frame is in hand on its node.
type gateOutcomes struct {
	server.OutcomeStore
	channel string
	armed   atomic.Bool
	held    chan struct{}
	open    chan struct{}
}

func (g *gateOutcomes) Begin(ctx context.Context, sid string, env *protocol.Envelope, until time.Time) (context.Context, func(*protocol.Error)) {
	if env.Channel == g.channel && g.armed.Load() {
		g.held <- struct{}{}
		<-g.open
	}
	return g.OutcomeStore.Begin(ctx, sid, env, until)
}

// deliveredN reads c's frames until a deliver or a direct, which must be
// act, and returns its body's n.
func (c *client) deliveredN(act string) int {
	c.t.Helper()
	m := c.recv()
	for m.Action != protocol.ActDeliver && m.Action != protocol.ActDirect {
		m = c.recv()
	}
	if m.Action != act {
		c.t.Fatalf("%s: want a %s, got a %s %s", c.tok.Subject, act, m.Action, m.Body)
	}
	_, inner, err := protocol.OpenDelivery(m, nil)
	must(c.t, err)
	var b struct{ N int }
	must(c.t, json.Unmarshal(inner.Body, &b))
	return b.N
}

// expectDuplicate reads the answer to a copy: a reply to cid with
// {"duplicate": true}.
func (c *client) expectDuplicate(cid string) {
	c.t.Helper()
	m := c.recvAct(protocol.ActReply)
	var db protocol.DuplicateBody
	must(c.t, protocol.DecodeBody(m.Body, &db))
	if m.Corr != cid || !db.Duplicate {
		c.t.Fatalf("answer to the copy of %s: %s %s", cid, m.Corr, m.Body)
	}
}

// TestResentFrameAnsweredOnAnotherNode: with two nodes on one Redis, a
// pub or dm frame accepted by node a and sent again, byte for byte, to
// node b (the client reconnected there) is answered as it was on node a
// — {"duplicate": true}, or the same error — and delivered once to the
// subscribers on both nodes: on a channel with history, on one without,
// for a dm, and for a copy that reaches node b while node a still holds
// the first (node b waits for its answer). A frame never accepted is
// replay_seq on node b.
func TestResentFrameAnsweredOnAnotherNode(t *testing.T) {
	var gate *gateOutcomes
	cl := newClusterEnv(t, 2, sigiltest.StartRedis(t).URL, "out:", func(i int, _ *server.ClusterConfig, c *server.Config) {
		if c != nil && i == 0 {
			gate = &gateOutcomes{OutcomeStore: c.Outcomes, channel: "announce.x", held: make(chan struct{}), open: make(chan struct{})}
			c.Outcomes = gate
		}
	})
	alice := cl.login(0, "alice").connect() // node a
	bob := cl.login(1, "bob").connect()     // node b
	for _, ch := range []string{"rooms.x", "announce.x"} {
		alice.subscribe(ch)
		bob.subscribe(ch)
	}
	carol := cl.login(0, "carol").connect()
	// reconnect moves carol's session to node i (a new connection, the
	// session's next hello).
	reconnect := func(i int) {
		carol.ws.Close()
		carol.moveTo(cl, i).connect()
	}
	pub := func(ch string, n int) []byte {
		return carol.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Corr: "p" + strconv.Itoa(n), Body: mustJSON(t, map[string]int{"n": n})})
	}
	// Each subscriber gets exactly the given messages, in order: the
	// next deliver after them is a new one (n).
	deliveredOnce := func(ch string, want ...int) {
		t.Helper()
		for _, c := range []*client{alice, bob} {
			for _, n := range want {
				if got := c.deliveredN(protocol.ActDeliver); got != n {
					t.Fatalf("%s on %s: got %d, want %d", c.tok.Subject, ch, got, n)
				}
			}
		}
	}

	// A channel with history: the success is recorded by the append.
	p1 := pub("rooms.x", 1)
	carol.write(p1)
	carol.recvAct(protocol.ActReply)
	deliveredOnce("rooms.x", 1)
	reconnect(1)
	carol.write(p1)
	carol.expectDuplicate("p1")

	// A channel without history: recorded by the broker's publish.
	p2 := pub("announce.x", 2)
	carol.write(p2)
	carol.recvAct(protocol.ActReply)
	deliveredOnce("announce.x", 2)
	reconnect(0)
	carol.write(p2)
	carol.expectDuplicate("p2")

	// A dm across nodes, and a dm to nobody (its error recorded apart).
	dm := carol.sign(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Corr: "d1", Body: mustJSON(t, map[string]int{"n": 3})})
	carol.write(dm)
	carol.recvAct(protocol.ActReply)
	if n := bob.deliveredN(protocol.ActDirect); n != 3 {
		t.Fatalf("bob's dm: %d", n)
	}
	nobody := carol.sign(&protocol.Envelope{Action: protocol.ActDM, To: "nobody", Corr: "d2", Body: mustJSON(t, map[string]int{"n": 4})})
	carol.write(nobody)
	carol.expectError(protocol.CodeNotFound)
	never := pub("rooms.x", 5) // signed, never sent before the reconnection
	reconnect(1)
	carol.write(dm)
	carol.expectDuplicate("d1")
	carol.write(nobody)
	if eb := carol.expectError(protocol.CodeNotFound); eb.Ref == "" {
		t.Fatal("no ref")
	}
	carol.write(never)
	carol.expectError(protocol.CodeReplaySeq)

	// In hand on node a when the copy reaches node b: node b waits for
	// the answer (it reads Redis until it is there).
	reconnect(0)
	gate.armed.Store(true)
	p6 := pub("announce.x", 6)
	carol.write(p6)
	<-gate.held // accepted on node a, held before its action
	reconnect(1)
	carol.write(p6)
	reads := regexp.MustCompile(`sigil_redis_seconds_count\{op="outcome.read"\} (\d+)`)
	sigiltest.Eventually(t, "node b to read the copy's answer twice", func() bool {
		m := reads.FindStringSubmatch(cl.nodes[1].metric(`sigil_redis_seconds_count{op="outcome.read"}`))
		if m == nil {
			return false
		}
		n, _ := strconv.Atoi(m[1])
		return n >= 2
	})
	gate.armed.Store(false)
	close(gate.open)
	carol.expectDuplicate("p6")
	deliveredOnce("announce.x", 6)

	// Nothing was delivered twice: the next deliveries are new ones.
	carol.write(pub("rooms.x", 7))
	carol.recvAct(protocol.ActReply)
	deliveredOnce("rooms.x", 7)
	if got := cl.nodes[1].metric("sigil_resent_frames_total"); got != "sigil_resent_frames_total 4" {
		t.Fatalf("node b: %q", got)
	}
}
