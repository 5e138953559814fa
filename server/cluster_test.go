package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// clusterWaitLimit bounds a read that waits for a frame: a safety limit,
// never the thing a test measures.
const clusterWaitLimit = sigiltest.WaitLimit

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
// node; a dm to a subject without a session on any node is answered
// not_found unless its inbox exists (then it is stored, §20.11).
func testClusterPubSubAndDirect(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 3, url, prefix, nil)
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
	// Once bob's only session is gone, a dm to bob is still accepted: his
	// inbox keeps it (spec.md §20.11; TestInboxHistoryRedis recovers it).
	cs[1].ws.Close()
	sigiltest.Eventually(t, "bob's session to end", func() bool {
		for _, si := range cl.nodes[1].srv.Sessions() {
			if si.Subject == "bob" {
				return false
			}
		}
		return true
	})
	cs[0].send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Body: json.RawMessage(`1`), Corr: "d-gone"})
	if m := cs[0].recvAct(protocol.ActReply); m.Corr != "d-gone" {
		t.Fatalf("dm to a gone bob answered %s", m.Corr)
	}
}

// Membership is per subject across the nodes: a subject joins when its
// first session on any node subscribes, and leaves when its last one on
// any node leaves, once each; presence replies and the session list are
// the whole server's.
func testClusterPresence(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 3, url, prefix, nil)
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
	sigiltest.Eventually(t, "the session list of every node", func() bool {
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

// A node that dies (its connection to Redis goes without a word: no
// leave, no cleanup) is forgotten by the others within four heartbeats:
// its members leave their channels, with a leave event, and its sessions
// leave the list.
func testClusterNodeDies(t *testing.T, url, prefix string) {
	const hb = 200 * time.Millisecond
	cl := newClusterEnv(t, 3, url, prefix, func(_ int, cc *server.ClusterConfig, _ *server.Config) {
		if cc != nil {
			cc.Heartbeat = hb
		}
	})
	carol := cl.login(2, "carol").connect()
	carol.subscribe("rooms.d")
	carol.presenceEvent("rooms.d")
	alice := cl.login(0, "alice").connect()
	alice.subscribe("rooms.d")
	if ev := carol.presenceEvent("rooms.d"); ev != "join alice" {
		t.Fatal(ev)
	}
	sigiltest.Eventually(t, "alice's session in the list", func() bool {
		s, err := cl.nodes[1].srv.ClusterSessions(context.Background())
		must(t, err)
		return slices.ContainsFunc(s, func(si server.SessionInfo) bool { return si.Node == "node-a" })
	})

	died := time.Now()
	cl.clusters[0].Redis.Close() // node a is cut off: no heartbeat, no cleanup
	if ev := carol.presenceEvent("rooms.d"); ev != "leave alice" {
		t.Fatalf("after node a died: %q", ev)
	}
	t.Logf("node a's member left %v after it died (heartbeat %v, bound %v)", time.Since(died).Round(time.Millisecond), hb, 4*hb)
	if got := carol.members("rooms.d"); !slices.Equal(got, []string{"carol"}) {
		t.Fatalf("members %v", got)
	}
	s, err := cl.nodes[1].srv.ClusterSessions(context.Background())
	must(t, err)
	for _, si := range s {
		if si.Node == "node-a" {
			t.Fatalf("node a's session still listed: %+v", si)
		}
	}
}

// Revoking on one node closes the matching live sessions on the others
// with 4003, by subject and by token id, without waiting for a frame.
func testClusterRevocation(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 3, url, prefix, nil)
	alice := cl.login(2, "alice").connect()
	bob := cl.login(1, "bob").connect()
	bob2 := cl.login(2, "bob").connect() // another token of bob: stays
	ctx := context.Background()
	if _, err := cl.nodes[0].srv.RevokeSubject(ctx, "alice"); err != nil {
		t.Fatal(err)
	}
	alice.expectCloseFirst(protocol.CloseRevoked)
	var jti string
	for _, si := range cl.nodes[1].srv.Sessions() {
		if si.Subject == "bob" {
			jti = si.TokenID
		}
	}
	if _, err := cl.nodes[0].srv.RevokeToken(ctx, jti); err != nil {
		t.Fatal(err)
	}
	bob.expectCloseFirst(protocol.CloseRevoked)
	bob2.ping()
}

// A session's replay state is the server's: a frame accepted by one node
// is refused by another (replay_id), a session that reconnects to another
// node continues its seq (welcome's last_seq), and a frame with a fresh
// id but an old seq is refused there (replay_seq).
func testClusterReplayAndReconnect(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 3, url, prefix, nil)
	alice := cl.login(0, "alice").connect()
	var last []byte
	for range 3 {
		last = alice.sign(&protocol.Envelope{Action: protocol.ActPing, Corr: "p"})
		alice.write(last)
		alice.recvAct(protocol.ActPong)
	}
	seq := alice.signer.Seq()
	alice.ws.Close()

	alice.moveTo(cl, 1).dial()
	alice.write(alice.helloFrame(alice.tok.Token))
	w := alice.recvAct(protocol.ActWelcome)
	var wb protocol.WelcomeBody
	must(t, json.Unmarshal(w.Body, &wb))
	if wb.LastSeq != seq+1 { // the hello on node b took one more
		t.Fatalf("welcome on node b: last_seq %d, want %d", wb.LastSeq, seq+1)
	}
	alice.write(last) // the same bytes again, to another node
	alice.expectError(protocol.CodeReplayID)
	alice.write(alice.signRaw(alice.payload(&protocol.Envelope{Action: protocol.ActPing, Corr: "old"}, seq)))
	alice.expectError(protocol.CodeReplaySeq)
	alice.ping()
}

