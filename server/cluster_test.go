package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// clusterWaitLimit is the safety limit of until: long enough for a loaded
// 2-core machine, and never the thing a test measures.
const clusterWaitLimit = 30 * time.Second

// until polls cond until it holds, failing the test after
// clusterWaitLimit.
func until(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(clusterWaitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", clusterWaitLimit, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// testSecret is the cluster secret of the tests' nodes.
var testSecret = bytes.Repeat([]byte("sigil test cluster secret "), 2)

// newCluster connects one node's cluster state to the Redis at url under
// prefix, closed when the test ends (after the node's server, whose
// cleanup is registered later).
func newCluster(t testing.TB, url, prefix string, mod func(*server.ClusterConfig)) *server.Cluster {
	t.Helper()
	cfg := server.ClusterConfig{
		// A generous OpTimeout: on a loaded machine a call can stall for a
		// second. Tests of timeouts set their own.
		Redis:  server.RedisConfig{URL: url, Prefix: prefix, OpTimeout: 20 * time.Second},
		Secret: testSecret,
	}
	if mod != nil {
		mod(&cfg)
	}
	c, err := server.NewCluster(cfg)
	if err != nil {
		t.Fatalf("NewCluster: %v", err)
	}
	t.Cleanup(c.Close)
	return c
}

// cluster is N in-process servers, each on its own httptest server and
// its own Redis connection, that act as one server through one Redis.
type cluster struct {
	t        testing.TB
	nodes    []*env
	clusters []*server.Cluster
}

// newClusterEnv starts n nodes on the Redis at url (prefix: the nodes'
// shared key prefix). They share one signing key, as the nodes of one
// server must. mod, if not nil, adjusts each node's configuration.
func newClusterEnv(t testing.TB, n int, url, prefix string, mod func(i int, cc *server.ClusterConfig, c *server.Config)) *cluster {
	t.Helper()
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	cl := &cluster{t: t}
	for i := range n {
		cc := newCluster(t, url, prefix, func(cc *server.ClusterConfig) {
			cc.Node = "node-" + string(rune('a'+i))
			cc.Heartbeat = time.Second
			if mod != nil {
				mod(i, cc, nil)
			}
		})
		e := newEnv(t, func(c *server.Config) {
			c.Keys = []*protocol.PrivateKey{key}
			cc.Configure(c)
			if mod != nil {
				mod(i, nil, c)
			}
		})
		cl.nodes = append(cl.nodes, e)
		cl.clusters = append(cl.clusters, cc)
	}
	return cl
}

// on returns a client of user logged in on node i, not yet connected.
func (cl *cluster) login(i int, user string) *client {
	return cl.nodes[i].login(user)
}

// moveTo makes c connect to node i from now on.
func (c *client) moveTo(cl *cluster, i int) *client {
	c.e = cl.nodes[i]
	return c
}

// encClient logs user in on node i with an agreement key (body
// encryption), not yet connected.
func (cl *cluster) encClient(i int, user string) *client {
	c := cl.login(i, user)
	k, err := protocol.GenerateAgreementKey(nil)
	must(cl.t, err)
	c.ekey = k
	return c
}

// subscribe subscribes c to ch and returns the members of the reply; an
// encrypted client learns the channel key from it.
func (c *client) subscribe(ch string) []string {
	c.t.Helper()
	c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: ch, Corr: "sub-" + ch})
	r := c.recvAct(protocol.ActReply)
	var sr protocol.SubReplyBody
	must(c.t, json.Unmarshal(r.Body, &sr))
	if c.ekey != nil {
		k, err := protocol.UnwrapContentKey(sr.Key, c.ekey)
		must(c.t, err)
		c.addKey(k)
	}
	return sr.Members
}

// presenceEvent reads the next frame, which must be a join or a leave of
// ch, and returns its act and subject.
func (c *client) presenceEvent(ch string) string {
	c.t.Helper()
	m := c.recv()
	var jb protocol.JoinBody
	if (m.Action != protocol.ActJoin && m.Action != protocol.ActLeave) || m.Channel != ch || json.Unmarshal(m.Body, &jb) != nil {
		c.t.Fatalf("want a join or leave of %s, got %s %s %s", ch, m.Action, m.Channel, m.Body)
	}
	return m.Action + " " + jb.Sub
}

