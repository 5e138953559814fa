package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// TestListenSince: listen --since saves the position of each message it
// prints; a later listen with the same file prints exactly the messages
// published in between, then the live ones.
func TestListenSince(t *testing.T) {
	url := testServer(t)
	dir := t.TempDir()
	aliceFile, bobFile, posFile := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json"), filepath.Join(dir, "pos.json")
	var out, errb bytes.Buffer
	for user, f := range map[string]string{"alice": aliceFile, "bob": bobFile} {
		if code := run([]string{"login", "--server", url, "--user", user, "--credentials", f}, strings.NewReader("pw\n"), &out, &errb); code != 0 {
			t.Fatalf("login %s: %d %s", user, code, errb.String())
		}
	}
	send := func(text string) {
		t.Helper()
		var so, se bytes.Buffer
		if code := run([]string{"send", "--credentials", bobFile, "rooms.since", text}, nil, &so, &se); code != 0 {
			t.Fatalf("send: %d %s", code, se.String())
		}
	}
	texts := func(s string) []string {
		var out []string
		for _, line := range strings.Split(strings.TrimSpace(s), "\n") {
			var rec listenJSON
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			if rec.Position == nil {
				t.Fatalf("record without a position: %s", line)
			}
			var b struct{ Text string }
			_ = json.Unmarshal(rec.Body, &b)
			out = append(out, b.Text)
		}
		return out
	}
	listen := func(until string, during func()) []string {
		t.Helper()
		ctx, cancel := context.WithCancel(context.Background())
		var lout sigiltest.SyncBuffer
		lerr := make(chan error, 1)
		go func() {
			lerr <- runListen(ctx, []string{"--json", "--since", posFile, "--credentials", aliceFile, "rooms.since"}, &lout)
		}()
		during()
		sigiltest.Eventually(t, "listen to print "+until, func() bool { return strings.Contains(lout.String(), `"`+until+`"`) },
			func() string { return "listen output: " + lout.String() })
		cancel()
		if err := <-lerr; err != nil {
			t.Fatal(err)
		}
		return texts(lout.String())
	}
	// First run: no position yet; wait for the subscription by sending
	// until a message comes through.
	first := listen("two", func() {
		sigiltest.Eventually(t, "a saved position", func() bool {
			if data, _ := os.ReadFile(posFile); len(data) > 0 {
				return true
			}
			send("warm-up")
			return false
		})
		send("one")
		send("two")
	})
	if n := len(first); n < 3 || first[n-2] != "one" || first[n-1] != "two" {
		t.Fatalf("first run %v", first)
	}
	send("three") // while nobody listens
	send("four")
	second := listen("five", func() { send("five") })
	if strings.Join(second, ",") != "three,four,five" {
		t.Fatalf("second run %v", second)
	}
	if st, err := os.Stat(posFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("position file: %v %v", st, err)
	}
}
