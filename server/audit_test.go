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

// A synchronous audit log: the reply to pub and dm carries the entry's
// index; the log then verifies as a whole, with the server's keys, both
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
	bob.recvAct(protocol.ActDeliver)
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Corr: "d", Body: json.RawMessage(`{"text":"psst"}`)})
	di, ok := replyIndex(t, alice.recvAct(protocol.ActReply))
	if !ok || di <= pi {
		t.Fatalf("dm log_index %d (ok %v), pub's %d", di, ok, pi)
	}
	bob.recvAct(protocol.ActDirect)
	must(t, e.srv.Publish(context.Background(), "rooms.a", map[string]string{"text": "from the server"}))
	bob.recvAct(protocol.ActDeliver)
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
	alice := e.login("alice").connect()
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Corr: "p", Body: json.RawMessage(`{"text":"hi"}`)})
	if _, ok := replyIndex(t, alice.recvAct(protocol.ActReply)); ok {
		t.Fatal("an async reply carries a log_index")
	}
	waitCheckpoint(t, l.Source(), v, 3)
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
