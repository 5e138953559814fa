package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
	"golang.org/x/mod/sumdb/note"
)

// auditLog opens a log in a temporary directory with a fresh key and a
// short checkpoint interval; it is closed when the test ends.
func auditLog(t testing.TB) (*audit.Log, note.Verifier) {
	t.Helper()
	skey, vkey, err := audit.GenerateKey(audit.Origin("sigil.test", ""))
	must(t, err)
	signer, err := note.NewSigner(skey)
	must(t, err)
	v, err := note.NewVerifier(vkey)
	must(t, err)
	dir := t.TempDir()
	must(t, os.WriteFile(filepath.Join(dir, audit.VKeyFile), []byte(vkey+"\n"), 0o644))
	l, err := audit.Open(context.Background(), audit.Config{Dir: dir, Signer: signer, CheckpointInterval: 100 * time.Millisecond})
	must(t, err)
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	return l, v
}

func newAuditEnv(t testing.TB, async bool) (*env, *audit.Log, note.Verifier) {
	l, v := auditLog(t)
	e := newEnv(t, func(c *server.Config) {
		c.Audit = server.AuditConfig{Log: l, Verifier: v, Async: async, Public: true}
	})
	return e, l, v
}

// waitCheckpoint polls until the log's published checkpoint covers n
// entries.
func waitCheckpoint(t testing.TB, src audit.Source, v note.Verifier, n uint64) {
	t.Helper()
	sigiltest.Eventually(t, fmt.Sprintf("a checkpoint with %d entries", n), func() bool {
		raw, err := src.ReadCheckpoint(context.Background())
		if err != nil {
			return false
		}
		cp, err := audit.ParseCheckpoint(raw, v)
		return err == nil && cp.Size >= n
	})
}

// wantDeliveryIndex checks that delivery d carries log_index want (-1:
// none).
func wantDeliveryIndex(t testing.TB, d *protocol.Message, want int64) {
	t.Helper()
	var db protocol.DeliverBody
	must(t, protocol.DecodeBody(d.Body, &db))
	switch {
	case want < 0 && db.LogIndex != nil:
		t.Fatalf("%s carries log_index %d, want none", d.Action, *db.LogIndex)
	case want >= 0 && (db.LogIndex == nil || *db.LogIndex != uint64(want)):
		t.Fatalf("%s carries log_index %v, want %d", d.Action, db.LogIndex, want)
	}
}

func replyIndex(t testing.TB, m *protocol.Message) (uint64, bool) {
	t.Helper()
	var b struct {
		LogIndex *uint64 `json:"log_index"`
	}
	must(t, json.Unmarshal(m.Body, &b))
	if b.LogIndex == nil {
		return 0, false
	}
	return *b.LogIndex, true
}