// Two nodes that get one refresh token at the same moment: exactly one
// wins. The same request sent to two nodes is a replay (its proof's id):
// the loser consumed nothing, and the winner's new refresh token works.
// Two requests with their own proofs race on the token itself: the loser
// either comes too late for its proof's seq or sees the token used, which
// revokes the family on every node; there is one winner either way.
func testClusterRefreshRace(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 3, url, prefix, nil)
	race := func(c *client, rt string, proofs [2]string) (winner server.TokenResponse) {
		t.Helper()
		type answer struct {
			status int
			tok    server.TokenResponse
		}
		answers := make(chan answer, 2)
		start := make(chan struct{})
		for i := range 2 {
			go func() {
				<-start
				var a answer
				a.status = cl.nodes[i].postJSON("/v1/refresh", map[string]string{"refresh_token": rt, "proof": proofs[i]}, &a.tok)
				answers <- a
			}()
		}
		close(start)
		a, b := <-answers, <-answers
		if a.status == 200 {
			a, b = b, a
		}
		if a.status != 401 || b.status != 200 {
			t.Fatalf("racing refreshes answered %d and %d; want one 200 and one 401", a.status, b.status)
		}
		return b.tok
	}
	alice := cl.login(0, "alice")
	proof := alice.refreshProof(alice.tok.RefreshToken)
	won := race(alice, alice.tok.RefreshToken, [2]string{proof, proof})
	var next server.TokenResponse
	if st := cl.nodes[2].postJSON("/v1/refresh", map[string]string{"refresh_token": won.RefreshToken, "proof": alice.refreshProof(won.RefreshToken)}, &next); st != 200 {
		t.Fatalf("the winner's refresh token after a replayed request: %d", st)
	}
	bob := cl.login(1, "bob")
	race(bob, bob.tok.RefreshToken, [2]string{bob.refreshProof(bob.tok.RefreshToken), bob.refreshProof(bob.tok.RefreshToken)})
}

