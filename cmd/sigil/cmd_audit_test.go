package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// acked is a pub whose reply carried a log index.
type acked struct {
	index uint64
	frame string
}

// publishLoop publishes on r's connection until it breaks or stop is
// closed, and records each pub the server acknowledged with a log index.
func publishLoop(r *rawSession, stop <-chan struct{}, mu *sync.Mutex, got *[]acked) {
	for i := 0; ; i++ {
		select {
		case <-stop:
			return
		default:
		}
		fr, err := r.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.load", Corr: strconv.Itoa(i), Body: json.RawMessage(`{"n":` + strconv.Itoa(i) + `}`)})
		if err != nil || r.ws.WriteMessage(websocket.TextMessage, fr) != nil {
			return
		}
		for {
			_ = r.ws.SetReadDeadline(time.Now().Add(30 * time.Second))
			_, data, err := r.ws.ReadMessage()
			if err != nil {
				return
			}
			m, err := r.fv.Verify(data)
			if err != nil || m.Action == protocol.ActError {
				return
			}
			if m.Action != protocol.ActReply || m.Corr != strconv.Itoa(i) {
				continue
			}
			var b struct {
				LogIndex *uint64 `json:"log_index"`
			}
			if json.Unmarshal(m.Body, &b) != nil || b.LogIndex == nil {
				return
			}
			mu.Lock()
			*got = append(*got, acked{*b.LogIndex, string(fr)})
			mu.Unlock()
			break
		}
	}
}

// waitLogSize polls the served checkpoint until it covers n entries.
func waitLogSize(t *testing.T, url string, v interface {
	Name() string
	KeyHash() uint32
	Verify(msg, sig []byte) bool
}, n uint64) {
	t.Helper()
	sigiltest.Eventually(t, fmt.Sprintf("the log to reach %d entries", n), func() bool {
		st, body := get(t, url+"/v1/audit/checkpoint")
		if st != 200 {
			return false
		}
		cp, err := audit.ParseCheckpoint([]byte(body), v)
		return err == nil && cp.Size >= n
	})
}

// SIGKILL under load with --audit=sync: after a restart the log verifies,
// and every pub whose reply carried an index is in it at that index. With
// each store; the restart is on the default, the tlog store, which so
// continues a log Tessera left with acknowledged entries its timed
// checkpoint did not cover. Then the offline tools: prove, check-proof,
// export and verify of the export.
func TestAuditCrash(t *testing.T) {
	for _, store := range []string{"tlog", "tessera"} {
		t.Run(store, func(t *testing.T) { auditCrash(t, store) })
	}
}

func auditCrash(t *testing.T, store string) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.json")
	// bcrypt at its minimum cost: logins are not under test here.
	doc, _ := json.Marshal(server.UsersDoc{Users: []server.User{
		{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		{Name: "bob", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
	}})
	must(t, os.WriteFile(users, doc, 0o600))
	logDir := filepath.Join(dir, "log")
	args := []string{"--addr", "127.0.0.1:0", "--data-dir", dir, "--audit-dir", logDir, "--audit-checkpoint", "100ms", "--audit-public"}
	url, _, cmd := startServe(t, append(args, "--audit-store", store)...)
	ws := "ws" + strings.TrimPrefix(url, "http") + "/v1/ws"
	var mu sync.Mutex
	var got []acked
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var sessions []*rawSession
	for _, u := range []string{"alice", "bob"} {
		r := newRawSession(t, url, u, sigiltest.Password)
		r.connect(t, ws)
		sessions = append(sessions, r)
	}
	for _, r := range sessions {
		wg.Add(1)
		go func() { defer wg.Done(); publishLoop(r, stop, &mu, &got) }()
	}
	// Kill once a good number of pubs are acknowledged, while the
	// others are in flight.
	sigiltest.Eventually(t, "100 pubs acknowledged", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(got) >= 100
	})
	must(t, cmd.Process.Kill())
	_ = cmd.Wait()
	close(stop)
	wg.Wait()

	v, _, err := readVKey(logDir + ".key")
	must(t, err)
	url, _, _ = startServe(t, args...)
	var top uint64
	for _, a := range got {
		top = max(top, a.index)
	}
	waitLogSize(t, url, v, top+1)
	out, err := sigil(t, "", "audit", "verify", "--vkey", logDir+".key", logDir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "  OK") {
		t.Fatalf("audit verify after the crash: %v\n%s", err, out)
	}
	frames := map[uint64]string{}
	rep, err := audit.Verify(context.Background(), audit.DirSource(logDir), audit.VerifyOptions{Verifier: v,
		Visit: func(i uint64, _ []byte, e *audit.Entry, _ *protocol.Evidence) {
			if e.Kind == audit.KindFrame {
				frames[i] = e.Frame
			}
		}})
	must(t, err)
	if !rep.OK() {
		t.Fatalf("problems: %v", rep.Problems)
	}
	for _, a := range got {
		if frames[a.index] != a.frame {
			t.Fatalf("acknowledged pub at %d is not in the log", a.index)
		}
	}
	t.Logf("%d pubs acknowledged before SIGKILL, log of %d entries verifies", len(got), rep.Size)
	if store != "tlog" {
		return
	}

	// The offline tools, over HTTP and on the directory.
	proofFile := filepath.Join(dir, "proof.json")
	out, err = sigil(t, "", "audit", "prove", "--vkey", logDir+".key", "--index", strconv.FormatUint(got[0].index, 10), url).Output()
	must(t, err)
	must(t, os.WriteFile(proofFile, out, 0o644))
	out, err = sigil(t, "", "audit", "check-proof", "--vkey", logDir+".key", proofFile).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "OK entry "+strconv.FormatUint(got[0].index, 10)) {
		t.Fatalf("check-proof: %v\n%s", err, out)
	}
	env, _ := protocol.UnsafeEnvelope([]byte(got[1].frame))
	out, err = sigil(t, "", "audit", "prove", "--vkey", logDir+".key", "--id", env.ID, logDir).Output()
	must(t, err)
	var p audit.Proof
	if err := json.Unmarshal(out, &p); err != nil || p.Index != got[1].index {
		t.Fatalf("prove --id: %v %s", err, out)
	}
	bundle := filepath.Join(dir, "export.jsonl")
	if out, err := sigil(t, "", "audit", "export", "--vkey", logDir+".key", "--from", "10", "--to", "20", "--out", bundle, logDir).CombinedOutput(); err != nil {
		t.Fatalf("export: %v\n%s", err, out)
	}
	out, err = sigil(t, "", "audit", "verify", "--vkey", logDir+".key", bundle).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "  OK") {
		t.Fatalf("verify the export: %v\n%s", err, out)
	}
	// An edited proof fails.
	data, _ := os.ReadFile(proofFile)
	must(t, os.WriteFile(proofFile, []byte(strings.Replace(string(data), `"index": `+strconv.FormatUint(got[0].index, 10), `"index": `+strconv.FormatUint(got[0].index+1, 10), 1)), 0o644))
	if out, err := sigil(t, "", "audit", "check-proof", "--vkey", logDir+".key", proofFile).CombinedOutput(); err == nil {
		t.Fatalf("an edited proof checked: %s", out)
	}
}