// A synchronous audit log: the reply to pub and dm, and their deliveries
// (deliver, direct, and the deliver of a server publication), carry the
// entry's index; the log then verifies as a whole, with the server's keys, both
// tokens, both frames and a server publication; the proof endpoint proves
// the pub's entry, which holds the frame byte for byte.
func TestAuditSync(t *testing.T) {
	e, l, v := newAuditEnv(t, false)
	alice, bob := e.login("alice").connect(), e.login("bob").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	bob.recvAct(protocol.ActReply)
	pub := alice.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"hi"}`)})
	alice.write(pub)
	pi, ok := replyIndex(t, alice.recvAct(protocol.ActReply))
	if !ok {
		t.Fatal("the reply to pub carries no log_index")
	}
	wantDeliveryIndex(t, bob.recvAct(protocol.ActDeliver), int64(pi))
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Corr: "d", Body: json.RawMessage(`{"text":"psst"}`)})
	di, ok := replyIndex(t, alice.recvAct(protocol.ActReply))
	if !ok || di <= pi {
		t.Fatalf("dm log_index %d (ok %v), pub's %d", di, ok, pi)
	}
	wantDeliveryIndex(t, bob.recvAct(protocol.ActDirect), int64(di))
	must(t, e.srv.Publish(context.Background(), "rooms.a", map[string]string{"text": "from the server"}))
	wantDeliveryIndex(t, bob.recvAct(protocol.ActDeliver), int64(di)+1)
	// sub is not logged: keys, 2 tokens, pub, dm, server.
	const n = 6
	waitCheckpoint(t, l.Source(), v, n)
	rep, err := audit.Verify(context.Background(), l.Source(), audit.VerifyOptions{Verifier: v})
	must(t, err)
	if !rep.OK() || rep.Size != n || rep.Kinds[audit.KindFrame] != 2 || rep.Kinds[audit.KindToken] != 2 ||
		rep.Kinds[audit.KindKeys] != 1 || rep.Kinds[audit.KindServer] != 1 || len(rep.Subjects) != 1 {
		t.Fatalf("report: %+v", rep)
	}
	// Over HTTP, as a third party reads it.
	src, err := audit.URLSource(e.url+"/v1/audit/", nil)
	must(t, err)
	if rep, err := audit.Verify(context.Background(), src, audit.VerifyOptions{Verifier: v}); err != nil || !rep.OK() || rep.Size != n {
		t.Fatalf("over HTTP: %v %+v", err, rep)
	}
	resp, err := http.Get(e.url + "/v1/audit/proof?index=" + strconv.FormatUint(pi, 10))
	must(t, err)
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("proof: %d %s", resp.StatusCode, data)
	}
	p, err := audit.ParseProof(data)
	must(t, err)
	ent, _, err := p.Check(v)
	must(t, err)
	if ent.Kind != audit.KindFrame || ent.Frame != string(pub) || p.Index != pi {
		t.Fatalf("proved entry %d: %+v", p.Index, ent)
	}
	// The log's static files are read-only and only those.
	for path, want := range map[string]int{"/v1/audit/checkpoint": 200, "/v1/audit/log.vkey": 200, "/v1/audit/.state/treeState": 404, "/v1/audit/tile/": 404, "/v1/audit/proof?index=99": 404} {
		resp, err := http.Get(e.url + path)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	req, _ := http.NewRequest(http.MethodPut, e.url+"/v1/audit/checkpoint", nil)
	resp, err = http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusMethodNotAllowed {
		t.Errorf("PUT checkpoint: %d", resp.StatusCode)
	}
}

// Asynchronous: the reply carries no index, and the entry reaches the log.
func TestAuditAsync(t *testing.T) {
	e, l, v := newAuditEnv(t, true)
	alice, bob := e.login("alice").connect(), e.login("bob").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	bob.recvAct(protocol.ActReply)
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"hi"}`)})
	if _, ok := replyIndex(t, alice.recvAct(protocol.ActReply)); ok {
		t.Fatal("an async reply carries a log_index")
	}
	wantDeliveryIndex(t, bob.recvAct(protocol.ActDeliver), -1)
	waitCheckpoint(t, l.Source(), v, 4)
	rep, err := audit.Verify(context.Background(), l.Source(), audit.VerifyOptions{Verifier: v})
	must(t, err)
	if !rep.OK() || rep.Kinds[audit.KindFrame] != 1 {
		t.Fatalf("report: %+v", rep)
	}
}

