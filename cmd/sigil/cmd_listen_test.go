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
	_, aliceFile, bobSend := aliceAndBob(t)
	posFile := filepath.Join(t.TempDir(), "pos.json")
	send := func(text string) { t.Helper(); bobSend("rooms.since", text) }
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

// TestListenInbox: listen @ prints the user's direct messages with the
// channel's --json evidence, and with --since a later run prints exactly
// the ones sent while it was down, in order, once, then the live ones;
// the records verify offline with sigil verify. A position the server
// can no longer resume from is reported on stderr, and listening goes on.
func TestListenInbox(t *testing.T) {
	url, aliceFile, bobSend := aliceAndBob(t)
	posFile := filepath.Join(t.TempDir(), "inbox.pos")
	// bob's dms go through "sigil send @alice".
	dm := func(text string) { t.Helper(); bobSend("@alice", text) }
	type record struct {
		text string
		off  uint64
	}
	// run listens as alice until it printed until; send runs once the
	// listener is ready (its inbox open).
	listenRun := func(until string, send func()) (recs []record, lines, stderr string) {
		t.Helper()
		lctx, stop := context.WithCancel(context.Background())
		var lout, lerrb sigiltest.SyncBuffer
		lerr := make(chan error, 1)
		go func() {
			lerr <- listen(lctx, []string{"--json", "--since", posFile, "--credentials", aliceFile, "@"}, &lout, &lerrb)
		}()
		sigiltest.Eventually(t, "listen to be ready", func() bool { return strings.Contains(lerrb.String(), "listening") },
			func() string { return "listen stderr: " + lerrb.String() })
		send()
		sigiltest.Eventually(t, "listen to print "+until, func() bool { return strings.Contains(lout.String(), `"`+until+`"`) },
			func() string { return "listen output: " + lout.String() + "\nstderr: " + lerrb.String() })
		stop()
		if err := <-lerr; err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(strings.TrimSpace(lout.String()), "\n") {
			var rec listenJSON
			if err := json.Unmarshal([]byte(line), &rec); err != nil {
				t.Fatalf("%q: %v", line, err)
			}
			var b struct{ Text string }
			_ = json.Unmarshal(rec.Body, &b)
			if rec.Position == nil || rec.To != "alice" || rec.From != "bob" || rec.Channel != "" || !rec.Verified {
				t.Fatalf("record: %s", line)
			}
			recs = append(recs, record{b.Text, rec.Position.Offset})
		}
		return recs, lout.String(), lerrb.String()
	}
	texts := func(recs []record) string {
		var s []string
		for i, r := range recs {
			if i > 0 && r.off != recs[i-1].off+1 {
				t.Fatalf("offsets not consecutive: %v", recs)
			}
			s = append(s, r.text)
		}
		return strings.Join(s, ",")
	}

	first, _, _ := listenRun("two", func() { dm("one"); dm("two") })
	if got := texts(first); got != "one,two" {
		t.Fatalf("first run %q", got)
	}
	dm("three") // while alice does not listen: kept in her inbox
	dm("four")
	second, lines, stderr := listenRun("five", func() { dm("five") })
	if got := texts(second); got != "three,four,five" || second[0].off != first[1].off+1 {
		t.Fatalf("second run %v after %v", second, first)
	}
	if strings.Contains(stderr, "could not be recovered") {
		t.Fatalf("a gap reported: %s", stderr)
	}
	if st, err := os.Stat(posFile); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("position file: %v %v", st, err)
	}
	var vout bytes.Buffer
	if err := runVerify(context.Background(), []string{"--jwks", url}, strings.NewReader(lines), &vout); err != nil ||
		!strings.Contains(vout.String(), "3 verified, 0 failed") || !strings.Contains(vout.String(), "dm to alice") {
		t.Fatalf("verify: %v\n%s", err, vout.String())
	}

	// A position of an epoch the server no longer has: the gap is
	// reported on stderr, then the live messages follow.
	if err := os.WriteFile(posFile, []byte(`{"epoch":"gone","offset":2}`), 0o600); err != nil {
		t.Fatal(err)
	}
	third, _, stderr := listenRun("six", func() { dm("six") })
	if got := texts(third); got != "six" || third[0].off != second[2].off+1 {
		t.Fatalf("third run %v", third)
	}
	if !strings.Contains(stderr, "your direct messages: messages between gone:2 and") {
		t.Fatalf("no gap on stderr: %s", stderr)
	}
}

// aliceAndBob starts a test server and logs alice and bob in with sigil
// login: it returns the server's URL, alice's credentials file, and a
// function that runs "sigil send" as bob to a channel or @user.
func aliceAndBob(t *testing.T) (url, aliceFile string, bobSend func(to, text string)) {
	t.Helper()
	url = testServer(t)
	dir := t.TempDir()
	aliceFile, bobFile := filepath.Join(dir, "alice.json"), filepath.Join(dir, "bob.json")
	var out, errb bytes.Buffer
	for user, f := range map[string]string{"alice": aliceFile, "bob": bobFile} {
		if code := run([]string{"login", "--server", url, "--user", user, "--credentials", f}, strings.NewReader("pw\n"), &out, &errb); code != 0 {
			t.Fatalf("login %s: %d %s", user, code, errb.String())
		}
	}
	return url, aliceFile, func(to, text string) {
		t.Helper()
		var so, se bytes.Buffer
		if code := run([]string{"send", "--credentials", bobFile, to, text}, strings.NewReader(""), &so, &se); code != 0 {
			t.Fatalf("sigil send %s %q: exit %d %s", to, text, code, se.String())
		}
	}
}
