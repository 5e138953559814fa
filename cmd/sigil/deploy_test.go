package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
)

// deployCluster is deploy/run.sh running: three sigil serve nodes (this
// test binary), one redis-server and HAProxy, on free loopback ports.
type deployCluster struct {
	url       string    // the balancer
	nodes     [3]string // each node, directly
	dir       string
	passwords map[string]string
}

// startDeploy runs deploy/run.sh and waits for its ready line. The script,
// and with it every process it started, is stopped when the test ends. It
// fails the test if redis-server or haproxy is missing (CI installs them).
func startDeploy(t *testing.T, extraEnv ...string) *deployCluster {
	t.Helper()
	for _, tool := range []string{"redis-server", "redis-cli", "haproxy", "bash"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s is not installed (Debian: apt-get install -y redis-server haproxy): %v", tool, err)
		}
	}
	ports := make([]int, 5)
	for i := range ports {
		ports[i] = freeTCPPort(t)
	}
	dir := t.TempDir()
	cmd := exec.Command("bash", filepath.Join("..", "..", "deploy", "run.sh"))
	cmd.Env = append(os.Environ(), "SIGIL_TEST_MAIN=1",
		"SIGIL_CLUSTER_BIN="+os.Args[0],
		"SIGIL_CLUSTER_DIR="+dir,
		"SIGIL_CLUSTER_LB_PORT="+strconv.Itoa(ports[0]),
		fmt.Sprintf("SIGIL_CLUSTER_NODE_PORTS=%d %d %d", ports[1], ports[2], ports[3]),
		"SIGIL_CLUSTER_REDIS_PORT="+strconv.Itoa(ports[4]),
	)
	cmd.Env = append(cmd.Env, extraEnv...)
	// Its own process group, so that the cleanup reaches what it started
	// even if the script is stuck; and a SIGTERM if this test dies.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = syscall.Kill(cmd.Process.Pid, syscall.SIGTERM) // the script stops its processes
		select {
		case <-done:
		case <-time.After(60 * time.Second):
			t.Errorf("deploy/run.sh still running 60s after SIGTERM; killing its process group")
		}
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		if t.Failed() {
			for _, f := range []string{"node1.log", "node2.log", "node3.log", "haproxy.log"} {
				data, _ := os.ReadFile(filepath.Join(dir, f))
				t.Logf("%s:\n%s", f, tail(string(data), 30))
			}
		}
	})
	lines := make(chan string)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	c := &deployCluster{dir: dir, passwords: map[string]string{}}
	limit := time.After(3 * time.Minute) // a safety limit: a start takes seconds
	for c.url == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("deploy/run.sh ended without its ready line:\n%s", stderr.String())
			}
			if rest, ok := strings.CutPrefix(l, "SIGIL_CLUSTER_READY url="); ok {
				c.url, _, _ = strings.Cut(rest, " ")
			}
		case <-limit:
			t.Fatalf("no ready line from deploy/run.sh after 3 minutes:\n%s", stderr.String())
		}
	}
	go func() {
		for range lines {
		}
	}()
	for i := range c.nodes {
		c.nodes[i] = "http://127.0.0.1:" + strconv.Itoa(ports[i+1])
	}
	pw, err := os.ReadFile(filepath.Join(dir, "passwords"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(strings.TrimSpace(string(pw)), "\n") {
		name, p, _ := strings.Cut(l, " ")
		c.passwords[name] = p
	}
	return c
}

// pid returns the process id of a process the script started ("node2",
// "redis", "haproxy").
func (c *deployCluster) pid(t *testing.T, name string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(c.dir, name+".pid"))
	if err != nil {
		t.Fatal(err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// dial connects user through url (a node or the balancer); its logins go
// to tokenURL (which may be another node).
func (c *deployCluster) dial(t *testing.T, url, tokenURL, user string, opts *client.Options) *client.Client {
	t.Helper()
	o := client.Options{}
	if opts != nil {
		o = *opts
	}
	pw := c.passwords[user]
	o.Tokens = client.TokenSourceFunc(func(ctx context.Context, r *client.TokenRequest) (*client.Token, error) {
		at := *r
		at.BaseURL = tokenURL
		return client.Password(user, pw).Token(ctx, &at)
	})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cl, err := client.Dial(ctx, url, &o)
	if err != nil {
		t.Fatalf("dial %s as %s (login at %s): %v", url, user, tokenURL, err)
	}
	t.Cleanup(func() { _ = cl.Close() })
	return cl
}

func freeTCPPort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func tail(s string, n int) string {
	lines := strings.Split(s, "\n")
	return strings.Join(lines[max(0, len(lines)-n):], "\n")
}

// recvBody waits for the next message of sub and returns its body.
func recvBody(t *testing.T, sub *client.Subscription) string {
	t.Helper()
	select {
	case m, ok := <-sub.C():
		if !ok {
			t.Fatalf("subscription ended: %v", sub.Err())
		}
		return string(m.Body)
	case <-time.After(30 * time.Second):
		t.Fatal("no delivery within 30s")
	}
	return ""
}

// deploy/run.sh runs three nodes, Redis and HAProxy: a session logged in
// on one node connects through the balancer; the balancer reports ready.
func TestDeployRunScript(t *testing.T) {
	c := startDeploy(t)
	if st, body := get(t, c.url+"/readyz"); st != 200 {
		t.Fatalf("balancer /readyz = %d %s", st, body)
	}
	ctx := context.Background()
	alice := c.dial(t, strings.Replace(c.url, "http", "ws", 1)+"/v1/ws", c.nodes[0], "alice", nil)
	sub, err := alice.Subscribe(ctx, "rooms.deploy")
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Publish(ctx, "rooms.deploy", json.RawMessage(`"through the balancer"`)); err != nil {
		t.Fatal(err)
	}
	if got := recvBody(t, sub); got != `"through the balancer"` {
		t.Fatalf("delivery %s", got)
	}
}