// A log that cannot take the entry fails the frame closed: unavailable,
// and nothing is delivered.
func TestAuditFailsClosed(t *testing.T) {
	e, l, _ := newAuditEnv(t, false)
	alice, bob := e.login("alice").connect(), e.login("bob").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	bob.recvAct(protocol.ActReply)
	must(t, l.Close(context.Background())) // appends fail from now on
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"hi"}`)})
	alice.expectError(protocol.CodeUnavailable)
	if err := e.srv.Publish(context.Background(), "rooms.a", "x"); protocol.CodeOf(err) != protocol.CodeUnavailable {
		t.Fatalf("Publish: %v", err)
	}
	// bob got neither: no deliver before the pong.
	bob.send(&protocol.Envelope{Action: protocol.ActPing, Corr: "x"})
	for m := bob.recv(); m.Action != protocol.ActPong; m = bob.recv() {
		if m.Action == protocol.ActDeliver {
			t.Fatalf("bob received %s", m.Body)
		}
	}
}

// By default the entries and proofs, which hold the messages, are an
// admin's only; the checkpoint, hash tiles and key are public.
func TestAuditEntriesPrivate(t *testing.T) {
	l, v := auditLog(t)
	e := newEnv(t, func(c *server.Config) { c.Audit = server.AuditConfig{Log: l, Verifier: v} })
	alice := e.login("alice").connect()
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"private"}`)})
	alice.recvAct(protocol.ActReply)
	waitCheckpoint(t, l.Source(), v, 3)
	for path, want := range map[string]int{
		"/v1/audit/checkpoint": 200, "/v1/audit/log.vkey": 200, "/v1/audit/tile/0/000.p/3": 200,
		"/v1/audit/tile/entries/000.p/3": 401, "/v1/audit/proof?index=2": 401,
	} {
		resp, err := http.Get(e.url + path)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("GET %s: %d, want %d", path, resp.StatusCode, want)
		}
	}
	// An admin's signed request gets the proof; alice's does not.
	get := func(c *client) int {
		ab, _ := json.Marshal(server.AdminBody{JWK: c.jwk, Req: json.RawMessage("{}")})
		proof := c.sign(&protocol.Envelope{Action: "admin.audit", Body: ab})
		r, _ := http.NewRequest(http.MethodGet, e.url+"/v1/audit/proof?index=2", nil)
		r.Header.Set("Authorization", "Bearer "+c.tok.Token)
		r.Header.Set(server.ProofHeader, string(proof))
		resp, err := http.DefaultClient.Do(r)
		must(t, err)
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := get(alice); st != http.StatusForbidden {
		t.Errorf("alice: %d", st)
	}
	if st := get(e.login("admin")); st != 200 {
		t.Errorf("admin: %d", st)
	}
}

