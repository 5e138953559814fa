package client_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/server"
	"golang.org/x/mod/sumdb/note"
)

// auditServer is an env whose server keeps a synchronous audit log.
func auditServer(t *testing.T) (*env, note.Verifier) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "log")
	signer, v, err := audit.LoadOrCreateKey(dir+".key", audit.Origin("sigil", ""), dir)
	must(t, err)
	l, err := audit.Open(context.Background(), audit.Config{Dir: dir, Signer: signer, CheckpointInterval: 100 * time.Millisecond})
	must(t, err)
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	e := newEnv(t, func(c *server.Config) { c.Audit = server.AuditConfig{Log: l, Verifier: v, Public: true} })
	return e, v
}

// A message's log index, from the reply and from the recipient's
// delivery (Message.LogIndex), is proved by the server and the proof
// checks against the pinned checkpoint key; the proved entry is the frame
// the recipient received, byte for byte.
func TestProve(t *testing.T) {
	e, v := auditServer(t)
	alice, bob := e.dial("alice", nil), e.dial("bob", nil)
	sub, err := bob.Subscribe(ctxT(t), "rooms.a")
	must(t, err)
	idx, err := alice.PublishLogged(ctxT(t), "rooms.a", map[string]string{"text": "on the record"})
	must(t, err)
	got := next(t, sub)
	if li, ok := got.LogIndex(); !ok || li != idx {
		t.Fatalf("the delivery's log index %d (%v), the reply's %d", li, ok, idx)
	}
	_, entry, err := bob.Prove(ctxT(t), idx, v)
	must(t, err)
	if entry.Kind != audit.KindFrame || entry.Frame != string(got.Frame) {
		t.Fatalf("entry %d: %+v, want the frame bob received", idx, entry)
	}
	inbox := bob.Inbox()
	di, err := alice.SendLogged(ctxT(t), "bob", map[string]string{"text": "direct"})
	must(t, err)
	if di <= idx {
		t.Fatalf("dm index %d after pub index %d", di, idx)
	}
	dm := next(t, inbox)
	if li, ok := dm.LogIndex(); !ok || li != di {
		t.Fatalf("the direct delivery's log index %d (%v), the reply's %d", li, ok, di)
	}
	if _, entry, err := bob.Prove(ctxT(t), di, v); err != nil || entry.Frame != string(dm.Frame) {
		t.Fatalf("dm entry %d: %v %+v", di, err, entry)
	}
	// Under another key the proof does not check.
	_, other, _ := audit.GenerateKey(v.Name())
	ov, _ := note.NewVerifier(other)
	if _, _, err := alice.Prove(ctxT(t), idx, ov); err == nil {
		t.Fatal("the proof checked under another key")
	}
	// An index beyond the log is never proved: Prove gives up with ctx.
	ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
	defer cancel()
	if _, _, err := alice.Prove(ctx, 1<<40, v); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("an index beyond the log: %v", err)
	}
}

// Without an audit log, the reply carries no index.
func TestPublishLoggedWithoutLog(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	if _, err := alice.PublishLogged(ctxT(t), "rooms.a", "x"); !errors.Is(err, client.ErrNotLogged) {
		t.Fatalf("PublishLogged: %v", err)
	}
}