// members asks for ch's members.
func (c *client) members(ch string) []string {
	c.t.Helper()
	c.send(&protocol.Envelope{Action: protocol.ActPresence, Channel: ch, Corr: "members"})
	var pb protocol.PresenceBody
	must(c.t, json.Unmarshal(c.recvAct(protocol.ActReply).Body, &pb))
	return pb.Members
}

// Publications and direct messages cross the nodes: three publishers on
// three nodes publish concurrently to a channel whose subscribers are on
// the three nodes, and every acknowledged publication is delivered
// exactly once to every subscriber. A dm reaches a session on another
// node, and a dm to a subject without a session on any node is answered
// not_found.
func TestClusterPubSubAndDirect(t *testing.T) {
	cl := newClusterEnv(t, 3, sigiltest.StartRedis(t).URL, "test:", nil)
	users := []string{"alice", "bob", "carol"}
	cs := make([]*client, len(users))
	for i, u := range users {
		cs[i] = cl.login(i, u).connect()
		if got := cs[i].subscribe("rooms.x"); !slices.Equal(got, users[:i+1]) {
			t.Fatalf("%s's sub reply: members %v, want %v", u, got, users[:i+1])
		}
		for j := range i + 1 { // the new member's join reaches every member, on every node
			if ev := cs[j].presenceEvent("rooms.x"); ev != "join "+u {
				t.Fatalf("%s saw %q, want the join of %s", users[j], ev, u)
			}
		}
	}

	const per = 40
	type result struct {
		replies int
		got     map[string]int // "sender/n" -> deliveries
		err     error
	}
	results := make(chan result, len(cs))
	for i, c := range cs {
		go func() { // the writer: per publications with a cid
			for n := range per {
				fr, err := c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.x", Corr: fmt.Sprint(n),
					Body: json.RawMessage(fmt.Sprintf(`{"from":%q,"n":%d}`, users[i], n))})
				if err == nil {
					err = c.ws.WriteMessage(websocket.TextMessage, fr)
				}
				if err != nil {
					results <- result{err: err}
					return
				}
			}
			results <- result{}
		}()
		go func() { // the reader: per replies, and every publication
			r := result{got: map[string]int{}}
			defer func() { results <- r }()
			for r.replies < per || len(r.got) < per*len(cs) {
				_ = c.ws.SetReadDeadline(time.Now().Add(clusterWaitLimit))
				_, data, err := c.ws.ReadMessage()
				if err != nil {
					r.err = err
					return
				}
				m, err := c.fv.Verify(data)
				if err != nil {
					r.err = err
					return
				}
				switch m.Action {
				case protocol.ActReply:
					r.replies++
				case protocol.ActDeliver:
					snd, inner, err := protocol.OpenDelivery(m, nil)
					if err != nil {
						r.err = err
						return
					}
					var b struct {
						From string `json:"from"`
						N    int    `json:"n"`
					}
					if err := json.Unmarshal(inner.Body, &b); err != nil || b.From != snd.Subject {
						r.err = fmt.Errorf("delivery %s from %s", inner.Body, snd.Subject)
						return
					}
					r.got[fmt.Sprintf("%s/%d", b.From, b.N)]++
				default:
					r.err = fmt.Errorf("unexpected %s %s", m.Action, m.Body)
					return
				}
			}
		}()
	}
	for range 2 * len(cs) {
		r := <-results
		if r.err != nil {
			t.Fatal(r.err)
		}
		if r.got == nil {
			continue // a writer
		}
		for k, n := range r.got {
			if n != 1 {
				t.Fatalf("%s delivered %d times", k, n)
			}
		}
	}
	// No duplicate arrives late: the next delivery of each subscriber is
	// the end marker.
	cs[0].send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.x", Body: json.RawMessage(`"end"`)})
	for _, c := range cs {
		_, inner, err := protocol.OpenDelivery(c.recvAct(protocol.ActDeliver), nil)
		must(t, err)
		if string(inner.Body) != `"end"` {
			t.Fatalf("a late delivery: %s", inner.Body)
		}
	}

	// Direct messages: alice on node a to bob on node b.
	cs[0].send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`"hi bob"`), Corr: "d1"})
	cs[0].recvAct(protocol.ActReply)
	snd, inner, err := protocol.OpenDelivery(cs[1].recvAct(protocol.ActDirect), nil)
	must(t, err)
	if snd.Subject != "alice" || string(inner.Body) != `"hi bob"` {
		t.Fatalf("direct from %s: %s", snd.Subject, inner.Body)
	}
	// To a subject with no session anywhere (a user who exists, and a
	// name that does not): not_found.
	for _, to := range []string{"mallory", "nobody"} {
		cs[0].send(&protocol.Envelope{Action: protocol.ActDM, To: to, Body: json.RawMessage(`1`), Corr: "d-" + to})
		if eb := cs[0].expectError(protocol.CodeNotFound); eb.Ref == "" {
			t.Fatal("not_found without ref")
		}
	}
	// Once bob's only session is gone, a dm to bob is not_found too.
	cs[1].ws.Close()
	until(t, "a dm to bob to be not_found", func() bool {
		cs[0].send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`1`), Corr: "d-gone"})
		for {
			m := cs[0].recv()
			switch m.Action {
			case protocol.ActReply:
				return false
			case protocol.ActError:
				var eb protocol.ErrorBody
				must(t, json.Unmarshal(m.Body, &eb))
				if eb.Code != protocol.CodeNotFound {
					t.Fatalf("dm to a gone bob: %s", m.Body)
				}
				return true
			}
		}
	})
}