// An encrypted channel with members on three nodes: all hold the same
// key, read each other, and when an encrypted member leaves (on any node)
// the key is rotated for the others on every node, who read each other
// with the new key, which the member that left never held.
func testClusterEncryptedChannel(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 3, url, prefix, nil)
	alice, bob, carol := cl.encClient(0, "alice").connect(), cl.encClient(1, "bob").connect(), cl.encClient(2, "carol").connect()
	const ch = "rooms.e"
	scope := protocol.ChannelScope(ch)
	for _, c := range []*client{alice, bob, carol} {
		c.subscribe(ch)
	}
	k1 := alice.keyFor(scope)
	for _, c := range []*client{bob, carol} {
		if c.keyFor(scope).ID != k1.ID {
			t.Fatal("the nodes gave different channel keys")
		}
	}
	// reads checks that every reader gets from's publication, sealed
	// with from's newest channel key (and from its reply, which may come
	// before or after its own delivery).
	reads := func(from *client, text string, readers ...*client) {
		t.Helper()
		sealed, err := protocol.SealBody(from.keyFor(scope), []byte(`"`+text+`"`))
		must(t, err)
		from.send(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Enc: sealed, Corr: text})
		if !slices.Contains(readers, from) {
			from.recvAct(protocol.ActReply)
		}
		for _, r := range readers {
			replied, read := r != from, false
			for !replied || !read {
				m := r.recv()
				switch m.Action {
				case protocol.ActReply:
					replied = true
				case protocol.ActDeliver:
					_, inner, err := protocol.OpenDelivery(m, r.keys)
					must(t, err)
					if string(inner.Body) != `"`+text+`"` {
						t.Fatalf("read %s, want %s", inner.Body, text)
					}
					read = true
				case protocol.ActJoin, protocol.ActLeave:
				default:
					t.Fatalf("%s got %s %s", r.tok.Subject, m.Action, m.Body)
				}
			}
		}
	}
	reads(alice, "one", alice, bob, carol)
	reads(carol, "two", alice, bob, carol)

	// carol (node c) leaves: alice (node a) and bob (node b) get one new key.
	carol.send(&protocol.Envelope{Action: protocol.ActUnsub, Channel: ch, Corr: "u"})
	carol.recvAct(protocol.ActReply)
	var k2 string
	for _, c := range []*client{alice, bob} {
		var kb protocol.KeyBody
		must(t, json.Unmarshal(c.recvAct(protocol.ActKey).Body, &kb))
		k, err := protocol.UnwrapContentKey(kb.Key, c.ekey)
		must(t, err)
		if k.ID == k1.ID || (k2 != "" && k.ID != k2) || k.Scope != scope {
			t.Fatalf("rotated key %s (first key %s, other node's %s)", k.ID, k1.ID, k2)
		}
		k2 = k.ID
		c.addKey(k)
	}
	reads(bob, "three", alice, bob)
	reads(alice, "four", alice, bob)

	// bob disconnects: alice gets the next key.
	bob.ws.Close()
	var kb protocol.KeyBody
	must(t, json.Unmarshal(alice.recvAct(protocol.ActKey).Body, &kb))
	k3, err := protocol.UnwrapContentKey(kb.Key, alice.ekey)
	must(t, err)
	if k3.ID == k2 {
		t.Fatal("not rotated when bob disconnected")
	}
	alice.addKey(k3)
	// A newcomer on node c gets the current key.
	dave := cl.encClient(2, "carol").connect()
	dave.subscribe(ch)
	if dave.keyFor(scope).ID != k3.ID {
		t.Fatalf("newcomer's key %s, want %s", dave.keyFor(scope).ID, k3.ID)
	}
	reads(dave, "five", alice, dave)
}

// clusterCases are the three-node tests: each runs on one redis-server
// (TestCluster) and on a three-shard Redis Cluster (TestClusterOnRedisCluster).
var clusterCases = []struct {
	name string
	run  func(t *testing.T, url, prefix string)
}{
	{"PubSubAndDirect", testClusterPubSubAndDirect},
	{"Presence", testClusterPresence},
	{"NodeDies", testClusterNodeDies},
	{"Revocation", testClusterRevocation},
	{"ReplayAndReconnect", testClusterReplayAndReconnect},
	{"RefreshRace", testClusterRefreshRace},
	{"EncryptedChannel", testClusterEncryptedChannel},
	{"Resubscribe", testClusterResubscribe},
}

func TestCluster(t *testing.T) {
	for _, tc := range clusterCases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, sigiltest.StartRedis(t).URL, "test:") })
	}
}

// On a Redis Cluster the broker partitions, and with them the channels'
// presence keys, spread over the shards; every node subscribes to each
// partition on the shard that owns it (sharded pub/sub).
func TestClusterOnRedisCluster(t *testing.T) {
	rc := sigiltest.StartRedisCluster(t, 3)
	for _, tc := range clusterCases {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, rc.URL, "test-"+uuid.NewString()[:8]+":") })
	}
	shards := 0
	for _, n := range rc.KeyCounts(t) {
		if n > 0 {
			shards++
		}
	}
	if shards < 2 {
		t.Fatalf("keys per shard %v: the tests did not spread over the cluster", rc.KeyCounts(t))
	}
}

// feed reads a client's frames on a goroutine of its own, so that a test
// can wait for a frame with a time limit (a read deadline would break a
// WebSocket connection for good).
type feed struct {
	c  *client
	ch chan *protocol.Message
}

func (c *client) feed() *feed {
	f := &feed{c: c, ch: make(chan *protocol.Message, 1024)}
	go func() {
		defer close(f.ch)
		for {
			_, data, err := c.ws.ReadMessage()
			if err != nil {
				return
			}
			m, err := c.fv.Verify(data)
			if err != nil {
				c.t.Errorf("server frame does not verify: %v", err)
				return
			}
			f.ch <- m
		}
	}()
	return f
}

