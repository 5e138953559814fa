package main

import (
	"bufio"
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

func TestMain(m *testing.M) {
	if os.Getenv("SIGIL_TEST_MAIN") == "1" {
		os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
	}
	os.Exit(m.Run())
}

// sigil runs the command in a child process (this binary).
func sigil(t *testing.T, stdin string, args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "SIGIL_TEST_MAIN=1")
	cmd.Stdin = strings.NewReader(stdin)
	return cmd
}

// sigilExit runs a command that is expected to exit, such as a serve that
// refuses its configuration; one that is still running after a generous
// limit is killed, and the test sees its output so far and an error.
func sigilExit(t *testing.T, args ...string) (string, error) {
	t.Helper()
	cmd := sigil(t, "", args...)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return out.String(), err
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return out.String(), fmt.Errorf("still running after 30s")
	}
}

// startServe starts `sigil serve` and waits for SIGIL_READY; it returns the
// URL and the lines printed before it.
func startServe(t *testing.T, args ...string) (string, []string, *exec.Cmd) {
	cmd := sigil(t, "", append([]string{"serve"}, args...)...)
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	var lines []string
	for sc.Scan() {
		line := sc.Text()
		if u, ok := strings.CutPrefix(line, "SIGIL_READY url="); ok {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return u, lines, cmd
		}
		lines = append(lines, line)
	}
	t.Fatalf("no SIGIL_READY; output: %v", lines)
	return "", nil, nil
}

func get(t *testing.T, url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func login(t *testing.T, url, user, pw string) (int, server.TokenResponse) {
	k, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	jwk, _ := k.Public().MarshalJSON()
	body, _ := json.Marshal(map[string]any{"grant_type": "password", "username": user, "password": pw, "jwk": json.RawMessage(jwk)})
	resp, err := http.Post(url+"/v1/token", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var tr server.TokenResponse
	_ = json.NewDecoder(resp.Body).Decode(&tr)
	return resp.StatusCode, tr
}

func TestServeDemo(t *testing.T) {
	url, lines, cmd := startServe(t, "--demo", "--addr", "127.0.0.1:0")
	if !strings.HasPrefix(url, "http://127.0.0.1:") {
		t.Fatal(url)
	}
	pw := map[string]string{}
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) == 2 {
			pw[f[0]] = f[1]
		}
	}
	for _, u := range []string{"alice", "bob", "carol", "admin"} {
		st, tr := login(t, url, u, pw[u])
		if st != 200 || tr.Subject != u {
			t.Fatalf("demo login %s: %d", u, st)
		}
		if u == "carol" && strings.Join(tr.Roles, ",") != "user,announcer" {
			t.Fatal(tr.Roles)
		}
	}
	if st, body := get(t, url+"/"); st != 200 || !strings.Contains(body, "Sigil") {
		t.Fatal("chat page", st)
	}
	if st, _ := get(t, url+"/js/sigil.js"); st != 200 {
		t.Fatal("client js", st)
	}
	if st, _ := get(t, url+"/healthz"); st != 200 {
		t.Fatal("healthz")
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan error)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit after SIGTERM")
	}
}