// A frame whose entry would not fit in 65535 bytes is answered
// too_large and not delivered (here: a long node name, and a frame near
// MaxFrame); the session goes on.
func TestAuditEntryTooLarge(t *testing.T) {
	l, v := auditLog(t)
	e := newEnv(t, func(c *server.Config) {
		c.Audit = server.AuditConfig{Log: l, Verifier: v}
		c.Node = strings.Repeat("n", 4000)
	})
	alice := e.login("alice").connect()
	text := strings.Repeat("x", 46000) // ~61 KiB as a JWS, under MaxAuditFrame
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"` + text + `"}`)})
	alice.expectError(protocol.CodeTooLarge)
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "q", Body: json.RawMessage(`{"text":"short"}`)})
	if _, ok := replyIndex(t, alice.recvAct(protocol.ActReply)); !ok {
		t.Fatal("no log_index after a too_large")
	}
}

func TestAuditConfig(t *testing.T) {
	l, v := auditLog(t)
	_, other, _ := audit.GenerateKey("other")
	ov, _ := note.NewVerifier(other)
	for name, cfg := range map[string]server.Config{
		"no verifier":     {Audit: server.AuditConfig{Log: l}},
		"wrong verifier":  {Audit: server.AuditConfig{Log: l, Verifier: ov}},
		"max frame above": {Audit: server.AuditConfig{Log: l, Verifier: v}, MaxFrame: server.MaxAuditFrame + 1},
	} {
		if s, err := server.New(cfg); err == nil {
			_ = s.Shutdown(context.Background())
			t.Errorf("%s: New accepted it", name)
		}
	}
}

// Synchronous, pipelined: a connection's pubs sent back to back are
// verified while the entries of the earlier ones are written, so they
// share batches (before, each frame waited for its own batch: one batch
// per frame); yet every reply and delivery keeps the order of the frames,
// a frame that is not logged (ping) is answered after them, and every
// reply's log_index is the entry of its frame, byte for byte.
func TestAuditSyncPipelined(t *testing.T) {
	e, l, v := newAuditEnv(t, false)
	alice, bob := e.login("alice").connect(), e.login("bob").connect()
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.a", Corr: "s"})
	bob.recvAct(protocol.ActReply)
	sigiltest.Eventually(t, "the keys and both tokens in the log", func() bool { return l.Stats().Entries == 3 })
	before := l.Stats()
	const n = 40
	frames := make([][]byte, n)
	for i := range frames {
		frames[i] = alice.sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p" + strconv.Itoa(i), Body: json.RawMessage(`{"text":"` + strconv.Itoa(i) + `"}`)})
	}
	for _, fr := range frames {
		alice.write(fr)
	}
	alice.send(&protocol.Envelope{Action: protocol.ActPing, Corr: "last"})
	indexes := make([]uint64, n)
	for i := range frames {
		m := alice.recv()
		if m.Action != protocol.ActReply || m.Corr != "p"+strconv.Itoa(i) {
			t.Fatalf("answer %d: %s %q, want the reply to p%d", i, m.Action, m.Corr, i)
		}
		idx, ok := replyIndex(t, m)
		if !ok || i > 0 && idx <= indexes[i-1] {
			t.Fatalf("reply %d: log_index %d (ok %v) after %v", i, idx, ok, indexes[:i])
		}
		indexes[i] = idx
	}
	if m := alice.recv(); m.Action != protocol.ActPong || m.Corr != "last" {
		t.Fatalf("after the replies: %s %q, want the pong", m.Action, m.Corr)
	}
	for i := range frames {
		d := bob.recvAct(protocol.ActDeliver)
		var db protocol.DeliverBody
		must(t, json.Unmarshal(d.Body, &db))
		if db.Frame != string(frames[i]) {
			t.Fatalf("delivery %d is not frame %d", i, i)
		}
	}
	after := l.Stats()
	if got := after.Entries - before.Entries; got != n {
		t.Fatalf("%d entries written, want %d", got, n)
	}
	if b := after.Batches - before.Batches; b > n/2 {
		t.Fatalf("%d frames took %d batches: the pipelined entries were not batched together", n, b)
	}
	waitCheckpoint(t, l.Source(), v, 3+n)
	for i, idx := range indexes {
		p, err := audit.Prove(context.Background(), l.Source(), v, idx)
		must(t, err)
		ent, _, err := p.Check(v)
		must(t, err)
		if ent.Frame != string(frames[i]) {
			t.Fatalf("entry %d is not frame %d", idx, i)
		}
	}
}

// With history and a synchronous audit log, the deliver frame that
// history keeps carries the publication's position and its log index
// together, signed by the server, and its frame is the entry's: that is
// how a verifier links an entry to its stream position (spec.md §21.2).
func TestAuditHistoryLink(t *testing.T) {
	l, v := auditLog(t)
	e := newEnv(t, func(c *server.Config) {
		c.Policy = historyPolicy(t, 50, 0)
		c.Audit = server.AuditConfig{Log: l, Verifier: v}
	})
	alice := e.login("alice").connect()
	alice.pubN("rooms.h", 1, 3)
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.h", Corr: "p", Body: json.RawMessage(`{"text":"kept"}`)})
	pi, ok := replyIndex(t, alice.recvAct(protocol.ActReply))
	if !ok {
		t.Fatal("no log_index")
	}
	alice.send(&protocol.Envelope{Action: protocol.ActHistory, Channel: "rooms.h", Corr: "h", Body: json.RawMessage(`{"after":3}`)})
	var hr protocol.HistoryReplyBody
	must(t, protocol.DecodeBody(alice.recvAct(protocol.ActReply).Body, &hr))
	if len(hr.Frames) != 1 {
		t.Fatalf("%d stored frames after 3, want 1", len(hr.Frames))
	}
	sd, err := alice.fv.VerifyStored([]byte(hr.Frames[0]), "rooms.h")
	must(t, err)
	var db protocol.DeliverBody
	must(t, protocol.DecodeBody(sd.Message.Body, &db))
	if sd.Position.Offset != 4 || db.LogIndex == nil || *db.LogIndex != pi {
		t.Fatalf("stored frame at %v carries log_index %v, want offset 4 and %d", sd.Position, db.LogIndex, pi)
	}
	waitCheckpoint(t, l.Source(), v, pi+1)
	p, err := audit.Prove(context.Background(), l.Source(), v, pi)
	must(t, err)
	ent, _, err := p.Check(v)
	must(t, err)
	if ent.Frame != db.Frame || ent.Pos != nil {
		t.Fatalf("entry %d: %+v, want the stored frame's sender frame and no pos", pi, ent)
	}
}