// next returns the next frame, or false after d. A key frame gives the
// client its key.
func (f *feed) next(d time.Duration) (*protocol.Message, bool) {
	select {
	case m, ok := <-f.ch:
		if !ok {
			f.c.t.Fatalf("%s's connection ended", f.c.tok.Subject)
		}
		if m.Action == protocol.ActKey {
			var kb protocol.KeyBody
			must(f.c.t, json.Unmarshal(m.Body, &kb))
			k, err := protocol.UnwrapContentKey(kb.Key, f.c.ekey)
			must(f.c.t, err)
			f.c.addKey(k)
		}
		return m, true
	case <-time.After(d):
		return nil, false
	}
}

// flows waits until a publication of from (to ch, sealed with its newest
// key of ch if it has one) reaches to: from publishes again as long as it
// has not (while the cluster recovers, a publication may be refused as
// unavailable, or reach no one).
func flows(t *testing.T, from, to *feed, ch string) {
	t.Helper()
	deadline := time.Now().Add(clusterWaitLimit)
	for try := 0; time.Now().Before(deadline); try++ {
		text := fmt.Sprintf(`"try %d"`, try)
		env := &protocol.Envelope{Action: protocol.ActPub, Channel: ch, Corr: text}
		if from.c.ekey != nil {
			sealed, err := protocol.SealBody(from.c.keyFor(protocol.ChannelScope(ch)), []byte(text))
			must(t, err)
			env.Enc = sealed
		} else {
			env.Body = json.RawMessage(text)
		}
		from.c.send(env)
		for answered := false; !answered; {
			m, ok := from.next(clusterWaitLimit)
			if !ok {
				t.Fatalf("%s's publication not answered", from.c.tok.Subject)
			}
			answered = m.Corr == text
		}
		for wait := time.Now().Add(200 * time.Millisecond); ; {
			m, ok := to.next(time.Until(wait))
			if !ok {
				break // not this one: publish again
			}
			if m.Action == protocol.ActDeliver {
				_, inner, err := protocol.OpenDelivery(m, to.c.keys)
				must(t, err)
				if string(inner.Body) == text {
					return
				}
			}
		}
	}
	t.Fatalf("no publication of %s reached %s", from.c.tok.Subject, to.c.tok.Subject)
}

// When Redis drops the nodes' subscription connections (here: CLIENT KILL
// TYPE pubsub on every shard), every node subscribes again by itself, and
// re-checks its live sessions against the revocations, as it may have
// missed notices: a revocation written without a notice closes its
// session.
func testClusterResubscribe(t *testing.T, url, prefix string) {
	cl := newClusterEnv(t, 2, url, prefix, nil)
	alice := cl.login(0, "alice").connect()
	bob := cl.login(1, "bob").connect()
	carol := cl.login(1, "carol").connect()
	alice.subscribe("rooms.k")
	bob.subscribe("rooms.k")

	raw := cl.clusters[0].Redis // a node's connection, used as a plain Redis client
	ctx := context.Background()
	must(t, server.RedisSet(ctx, raw, prefix+"revoked:sub:carol", fmt.Sprint(time.Now().UnixNano())))
	must(t, server.RedisKillPubSub(ctx, raw))
	carol.expectCloseFirst(protocol.CloseRevoked)
	af, bf := alice.feed(), bob.feed()
	flows(t, af, bf, "rooms.k")
	flows(t, bf, af, "rooms.k")
}

// Redis restarts empty: the nodes subscribe again, re-register their
// members and sessions (the heartbeat finds itself gone), and agree on a
// new content key for the encrypted channel they hold, with no restart of
// their own.
func TestClusterRedisRestart(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	cl := newClusterEnv(t, 2, srv.URL, "test:", func(_ int, cc *server.ClusterConfig, _ *server.Config) {
		if cc != nil {
			cc.Heartbeat = 200 * time.Millisecond
		}
	})
	alice, bob := cl.encClient(0, "alice").connect(), cl.encClient(1, "bob").connect()
	alice.subscribe("rooms.r")
	bob.subscribe("rooms.r")

	srv.Restart()
	af, bf := alice.feed(), bob.feed()
	flows(t, af, bf, "rooms.r")
	flows(t, bf, af, "rooms.r")
	ctx := context.Background()
	sigiltest.Eventually(t, "the members to be back", func() bool {
		m, err := cl.clusters[1].Presence.Members(ctx, "rooms.r")
		return err == nil && slices.Equal(m, []string{"alice", "bob"})
	})
	sigiltest.Eventually(t, "the sessions to be back", func() bool {
		s, err := cl.nodes[0].srv.ClusterSessions(ctx)
		return err == nil && len(s) == 2
	})
	// A newcomer gets the key the others hold now.
	carol := cl.encClient(1, "carol").connect()
	carol.subscribe("rooms.r")
	cf := carol.feed()
	flows(t, cf, af, "rooms.r")
	flows(t, af, cf, "rooms.r")
}