// Membership is per subject across the nodes: a subject joins when its
// first session on any node subscribes, and leaves when its last one on
// any node leaves, once each; presence replies and the session list are
// the whole server's.
func TestClusterPresence(t *testing.T) {
	cl := newClusterEnv(t, 3, sigiltest.StartRedis(t).URL, "test:", nil)
	carol := cl.login(2, "carol").connect()
	carol.subscribe("rooms.p")
	if ev := carol.presenceEvent("rooms.p"); ev != "join carol" {
		t.Fatal(ev)
	}
	alice1 := cl.login(0, "alice").connect()
	alice1.subscribe("rooms.p")
	if ev := carol.presenceEvent("rooms.p"); ev != "join alice" {
		t.Fatal(ev)
	}
	alice2 := cl.login(1, "alice").connect() // alice's second session, on another node
	if got := alice2.subscribe("rooms.p"); !slices.Equal(got, []string{"alice", "carol"}) {
		t.Fatalf("members %v", got)
	}
	bob := cl.login(1, "bob").connect()
	bob.subscribe("rooms.p")
	// No second join of alice: the next event is bob's.
	if ev := carol.presenceEvent("rooms.p"); ev != "join bob" {
		t.Fatalf("after alice's second session: %q, want bob's join", ev)
	}
	for i, c := range []*client{alice1, bob, carol} {
		if got := c.members("rooms.p"); !slices.Equal(got, []string{"alice", "bob", "carol"}) {
			t.Fatalf("presence on node %d: %v", i, got)
		}
	}
	// Every node lists every session, with the node that serves it.
	until(t, "the session list of every node", func() bool {
		for _, n := range cl.nodes {
			s, err := n.srv.ClusterSessions(context.Background())
			must(t, err)
			var seen []string
			for _, si := range s {
				if len(si.Channels) == 1 {
					seen = append(seen, si.Subject+"@"+si.Node)
				}
			}
			slices.Sort(seen)
			if !slices.Equal(seen, []string{"alice@node-a", "alice@node-b", "bob@node-b", "carol@node-c"}) {
				return false
			}
		}
		return true
	})
	// alice's first session leaves: no leave yet, the next event is bob's.
	alice1.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.p"})
	bob.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.p", Corr: "u"})
	bob.recvAct(protocol.ActReply)
	if ev := carol.presenceEvent("rooms.p"); ev != "leave bob" {
		t.Fatalf("after alice's first session left: %q, want bob's leave", ev)
	}
	// Her last session goes away (disconnects): she leaves, once.
	alice2.ws.Close()
	if ev := carol.presenceEvent("rooms.p"); ev != "leave alice" {
		t.Fatal(ev)
	}
	if got := carol.members("rooms.p"); !slices.Equal(got, []string{"carol"}) {
		t.Fatalf("members %v", got)
	}
}