func TestServeKeysUsersAndRotation(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "users.json")
	run := func(stdin string, args ...string) string {
		out, err := sigil(t, stdin, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	run("password-1\n", "user", "add", "--users", users, "--roles", "user,admin", "--hash", "bcrypt", "zoe")
	run("password-2\n", "user", "add", "--users", users, "yann")
	if out, err := sigil(t, "password-3\n", "user", "add", "--users", users, "zoe").CombinedOutput(); err == nil {
		t.Fatalf("duplicate add succeeded: %s", out)
	}
	if out, err := sigil(t, "short\n", "user", "add", "--users", users, "xavier").CombinedOutput(); err == nil {
		t.Fatalf("short password accepted: %s", out)
	}
	run("password-9\n", "user", "passwd", "--users", users, "yann")
	run("", "user", "remove", "--users", users, "zoe")
	run("", "keygen", "--data-dir", dir)
	run("", "keygen", "--data-dir", dir, "--alg", "ES256")

	url, _, _ := startServe(t, "--addr", "127.0.0.1:0", "--data-dir", dir)
	if st, _ := login(t, url, "yann", "password-2"); st != 401 {
		t.Fatal("old password still works")
	}
	st, tr := login(t, url, "yann", "password-9")
	if st != 200 {
		t.Fatal("new password", st)
	}
	if st, _ := login(t, url, "zoe", "password-1"); st != 401 {
		t.Fatal("removed user")
	}
	_, body := get(t, url+"/.well-known/jwks.json")
	ks, err := protocol.ParseKeySet([]byte(body))
	if err != nil || len(ks.Keys()) != 2 {
		t.Fatalf("jwks %v %s", err, body)
	}
	// The newest key (ES256) signs.
	hdr := strings.Split(tr.Token, ".")[0]
	raw, _ := b64dec(hdr)
	if !strings.Contains(string(raw), `"ES256"`) {
		t.Fatalf("newest key does not sign: %s", raw)
	}
	// A user added while the server runs can log in without a restart.
	run("password-4\n", "user", "add", "--users", users, "walt")
	if st, _ := login(t, url, "walt", "password-4"); st != 200 {
		t.Fatal("hot-added user", st)
	}
}

func TestServeRefusesPlainHTTPOnPublicAddress(t *testing.T) {
	out, err := sigil(t, "", "serve", "--addr", "0.0.0.0:0", "--data-dir", t.TempDir()).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "refusing plain HTTP") {
		t.Fatalf("%v %s", err, out)
	}
	out, err = sigil(t, "", "serve", "--tls-cert", "x").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "go together") {
		t.Fatalf("%v %s", err, out)
	}
}