// TestListenLogIndex: with a synchronous audit log, listen --json records
// each message's log index (from the server-signed delivery), and the
// entry at that index is the message.
func TestListenLogIndex(t *testing.T) {
	dir := t.TempDir()
	logDir := filepath.Join(dir, "log")
	signer, v, err := audit.LoadOrCreateKey(logDir+".key", audit.Origin("sigil", ""), logDir)
	must(t, err)
	l, err := audit.Open(context.Background(), audit.Config{Dir: logDir, Signer: signer, CheckpointInterval: 100 * time.Millisecond})
	must(t, err)
	t.Cleanup(func() { _ = l.Close(context.Background()) })
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: &server.UsersDoc{Users: []server.User{
			{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
			{Name: "bob", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		}}},
		Logger: sigiltest.QuietLogger(),
		Audit:  server.AuditConfig{Log: l, Verifier: v},
	})
	must(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); hs.Close() })
	aliceFile, bobFile := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json")
	for user, f := range map[string]string{"alice": aliceFile, "bob": bobFile} {
		var out, errb bytes.Buffer
		if code := run([]string{"login", "--server", hs.URL, "--user", user, "--credentials", f}, strings.NewReader(sigiltest.Password+"\n"), &out, &errb); code != 0 {
			t.Fatalf("login %s: %d %s", user, code, errb.String())
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var lout sigiltest.SyncBuffer
	lerr := make(chan error, 1)
	go func() { lerr <- runListen(ctx, []string{"--json", "--credentials", bobFile, "rooms.logged"}, &lout) }()
	// Send until listen is subscribed and prints one.
	sigiltest.Eventually(t, "listen to print a message", func() bool {
		if strings.Contains(lout.String(), "\n") {
			return true
		}
		var so, se bytes.Buffer
		if code := run([]string{"send", "--credentials", aliceFile, "rooms.logged", "on the record"}, nil, &so, &se); code != 0 {
			t.Fatalf("send: %d %s", code, se.String())
		}
		return false
	}, func() string { return "listen output: " + lout.String() })
	cancel()
	must(t, <-lerr)
	line, _, _ := strings.Cut(lout.String(), "\n")
	var rec listenJSON
	must(t, json.Unmarshal([]byte(line), &rec))
	if rec.LogIndex == nil {
		t.Fatalf("no log_index in %s", line)
	}
	var p *audit.Proof
	sigiltest.Eventually(t, "a checkpoint covering the entry", func() bool {
		p, err = audit.Prove(context.Background(), l.Source(), v, *rec.LogIndex)
		return !errors.Is(err, audit.ErrNotPublished)
	})
	must(t, err)
	e, _, err := p.Check(v)
	must(t, err)
	env, err := protocol.UnsafeEnvelope([]byte(e.Frame))
	must(t, err)
	if e.Kind != audit.KindFrame || env.ID != rec.ID || env.Subject != "alice" {
		t.Fatalf("entry %d is %s %s from %s, want message %s", *rec.LogIndex, e.Kind, env.ID, env.Subject, rec.ID)
	}
}
