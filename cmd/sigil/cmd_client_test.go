package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestLoginSendListen runs the client commands against an in-process
// server: login stores 0600 credentials, listen prints verified messages,
// send publishes them, and stored sessions are reused across processes.
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
	var lout syncBuffer
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
	// The stored sessions keep working in later processes (rotated refresh
	// tokens and seq were saved).
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
