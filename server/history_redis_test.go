package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// TestHistoryRedis: two nodes on one Redis share each channel's stream.
// Publications from both nodes, concurrently, get one order of offsets,
// the order in which every subscriber on every node receives them; a
// subscriber that was away recovers them all from either node; a node
// restart keeps the history (and its epoch); a Redis that lost its data
// starts a new epoch and a recovering client is told recovered:false.
func TestHistoryRedis(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	mod := func(_ int, _ *server.ClusterConfig, c *server.Config) {
		if c != nil {
			c.Keys = []*protocol.PrivateKey{key} // the restarted node's too
			c.Policy = historyPolicy(t, 1000, 0)
			c.SendQueue = 2048
		}
	}
	cl := newClusterEnv(t, 2, srv.URL, "test:", mod)
	subs := []*client{cl.login(0, "alice").connect(), cl.login(1, "alice").connect()}
	var start protocol.Position
	for _, s := range subs {
		start = *s.subSince("rooms.rh", nil).Stream
	}
	away := cl.login(1, "carol").connect()
	away.subSince("rooms.rh", nil)
	away.ws.Close()

	const per = 40
	var wg sync.WaitGroup
	for i := range 2 {
		p := cl.login(i, "bob").connect()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range per {
				cid := fmt.Sprintf("p%d", j)
				fr, err := p.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.rh", Corr: cid, Body: mustJSON(t, map[string]int{"n": i*1000 + j})})
				if err == nil {
					err = p.ws.WriteMessage(1, fr)
				}
				if err == nil {
					_, _, err = p.ws.ReadMessage()
				}
				if err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	// Every subscriber, on either node, sees offsets 1..120 in order,
	// and the same message at each offset.
	at := map[uint64]int{}
	for _, s := range subs {
		for o := uint64(1); o <= 2*per; o++ {
			n, pos := s.openPositioned(s.recvAct(protocol.ActDeliver))
			if pos.Offset != o || pos.Epoch != start.Epoch {
				t.Fatalf("offset %v, want %d", pos, o)
			}
			if v, ok := at[o]; ok && v != n {
				t.Fatalf("offset %d: %d on one node, %d on the other", o, v, n)
			}
			at[o] = n
		}
	}
	recoverAll := func(node int, since protocol.Position) {
		t.Helper()
		c := cl.login(node, "carol").connect()
		defer c.ws.Close()
		rb := c.subSince("rooms.rh", &since)
		if rb.Recovered == nil || !*rb.Recovered || rb.Stream.Offset != 2*per {
			t.Fatalf("node %d: %+v", node, rb)
		}
		offs, ns := c.recvHistory("rooms.rh", 2*per)
		for i := range offs {
			if offs[i] != uint64(i+1) || ns[i] != at[offs[i]] {
				t.Fatalf("node %d: recovered offset %d n %d", node, offs[i], ns[i])
			}
		}
	}
	recoverAll(0, start)
	recoverAll(1, start)

	// A node restarts: the stream is Redis', with its epoch.
	cl2 := newClusterEnv(t, 1, srv.URL, "test:", mod)
	recoverAll2 := cl2.login(0, "carol").connect()
	if rb := recoverAll2.subSince("rooms.rh", &start); rb.Recovered == nil || !*rb.Recovered || rb.Stream.Epoch != start.Epoch {
		t.Fatalf("after a node restart: %+v", rb)
	}
	recoverAll2.recvHistory("rooms.rh", 2*per)

	// Redis loses its data: a new epoch.
	srv.Restart()
	probe, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	pj, _ := probe.Public().MarshalJSON()
	sigiltest.Eventually(t, "logins to work on the restarted Redis", func() bool {
		return cl.nodes[1].postJSON("/v1/token", map[string]any{"grant_type": "password", "username": "carol", "password": "pw",
			"jwk": json.RawMessage(pj)}, nil) == http.StatusOK
	})
	var rb protocol.SubReplyBody
	sigiltest.Eventually(t, "a sub on the restarted Redis", func() bool {
		c := cl.login(1, "carol").connect()
		defer c.ws.Close()
		c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.rh", Corr: "s", Body: mustJSON(t, protocol.SubBody{Since: &start})})
		m := c.recv()
		for m.Action != protocol.ActReply && m.Action != protocol.ActError {
			m = c.recv()
		}
		if m.Action == protocol.ActError {
			return false // unavailable while the broker reconnects
		}
		must(t, json.Unmarshal(m.Body, &rb))
		return true
	})
	if rb.Recovered == nil || *rb.Recovered || rb.Stream == nil || rb.Stream.Epoch == start.Epoch {
		t.Fatalf("after Redis lost its data: %+v", rb)
	}
}

// TestHistoryRedisWindow: in Redis too, a position trimmed by size or by
// age is answered recovered:false, and one within the window recovers.
func TestHistoryRedisWindow(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	clk := sigiltest.NewClock()
	cl := newClusterEnv(t, 1, srv.URL, "test:", func(_ int, cc *server.ClusterConfig, c *server.Config) {
		if cc != nil {
			cc.Redis.Now = clk.Now
		}
		if c != nil {
			c.Now = clk.Now
			c.Policy = historyPolicy(t, 5, 60)
		}
	})
	cl.nodes[0].clock = clk
	probe := cl.login(0, "carol").connect()
	epoch := probe.subSince("rooms.win", nil).Stream.Epoch
	probe.ws.Close()
	bob := cl.login(0, "bob").connect()
	bob.pubN("rooms.win", 1, 8) // kept: 4..8
	try := func(name string, since uint64, want bool, n int) {
		t.Helper()
		a := cl.login(0, "alice").connect()
		defer a.ws.Close()
		rb := a.subSince("rooms.win", &protocol.Position{Epoch: epoch, Offset: since})
		if rb.Recovered == nil || *rb.Recovered != want || rb.Stream.Epoch != epoch {
			t.Fatalf("%s: %+v", name, rb)
		}
		if want {
			a.recvHistory("rooms.win", n)
		}
	}
	try("trimmed by size", 2, false, 0)
	try("within the window", 3, true, 5)
	clk.Advance(61 * time.Second)
	bob = cl.login(0, "bob").connect() // its frames so far are old now
	bob.pubN("rooms.win", 9, 1)        // kept: 9
	try("trimmed by age", 7, false, 0)
	try("within the window after the trim", 8, true, 1)
}