func TestConfigPrecedence(t *testing.T) {
	var f serveFlags
	fs := serveFlagSet(&f)
	dir := t.TempDir()
	path := filepath.Join(dir, "sigil.json")
	if err := os.WriteFile(path, []byte(`{"addr":"127.0.0.1:1111","issuer":"file","audience":"file","origins":["https://a","https://b"],"token-ttl":"5m","insecure-http":true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--issuer", "flag"}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"SIGIL_ISSUER": "env", "SIGIL_AUDIENCE": "env"}
	if err := applySources(fs, path, func(k string) string { return env[k] }); err != nil {
		t.Fatal(err)
	}
	if f.issuer != "flag" || f.audience != "env" || f.addr != "127.0.0.1:1111" || f.origins != "https://a,https://b" || f.tokenTTL != 5*time.Minute || !f.insecureHTTP {
		t.Fatalf("%+v", f)
	}
	fs2 := serveFlagSet(&serveFlags{})
	_ = fs2.Parse(nil)
	_ = os.WriteFile(path, []byte(`{"no-such-flag":1}`), 0o600)
	if err := applySources(fs2, path, func(string) string { return "" }); err == nil {
		t.Fatal("unknown setting accepted")
	}
}

func FuzzParseConfigFile(f *testing.F) {
	f.Add([]byte(`{"addr":"127.0.0.1:8080","origins":["https://a"],"insecure-http":false,"max-frame":65536}`))
	f.Add([]byte(`{"addr":1,"addr":2}`))
	f.Add([]byte(`[]`))
	fs := serveFlagSet(&serveFlags{})
	known := func(n string) bool { return fs.Lookup(n) != nil }
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := parseConfigFile(data, known)
		if err != nil {
			return
		}
		for k := range m {
			if !known(k) {
				t.Fatalf("unknown key %q accepted", k)
			}
		}
	})
}

var _ = flag.ContinueOnError

// --external-jwks: https, or plain http only to localhost exactly or a
// loopback IP; the URL is parsed, not matched by prefix.
func TestServeExternalJWKSPlainHTTP(t *testing.T) {
	ext := func(jwks string) []string {
		return []string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(),
			"--external-issuer", "https://idp.example", "--external-audience", "sigil", "--external-jwks", jwks}
	}
	for _, bad := range []string{"http://localhost.evil.example/jwks", "http://127.0.0.1@evil.example/jwks", "http://evil.example/jwks"} {
		out, err := sigilExit(t, ext(bad)...)
		if err == nil || !strings.Contains(string(out), "must be https") || strings.Contains(string(out), "SIGIL_READY") {
			t.Errorf("%s: %v %s", bad, err, out)
		}
	}
	for _, good := range []string{"http://localhost:9/jwks", "http://127.0.0.1:9/jwks", "https://idp.example/jwks"} {
		startServe(t, ext(good)[1:]...)
	}
}

// --addr is the one way to set the listen address, in every mode: the demo
// honours it (and its plain-HTTP rule) too, and there is no --port.
func TestServeAddrInEveryMode(t *testing.T) {
	url, _, _ := startServe(t, "--demo", "--addr", "127.0.0.1:0")
	if !strings.HasPrefix(url, "http://127.0.0.1:") || strings.HasSuffix(url, ":8080") {
		t.Fatalf("demo ignored --addr: %s", url)
	}
	cmd := sigil(t, "", "serve", "--demo")
	cmd.Env = append(cmd.Env, "SIGIL_ADDR=127.0.0.1:0")
	if url := readyURL(t, cmd); strings.HasSuffix(url, ":8080") {
		t.Fatalf("demo ignored SIGIL_ADDR: %s", url)
	}
	out, err := sigilExit(t, "serve", "--demo", "--addr", "0.0.0.0:0")
	if err == nil || !strings.Contains(out, "refusing plain HTTP") || strings.Contains(out, "SIGIL_READY") {
		t.Fatalf("demo on a public address without TLS: %v %s", err, out)
	}
	out, err = sigilExit(t, "serve", "--demo", "--port", "0")
	if err == nil || !strings.Contains(out, "-port") || strings.Contains(out, "SIGIL_READY") {
		t.Fatalf("--port: %v %s", err, out)
	}
}

// readyURL starts cmd and returns the URL of its ready line.
func readyURL(t *testing.T, cmd *exec.Cmd) string {
	t.Helper()
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = io.Discard
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "SIGIL_READY url="); ok {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return u
		}
	}
	t.Fatal("no SIGIL_READY")
	return ""
}

// writeCert writes a self-signed certificate for 127.0.0.1 and its key.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour)}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

// The TLS files are loaded and checked before the server listens: bad ones
// end the command with a clear error and no ready line; good ones serve
// HTTPS.
func TestServeTLSFilesCheckedBeforeReady(t *testing.T) {
	dir := t.TempDir()
	cert, key := writeCert(t, dir, "a")
	_, otherKey := writeCert(t, dir, "b")
	garbage := filepath.Join(dir, "garbage.pem")
	if err := os.WriteFile(garbage, []byte("not a certificate\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, files := range map[string][2]string{
		"missing cert": {filepath.Join(dir, "nope.crt"), key},
		"missing key":  {cert, filepath.Join(dir, "nope.key")},
		"garbage cert": {garbage, key},
		"other key":    {cert, otherKey},
	} {
		out, err := sigilExit(t, "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--tls-cert", files[0], "--tls-key", files[1])
		if err == nil || !strings.Contains(out, "--tls-cert/--tls-key:") || strings.Contains(out, "SIGIL_READY") || strings.Contains(out, "listening") {
			t.Errorf("%s: %v\n%s", name, err, out)
		}
	}
	url, _, _ := startServe(t, "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--tls-cert", cert, "--tls-key", key)
	if !strings.HasPrefix(url, "https://127.0.0.1:") {
		t.Fatal(url)
	}
	pool := x509.NewCertPool()
	pemData, _ := os.ReadFile(cert)
	pool.AppendCertsFromPEM(pemData)
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}}
	resp, err := hc.Get(url + "/healthz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatal(resp.StatusCode)
	}
}

// The HTTP timeouts are flags (or SIGIL_* variables, or config keys): an
// idle keep-alive connection and a trickled request body are dropped.
func TestServeHTTPTimeouts(t *testing.T) {
	cmd := sigil(t, "", "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--idle-timeout", "300ms")
	cmd.Env = append(cmd.Env, "SIGIL_READ_TIMEOUT=300ms")
	addr := strings.TrimPrefix(readyURL(t, cmd), "http://")
	closed := func(c net.Conn, what string) {
		t.Helper()
		_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
		if _, err := io.Copy(io.Discard, c); errors.Is(err, os.ErrDeadlineExceeded) {
			t.Fatalf("%s: still open", what)
		}
	}
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if _, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatal(resp, err)
	}
	resp.Body.Close()
	closed(idle, "idle keep-alive connection")

	slow, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer slow.Close()
	if _, err := io.WriteString(slow, "POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n{"); err != nil {
		t.Fatal(err)
	}
	go func() {
		for {
			time.Sleep(20 * time.Millisecond)
			if _, err := slow.Write([]byte{' '}); err != nil {
				return
			}
		}
	}()
	closed(slow, "trickled body")
}
