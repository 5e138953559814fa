package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// TestServeRefusesBadSettings: values that cannot work are refused before
// the server listens, and each error names its setting and, for JSON, the
// line and column.
func TestServeRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	write := func(name, text string) string {
		p := filepath.Join(dir, name)
		must(t, os.WriteFile(p, []byte(text), 0o600))
		return p
	}
	badPolicy := write("policy.json", "{\"rules\": [\n  {\"action\": \"pub\", \"roles\": [\"user\"]},\n  {\"action\": \"sub\" \"roles\": []}\n]}\n")
	badUsers := write("users.json", "{\"users\": [\n  {\"name\": \"a\", \"name\": \"b\"}]}\n")
	badConfig := write("config.json", "{\n  \"token-ttl\": \"1m\",\n  \"token-ttl\": \"2m\"\n}\n")
	badKey := write("key.jwk", "{\"kty\": \"OKP\"}\n")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--token-ttl", "0"}, "--token-ttl 0s: must be more than zero"},
		{[]string{"--refresh-ttl", "-1h"}, "--refresh-ttl -1h0m0s: must be more than zero"},
		{[]string{"--read-timeout", "0s"}, "--read-timeout 0s: must be more than zero"},
		{[]string{"--max-frame", "512"}, "--max-frame 512: must be between 8192"},
		{[]string{"--max-refresh-families", "0"}, "--max-refresh-families 0: must be at least 1"},
		{[]string{"--log-format", "yaml"}, `--log-format "yaml": want text or json`},
		{[]string{"--origins", "chat.example"}, `--origins: "chat.example" is not an origin`},
		{[]string{"--origins", "https://ok.example,https://x.example/path"}, `"https://x.example/path" is not an origin`},
		{[]string{"--policy", filepath.Join(dir, "none.json")}, "--policy " + filepath.Join(dir, "none.json") + ": no such file"},
		{[]string{"--policy", badPolicy}, "--policy " + badPolicy + ":3:20: "},
		{[]string{"--users", filepath.Join(dir, "none.json")}, "--users " + filepath.Join(dir, "none.json") + ": no such file"},
		{[]string{"--users", badUsers}, "--users " + badUsers + ":2:"},
		{[]string{"--config", badConfig}, "--config " + badConfig + ":3:"},
		{[]string{"--key-files", badKey}, "--key-files " + badKey + ": "},
		{[]string{"--audit-dir", filepath.Join(dir, "audit"), "--audit-store", "sql"}, "--audit-store must be tlog or tessera"},
	} {
		args := append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", filepath.Join(dir, "data")}, c.args...)
		out, err := sigilExit(t, args...)
		if err == nil || !strings.Contains(out, c.want) || strings.Contains(out, "SIGIL_READY") {
			t.Errorf("serve %v: %v\n%s\nwant %q", c.args, err, out, c.want)
		}
	}
}

// TestFileErrorsNameTheSetting: the other commands' file errors name
// their flag too.
func TestFileErrorsNameTheSetting(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.json")
	must(t, os.WriteFile(bad, []byte("{\"users\": [\n  {\"name\": \"a\",, }]}"), 0o600))
	none := filepath.Join(dir, "none")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"user", "remove", "--users", none, "bob"}, "--users " + none + ": no such file"},
		{[]string{"user", "passwd", "--users", bad, "bob"}, "--users " + bad + ":2:16: "},
		{[]string{"verify", "--jwks", none, bad}, "--jwks " + none + ": no such file"},
		{[]string{"verify", "--jwks", bad, bad}, "--jwks " + bad + ":2:16: "},
		{[]string{"send", "--credentials", none, "rooms.x", "hi"}, "--credentials " + none + ": no such file: run `sigil login` first"},
	} {
		var so, se strings.Builder
		if code := run(c.args, strings.NewReader("long enough\n"), &so, &se); code == 0 || !strings.Contains(se.String(), c.want) {
			t.Errorf("sigil %v: exit %d %q, want %q", c.args, code, se.String(), c.want)
		}
	}
}

// serveWarnings starts serve, returns what it printed until it was
// ready, and stops it.
func serveWarnings(t *testing.T, args ...string) string {
	t.Helper()
	cmd := sigil(t, "", append([]string{"serve", "--addr", "127.0.0.1:0"}, args...)...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	must(t, cmd.Start())
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait(); pw.Close() })
	var out strings.Builder
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		out.WriteString(sc.Text() + "\n")
		if strings.HasPrefix(sc.Text(), "SIGIL_READY") {
			go func() { _, _ = io.Copy(io.Discard, pr) }()
			return out.String()
		}
	}
	t.Fatalf("serve did not start:\n%s", out.String())
	return ""
}

