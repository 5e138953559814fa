package main

import (
	"bufio"
	"bytes"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// Plaintext Redis to a host others can reach is refused without the loud
// opt-out, in every URL form; the refusal never repeats the password.
func TestServeRedisPlaintextRefused(t *testing.T) {
	for _, u := range []string{
		"redis://:s3cret@10.0.0.7:6379",
		"redis://user:s3cret@redis.internal",
		"redis://:s3cret@127.0.0.1:26379?master_set=main&addr=10.0.0.8:26379", // a remote Sentinel
		"redis://:s3cret@127.0.0.1:7000?addr=192.168.1.2:7001",                // a remote Cluster node
		"rediss://:s3cret@10.0.0.7:6379?skip_verify=true",
	} {
		out, err := sigilExit(t, "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--redis", u)
		if err == nil || !strings.Contains(out, "refusing --redis") || !strings.Contains(out, "--insecure-redis-plaintext") ||
			strings.Contains(out, "s3cret") || strings.Contains(out, "SIGIL_READY") {
			t.Errorf("%s: %v\n%s", u, err, out)
		}
	}
	if out, err := sigilExit(t, "serve", "--demo", "--addr", "127.0.0.1:0", "--redis", "redis://127.0.0.1:1"); err == nil || !strings.Contains(out, "--demo") {
		t.Errorf("--demo with --redis: %v\n%s", err, out)
	}
	for _, u := range []string{"redis://127.0.0.1:6379", "redis://localhost", "redis://[::1]:6379", "rediss://10.0.0.7:6379", "unix:///run/redis.sock",
		"redis://127.0.0.1:7000?addr=127.0.0.2:7001", "rediss://h?skip_verify=false"} {
		p, _ := url.Parse(u)
		if why := redisInsecure(p); why != "" {
			t.Errorf("%s refused: %s", u, why)
		}
	}
}

// A node whose Redis cannot be reached does not start, and says so without
// the password; with --insecure-redis-plaintext a remote redis:// is tried.
func TestServeRedisUnreachable(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	rs.Stop()
	for _, args := range [][]string{
		{"--redis", "redis://:s3cret@" + rs.Addr},
		{"--redis", "redis://:s3cret@192.0.2.1:6379", "--insecure-redis-plaintext", "--redis-dial-timeout", "100ms"},
	} {
		out, err := sigilExit(t, append([]string{"serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir()}, args...)...)
		if err == nil || !strings.Contains(out, "redis unavailable") || strings.Contains(out, "s3cret") || strings.Contains(out, "SIGIL_READY") {
			t.Errorf("%v: %v\n%s", args, err, out)
		}
	}
}

// sigil serve on Redis: the URL may come from SIGIL_REDIS, with a user and
// password; the logs carry the node name and never the password; /readyz follows Redis (503 while it
// is down, 200 again by itself); /healthz stays 200; the metrics name the
// node.
func TestServeRedisReadiness(t *testing.T) {
	rs := sigiltest.StartRedisArgs(t, "--user", "sigil", "on", ">s3cret", "~*", "&*", "+@all")
	cmd := sigil(t, "", "serve", "--addr", "127.0.0.1:0", "--data-dir", t.TempDir(), "--node", "node-7", "--redis-timeout", "300ms")
	cmd.Env = append(cmd.Env, "SIGIL_REDIS=redis://sigil:s3cret@"+rs.Addr+"/0")
	var logs sigiltest.SyncBuffer
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = &logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	sc := bufio.NewScanner(stdout)
	var base string
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "SIGIL_READY url="); ok {
			base = u
			break
		}
	}
	if base == "" {
		t.Fatalf("no ready line; logs:\n%s", logs.String())
	}
	go func() { _, _ = io.Copy(io.Discard, stdout) }()
	status := func(path string) int { st, _ := get(t, base+path); return st }
	if st := status("/readyz"); st != 200 {
		t.Fatalf("/readyz = %d with Redis up", st)
	}
	if _, m := get(t, base+"/metrics"); !strings.Contains(m, `sigil_node_info{node="node-7"} 1`) {
		t.Fatal("no sigil_node_info for node-7")
	}
	rs.Stop()
	waitCond(t, "/readyz 503 with Redis stopped", func() bool { return status("/readyz") == 503 })
	if st := status("/healthz"); st != 200 {
		t.Fatalf("/healthz = %d with Redis stopped", st)
	}
	rs.Restart()
	waitCond(t, "/readyz 200 with Redis back", func() bool { return status("/readyz") == 200 })
	out := logs.String()
	if !strings.Contains(out, "cluster mode") || !strings.Contains(out, "node=node-7") || !strings.Contains(out, "check=redis") || strings.Contains(out, "s3cret") {
		t.Fatalf("logs lack the cluster line, the node or the readiness change, or show the password:\n%s", out)
	}
}

// waitCond polls cond until it holds, failing after a generous limit.
func waitCond(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited 60s for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The cluster secret is created once, atomically: nodes that start at once
// on one data directory read the same secret; a bad file is refused.
func TestClusterSecretFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "sub", "cluster-secret")
	secrets := make(chan []byte, 8)
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s, err := loadClusterSecret(path, io.Discard)
			if err != nil {
				t.Error(err)
			}
			secrets <- s
		}()
	}
	wg.Wait()
	close(secrets)
	first := <-secrets
	if len(first) != 32 {
		t.Fatalf("secret of %d bytes", len(first))
	}
	for s := range secrets {
		if !bytes.Equal(s, first) {
			t.Fatal("two nodes read different secrets")
		}
	}
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode: %v %v", st, err)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, "sub", ".cluster-secret-*")); len(left) != 0 {
		t.Fatalf("temporary files left: %v", left)
	}
	for _, bad := range []string{"short\n", "!!!not base64 at all, but long enough to be a secret!!!\n"} {
		p := filepath.Join(dir, "bad")
		if err := os.WriteFile(p, []byte(bad), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := loadClusterSecret(p, io.Discard); err == nil {
			t.Errorf("secret %q accepted", bad)
		}
	}
}
