package server_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
	"golang.org/x/mod/sumdb/note"
)

// Cluster mode: each node keeps its own log, with its own key and an
// origin line that names it (spec.md §21.7). A frame is in the log of the
// node that accepted it, after the token of its session on that node;
// each log verifies alone, and together they hold every sender.
func TestAuditCluster(t *testing.T) {
	url := sigiltest.StartRedis(t).URL
	logs := make([]*audit.Log, 2)
	vs := make([]note.Verifier, 2)
	cl := newClusterEnv(t, 2, url, "audit:", func(i int, _ *server.ClusterConfig, c *server.Config) {
		if c == nil {
			return
		}
		dir := t.TempDir()
		signer, v, err := audit.LoadOrCreateKey(dir+"/log.key", audit.Origin("sigil.test", c.Node), dir+"/log")
		must(t, err)
		l, err := audit.Open(context.Background(), audit.Config{Dir: dir + "/log", Signer: signer})
		must(t, err)
		t.Cleanup(func() { _ = l.Close(context.Background()) })
		logs[i], vs[i] = l, v
		c.Audit = server.AuditConfig{Log: l, Verifier: v}
	})
	if vs[0].Name() != "sigil.test/audit/node-a" || vs[1].Name() != "sigil.test/audit/node-b" {
		t.Fatalf("origins %s, %s", vs[0].Name(), vs[1].Name())
	}
	alice, bob := cl.login(0, "alice").connect(), cl.login(1, "bob").connect()
	bob.subscribe("rooms.a")
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"from a"}`)})
	if _, ok := replyIndex(t, alice.recvAct(protocol.ActReply)); !ok {
		t.Fatal("no log_index on node a")
	}
	bob.recvAct(protocol.ActDeliver)
	bob.send(&protocol.Envelope{Action: protocol.ActDM, To: "alice", Corr: "d", Body: json.RawMessage(`{"text":"from b"}`)})
	if _, ok := replyIndex(t, bob.recvAct(protocol.ActReply)); !ok {
		t.Fatal("no log_index on node b")
	}
	alice.recvAct(protocol.ActDirect)
	var senders []string
	for i, l := range logs {
		waitCheckpoint(t, l.Source(), vs[i], 3) // keys, token, frame
		rep, err := audit.Verify(context.Background(), l.Source(), audit.VerifyOptions{Verifier: vs[i]})
		must(t, err)
		if !rep.OK() || rep.Kinds[audit.KindFrame] != 1 || rep.Kinds[audit.KindToken] != 1 {
			t.Fatalf("node %d: %+v", i, rep)
		}
		// A log does not verify under the other node's key.
		if rep, err := audit.Verify(context.Background(), l.Source(), audit.VerifyOptions{Verifier: vs[1-i]}); err != nil || rep.OK() {
			t.Fatalf("node %d's log verified under node %d's key", i, 1-i)
		}
		senders = append(senders, rep.Subjects...)
	}
	slices.Sort(senders)
	if !slices.Equal(senders, []string{"alice", "bob"}) {
		t.Fatalf("senders %v", senders)
	}
}