// TestServeWarnings: serve starts, but says what is probably wrong: a
// signing key others can read, a policy action or role that nothing
// matches, and no users file (nobody can log in).
func TestServeWarnings(t *testing.T) {
	dir := t.TempDir()
	key := filepath.Join(dir, "key.jwk")
	var so, se strings.Builder
	if code := run([]string{"keygen", "--out", key}, nil, &so, &se); code != 0 {
		t.Fatal(se.String())
	}
	must(t, os.Chmod(key, 0o644))
	users := filepath.Join(dir, "users.json")
	if code := run([]string{"user", "add", "--users", users, "alice"}, strings.NewReader("long enough\n"), &so, &se); code != 0 {
		t.Fatal(se.String())
	}
	policy := filepath.Join(dir, "policy.json")
	must(t, os.WriteFile(policy, []byte(`{"rules": [{"action": "pubb", "roles": ["user"]}, {"action": "sub", "roles": ["editor"]}, {"action": "orders.quote", "roles": ["user"]}]}`), 0o600))
	out := serveWarnings(t, "--key-files", key, "--users", users, "--policy", policy, "--refresh-ttl", "1m")
	for _, w := range []string{
		"--refresh-ttl 1m0s is shorter than --token-ttl 15m0s: no session can refresh",
		"signing key " + key + " is readable by others (mode -rw-r--r--)",
		`action \"pubb\" is not a built-in action`,
		`role \"editor\" is held by no user`,
	} {
		if !strings.Contains(out, w) {
			t.Errorf("serve output lacks %q:\n%s", w, out)
		}
	}
	if strings.Contains(out, "orders.quote") || strings.Contains(out, "nobody can log in") {
		t.Errorf("serve warned about an application action or about users:\n%s", out)
	}
	out = serveWarnings(t, "--data-dir", filepath.Join(dir, "empty"))
	if !strings.Contains(out, "nobody can log in") || !strings.Contains(out, "sigil user add") {
		t.Errorf("serve without users:\n%s", out)
	}
}

// TestLoginAgainHints: a login that has expired, was revoked, or was
// written by an older sigil says to run `sigil login` again.
func TestLoginAgainHints(t *testing.T) {
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: &server.UsersDoc{Users: []server.User{
			{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		}}},
		Logger: sigiltest.QuietLogger(),
	})
	must(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); hs.Close() })
	creds := filepath.Join(t.TempDir(), "credentials.json")
	var so, se strings.Builder
	if code := run([]string{"login", "--server", hs.URL, "--user", "alice", "--credentials", creds}, strings.NewReader("pw\n"), &so, &se); code != 0 {
		t.Fatal(se.String())
	}
	send := func() string {
		var so, se strings.Builder
		if code := run([]string{"send", "--credentials", creds, "rooms.x", "hi"}, nil, &so, &se); code == 0 {
			return ""
		}
		return se.String()
	}
	if e := send(); e != "" {
		t.Fatalf("send: %s", e)
	}
	const hint = "run `sigil login` again"
	// Expired: the file says so, before any request.
	data, err := os.ReadFile(creds)
	must(t, err)
	var cr map[string]any
	must(t, json.Unmarshal(data, &cr))
	cr["expires_at"] = time.Now().Add(-time.Minute).UnixMilli()
	old, _ := json.Marshal(cr)
	must(t, os.WriteFile(creds, old, 0o600))
	if e := send(); !strings.Contains(e, "expired") || !strings.Contains(e, hint) {
		t.Fatalf("expired login: %q", e)
	}
	// Written by an older sigil (a session's refresh token, no login).
	must(t, os.WriteFile(creds, []byte(`{"server":"ws://x/v1/ws","sid":"s","sub":"alice","roles":[],"key":{},"refresh_token":"r","seq":3}`), 0o600))
	if e := send(); !strings.Contains(e, hint) {
		t.Fatalf("old credentials: %q", e)
	}
	// Revoked by an administrator.
	must(t, os.WriteFile(creds, data, 0o600))
	if _, err := srv.RevokeSubject(context.Background(), "alice"); err != nil {
		t.Fatal(err)
	}
	if e := send(); !strings.Contains(e, "invalid_grant") || !strings.Contains(e, hint) {
		t.Fatalf("revoked login: %q", e)
	}
}
