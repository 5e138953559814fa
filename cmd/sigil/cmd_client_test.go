package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

// TestLoginSendListen runs the client commands against an in-process
// server: login stores 0600 credentials, listen prints verified messages,
// send publishes them, and one stored login serves every later command.
func TestLoginSendListen(t *testing.T) {
	url := testServer(t)
	dir := t.TempDir()
	aliceFile, bobFile := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json")

	var out, errb bytes.Buffer
	if code := run([]string{"login", "--server", url, "--user", "alice", "--credentials", aliceFile}, strings.NewReader("pw\n"), &out, &errb); code != 0 {
		t.Fatalf("login: %d %s", code, errb.String())
	}
	if code := run([]string{"login", "--server", url, "--user", "bob", "--credentials", bobFile, "--alg", "ES256"}, strings.NewReader("pw\n"), &out, &errb); code != 0 {
		t.Fatalf("login: %d %s", code, errb.String())
	}
	if code := run([]string{"login", "--server", url, "--user", "bob", "--credentials", filepath.Join(dir, "x")}, strings.NewReader("wrong\n"), &out, &errb); code != 1 || !strings.Contains(errb.String(), "invalid_grant") {
		t.Fatalf("bad password: %d %s", code, errb.String())
	}
	for _, f := range []string{aliceFile, bobFile} {
		st, err := os.Stat(f)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s mode %v", f, st.Mode().Perm())
		}
	}

	ctx, cancel := context.WithCancel(context.Background())
	var lout sigiltest.SyncBuffer
	lerr := make(chan error, 1)
	go func() { lerr <- runListen(ctx, []string{"--json", "--credentials", aliceFile, "rooms.cli"}, &lout) }()

	send := func(args ...string) {
		t.Helper()
		var so, se bytes.Buffer
		in := ""
		if args[0] == "--stdin" {
			in, args = args[1], args[2:]
		}
		if code := run(append([]string{"send", "--credentials", bobFile}, args...), strings.NewReader(in), &so, &se); code != 0 {
			t.Fatalf("send %v: %d %s", args, code, se.String())
		}
	}
	// Wait for listen to subscribe: send until a message comes through.
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(lout.String(), "ping") {
		if time.Now().After(deadline) {
			t.Fatalf("listen printed nothing: %q", lout.String())
		}
		send("rooms.cli", "ping")
		time.Sleep(100 * time.Millisecond)
	}
	send("--stdin", "line one\n\nline two\n", "--stdin", "rooms.cli")
	deadline = time.Now().Add(5 * time.Second)
	for !strings.Contains(lout.String(), "line two") {
		if time.Now().After(deadline) {
			t.Fatalf("listen output: %q", lout.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if err := <-lerr; err != nil {
		t.Fatal(err)
	}
	var texts []string
	for _, line := range strings.Split(strings.TrimSpace(lout.String()), "\n") {
		var rec listenJSON
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("%q: %v", line, err)
		}
		if rec.From != "bob" || !rec.Verified || rec.Channel != "rooms.cli" || rec.ID == "" {
			t.Fatalf("record %+v", rec)
		}
		var b struct{ Text string }
		_ = json.Unmarshal(rec.Body, &b)
		texts = append(texts, b.Text)
	}
	if n := len(texts); n < 3 || texts[n-2] != "line one" || texts[n-1] != "line two" {
		t.Fatalf("texts %v", texts)
	}
	checkVerifyArchive(t, url, lout.String(), len(texts))
	// The stored logins keep working in later commands.
	send("rooms.cli", "again")
	var lout2 bytes.Buffer
	if err := runSendThenListenOnce(t, url, aliceFile, &lout2); err != nil {
		t.Fatal(err)
	}
}

// runSendThenListenOnce checks that alice's stored session, used by listen
// above, can still publish.
func runSendThenListenOnce(t *testing.T, _ string, file string, _ *bytes.Buffer) error {
	var so, se bytes.Buffer
	if code := run([]string{"send", "--credentials", file, "rooms.cli", "from alice"}, nil, &so, &se); code != 0 {
		t.Fatalf("send as alice after listen: %s", se.String())
	}
	return nil
}

// checkVerifyArchive runs `sigil verify` on what listen --json archived:
// every record verifies offline against the server's JWKS, and a record
// with one character changed in its evidence fails.
func checkVerifyArchive(t *testing.T, url, archive string, n int) {
	t.Helper()
	dir := t.TempDir()
	file := filepath.Join(dir, "archive.jsonl")
	must(t, os.WriteFile(file, []byte(archive), 0o600))
	var out, errb bytes.Buffer
	if code := run([]string{"verify", "--jwks", url, file}, nil, &out, &errb); code != 0 {
		t.Fatalf("verify: %d %s %s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("%d verified, 0 failed", n)) || !strings.Contains(out.String(), "bob signed pub rooms.cli") {
		t.Fatalf("verify output: %s", out.String())
	}
	// --json, with the JWKS from a file this time.
	resp, err := http.Get(url + "/.well-known/jwks.json")
	must(t, err)
	jwks, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	jwksFile := filepath.Join(dir, "jwks.json")
	must(t, os.WriteFile(jwksFile, jwks, 0o600))
	out.Reset()
	if code := run([]string{"verify", "--jwks", jwksFile, "--json"}, strings.NewReader(archive), &out, &errb); code != 0 {
		t.Fatalf("verify --json: %s", errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	var rec verifyJSON
	must(t, json.Unmarshal([]byte(lines[len(lines)-1]), &rec))
	if len(lines) != n || rec.From != "bob" || rec.Action != "pub" || rec.Channel != "rooms.cli" || !strings.Contains(string(rec.Body), "line two") {
		t.Fatalf("verify --json: %s", out.String())
	}
	// One changed character in the last record's evidence: that line fails.
	recs := strings.Split(strings.TrimSpace(archive), "\n")
	last := recs[len(recs)-1]
	i := strings.LastIndex(last, ".") + 5
	c := byte('A')
	if last[i] == 'A' {
		c = 'B'
	}
	recs[len(recs)-1] = last[:i] + string(c) + last[i+1:]
	out.Reset()
	if code := run([]string{"verify", "--jwks", jwksFile}, strings.NewReader(strings.Join(recs, "\n")), &out, &errb); code != 1 {
		t.Fatalf("tampered archive: exit %d %s", code, out.String())
	}
	if !strings.Contains(out.String(), fmt.Sprintf("FAIL line %d: bad_signature", n)) || !strings.Contains(out.String(), fmt.Sprintf("%d verified, 1 failed", n-1)) {
		t.Fatalf("tampered archive: %s", out.String())
	}
	// The evidence intact, but the record's plain body, sender or channel
	// edited: the line fails, and the edited text is never printed as ok.
	for _, edit := range [][2]string{
		{`"text":"line two"`, `"text":"line 2, edited"`},
		{`"from":"bob"`, `"from":"alice"`},
		{`"channel":"rooms.cli"`, `"channel":"rooms.other"`},
	} {
		recs := strings.Split(strings.TrimSpace(archive), "\n")
		if !strings.Contains(recs[n-1], edit[0]) {
			t.Fatalf("last record %s lacks %s", recs[n-1], edit[0])
		}
		recs[n-1] = strings.Replace(recs[n-1], edit[0], edit[1], 1)
		out.Reset()
		if code := run([]string{"verify", "--jwks", jwksFile}, strings.NewReader(strings.Join(recs, "\n")), &out, &errb); code != 1 {
			t.Fatalf("edited record (%s): exit %d %s", edit[1], code, out.String())
		}
		field := strings.Trim(strings.SplitN(edit[0], ":", 2)[0], `"`)
		if field == "text" {
			field = "body"
		}
		if !strings.Contains(out.String(), fmt.Sprintf("FAIL line %d: the record's %s differs from the signed evidence", n, field)) ||
			strings.Contains(out.String(), "edited") || !strings.Contains(out.String(), fmt.Sprintf("%d verified, 1 failed", n-1)) {
			t.Fatalf("edited record (%s): %s", edit[1], out.String())
		}
	}
}

// TestVerifyClientFrame: `sigil verify --token --key` checks a client frame
// against its session token and key, offline.
func TestVerifyClientFrame(t *testing.T) {
	dir := t.TempDir()
	srvKey, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	keys, _ := protocol.NewKeySet(srvKey.Public())
	jwks, _ := json.Marshal(keys)
	sess, _ := protocol.GenerateKey(protocol.ES256, nil)
	iss := &protocol.TokenIssuer{Key: srvKey, Issuer: "sigil", Audience: "sigil.v1", TTL: time.Minute}
	tok, claims, err := iss.Issue(protocol.IssueRequest{Subject: "carol", Roles: []string{"user"}, JKT: sess.Public().Thumbprint()})
	must(t, err)
	jwk, _ := sess.Public().MarshalJSON()
	frame, err := (&protocol.ClientSigner{Key: sess, Session: claims.Session, Subject: "carol"}).Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.x", Body: json.RawMessage(`{"text":"signed by carol"}`)})
	must(t, err)
	for name, data := range map[string][]byte{"jwks.json": jwks, "token": []byte(tok + "\n"), "key.json": jwk, "frame": frame} {
		must(t, os.WriteFile(filepath.Join(dir, name), data, 0o600))
	}
	var out, errb bytes.Buffer
	args := []string{"verify", "--jwks", filepath.Join(dir, "jwks.json"), "--token", filepath.Join(dir, "token"), "--key", filepath.Join(dir, "key.json")}
	if code := run(append(args, filepath.Join(dir, "frame")), nil, &out, &errb); code != 0 {
		t.Fatalf("verify: %s %s", out.String(), errb.String())
	}
	if !strings.Contains(out.String(), `carol signed pub rooms.x`) || !strings.Contains(out.String(), `signed by carol`) {
		t.Fatalf("verify: %s", out.String())
	}
	// Another session's key: key_mismatch.
	other, _ := protocol.GenerateKey(protocol.ES256, nil)
	ojwk, _ := other.Public().MarshalJSON()
	must(t, os.WriteFile(filepath.Join(dir, "key.json"), ojwk, 0o600))
	out.Reset()
	if code := run(append(args, filepath.Join(dir, "frame")), nil, &out, &errb); code != 1 || !strings.Contains(out.String(), "FAIL line 1: key_mismatch") {
		t.Fatalf("other key: %d %s", code, out.String())
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
