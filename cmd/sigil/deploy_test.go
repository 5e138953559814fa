package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
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
	var stderr sigiltest.SyncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		if t.Failed() {
			out, _ := exec.Command("redis-cli", "-p", strconv.Itoa(ports[4]), "PUBSUB", "SHARDCHANNELS").CombinedOutput()
			t.Logf("redis shard channels:\n%s", out)
			for i := 1; i <= 3; i++ {
				resp, err := http.Get("http://127.0.0.1:" + strconv.Itoa(ports[i]) + "/metrics")
				if err != nil {
					continue
				}
				data, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				for _, l := range strings.Split(string(data), "\n") {
					if strings.HasPrefix(l, "#") || strings.HasSuffix(l, " 0") {
						continue
					}
					if strings.Contains(l, "deliver") || strings.Contains(l, "redis_errors") || strings.Contains(l, "backend_errors") || strings.Contains(l, "sigil_frames") {
						t.Logf("node%d %s", i, l)
					}
				}
			}
		}
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
	if o.OnStateChange == nil {
		o.OnStateChange = func(s client.State, err error) { t.Logf("%s: state %v (%v)", user, s, err) }
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.NewTextHandler(tlogWriter{t, user}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	if o.OnError == nil {
		o.OnError = func(err error) { t.Logf("%s: error %v", user, err) }
	}
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

// freeTCPPort returns a loopback port that was free a moment ago, for
// deploy/run.sh's processes to listen on. It is drawn at random from
// below the kernel's range of ephemeral ports (the range a listener on
// port 0 and every outgoing connection take theirs from), so that the
// other packages' tests, running alongside, cannot take it in the moment
// between its check here and the node's listen.
func freeTCPPort(t *testing.T) int {
	t.Helper()
	lo, hi := 10000, 32768
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if low, err := strconv.Atoi(f[0]); err == nil && low > lo+1000 {
				hi = low
			}
		}
	}
	for range 200 {
		port := lo + rand.IntN(hi-lo)
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
		if err != nil {
			continue
		}
		l.Close()
		return port
	}
	t.Fatalf("no free port in %d–%d", lo, hi)
	return 0
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

// deploy/run.sh runs three nodes, Redis and HAProxy as one server: a
// session logged in on one node connects through the balancer;
// publications and direct messages cross the nodes; sigil load, spread over
// the three nodes, loses nothing; the balancer reports ready.
func TestDeployRunScript(t *testing.T) {
	c := startDeploy(t)
	if st, body := get(t, c.url+"/readyz"); st != 200 {
		t.Fatalf("balancer /readyz = %d %s", st, body)
	}
	ctx := context.Background()
	ws := func(base string) string { return strings.Replace(base, "http", "ws", 1) + "/v1/ws" }
	alice := c.dial(t, ws(c.url), c.nodes[0], "alice", nil) // logged in on node 1, through the balancer
	bob := c.dial(t, ws(c.nodes[1]), c.nodes[1], "bob", nil)
	carol := c.dial(t, ws(c.nodes[2]), c.nodes[0], "carol", nil)
	subs := map[string]*client.Subscription{}
	for name, cl := range map[string]*client.Client{"alice": alice, "bob": bob} {
		s, err := cl.Subscribe(ctx, "rooms.deploy")
		if err != nil {
			t.Fatal(err)
		}
		subs[name] = s
	}
	if err := carol.Publish(ctx, "rooms.deploy", json.RawMessage(`"from node 3"`)); err != nil {
		t.Fatal(err)
	}
	for name, s := range subs {
		if got := recvBody(t, s); got != `"from node 3"` {
			t.Fatalf("%s got %s", name, got)
		}
	}
	// The inbox is open before the send: a direct message that reaches a
	// client with no inbox open is dropped (Stats.Unrouted).
	inbox := bob.Inbox()
	if err := alice.Send(ctx, "bob", json.RawMessage(`"a direct message"`)); err != nil {
		t.Fatal(err)
	}
	if got := recvBody(t, inbox); got != `"a direct message"` {
		t.Fatalf("bob's inbox: %s", got)
	}

	pw := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pw, []byte(c.passwords["alice"]+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep := runLoadJSON(t, "", "--server", strings.Join(c.nodes[:], ","), "--user", "alice", "--password-file", pw,
		"--conns", "3", "--subs", "3", "--count", "30", "--duration", "120s", "--stats")
	checkLossless(t, rep, 3*30)
	if st := rep.Stats; st == nil || len(st.Servers) != 3 || st.RedisOps["replay.check"] < 90 {
		t.Fatalf("stats %+v", rep.Stats)
	}
}

// killBody is what the publishers of TestDeployNodeKilled send.
type killBody struct {
	P int `json:"p"`
	K int `json:"k"`
}

// SIGKILL of a node behind the balancer loses only its connections: its
// clients reconnect through the balancer to another node and go on with
// their session (their seq continues, replay protection holds across the
// nodes); every acknowledged publish reaches every subscriber exactly once,
// and nothing reaches a subscriber twice or without having been published.
func TestDeployNodeKilled(t *testing.T) {
	c := startDeploy(t)
	ctx := context.Background()
	ws := func(base string) string { return strings.Replace(base, "http", "ws", 1) + "/v1/ws" }
	fast := &client.Options{Reconnect: &client.ReconnectPolicy{Min: 50 * time.Millisecond, Max: 500 * time.Millisecond}}

	// Subscribers on the nodes that stay, publishers through the balancer
	// (least connections: they spread over the three nodes).
	var subs []*client.Subscription
	for _, node := range []string{c.nodes[0], c.nodes[2]} {
		s, err := c.dial(t, ws(node), node, "bob", fast).Subscribe(ctx, "rooms.kill")
		if err != nil {
			t.Fatal(err)
		}
		subs = append(subs, s)
	}
	const publishers = 6
	pubs := make([]*client.Client, publishers)
	for i := range pubs {
		pubs[i] = c.dial(t, ws(c.url), c.url, "alice", fast)
	}
	if n := nodeConnections(t, c.nodes[1]); n < 1 {
		t.Fatalf("node 2 serves %v connections: the balancer put no publisher there", n)
	}
	// A raw session on node 2, whose hello is replayed to node 1 after the
	// kill.
	raw := newRawSession(t, c.url, "carol", c.passwords["carol"])
	hello := raw.connect(t, ws(c.nodes[1]))

	// Publish until told to stop; the publishers' answers are the truth.
	type result struct {
		acked, tried map[killBody]bool
		errs         map[string]int
	}
	results := make([]result, publishers)
	var acks atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i, p := range pubs {
		results[i] = result{acked: map[killBody]bool{}, tried: map[killBody]bool{}, errs: map[string]int{}}
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := &results[i]
			for k := 0; ; k++ {
				select {
				case <-stop:
					return
				default:
				}
				b := killBody{P: i, K: k}
				r.tried[b] = true
				pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
				err := p.Publish(pctx, "rooms.kill", b)
				cancel()
				if err == nil {
					r.acked[b] = true
					acks.Add(1)
					continue
				}
				r.errs[errorKey(err)]++
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	waitCond(t, "100 acknowledged publishes", func() bool { return acks.Load() >= 100 })
	raw.publish(t, "rooms.raw", "before the kill")
	if err := syscall.Kill(c.pid(t, "node2"), syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	// Node 1 knows what node 2 accepted: the raw session's first hello,
	// sent again (still fresh), is a replay there; the session goes on
	// with a new one.
	raw.expectHelloReplay(t, ws(c.nodes[0]), hello)
	raw.connect(t, ws(c.nodes[0]))
	raw.publish(t, "rooms.raw", "after the kill")
	before := acks.Load()
	waitCond(t, "the clients of node 2 to reconnect elsewhere and go on", func() bool {
		for _, p := range pubs {
			if p.Stats().Reconnects > 0 {
				return acks.Load() >= before+300
			}
		}
		return false
	})
	close(stop)
	wg.Wait()

	moved := 0
	var acked, tried = map[killBody]bool{}, map[killBody]bool{}
	for i, p := range pubs {
		if p.Stats().Reconnects > 0 {
			moved++
		}
		for code := range results[i].errs {
			if strings.HasPrefix(code, "replay") {
				t.Errorf("publisher %d: %v: its session did not continue", i, results[i].errs)
			}
		}
		for b := range results[i].acked {
			acked[b] = true
		}
		for b := range results[i].tried {
			tried[b] = true
		}
	}
	if moved == 0 {
		t.Fatal("no publisher reconnected")
	}
	for si, s := range subs {
		got := map[killBody]int{}
		missing := func() int {
			n := 0
			for b := range acked {
				if got[b] == 0 {
					n++
				}
			}
			return n
		}
		for missing() > 0 {
			select {
			case m, ok := <-s.C():
				if !ok {
					t.Fatalf("subscriber %d ended: %v", si, s.Err())
				}
				var b killBody
				if err := json.Unmarshal(m.Body, &b); err != nil {
					t.Fatal(err)
				}
				got[b]++
			case <-time.After(30 * time.Second):
				t.Fatalf("subscriber %d: %d of %d acknowledged publishes never arrived", si, missing(), len(acked))
			}
		}
		// Whatever else is still queued (publishes that were in flight).
		for drained := false; !drained; {
			select {
			case m := <-s.C():
				var b killBody
				_ = json.Unmarshal(m.Body, &b)
				got[b]++
			case <-time.After(500 * time.Millisecond):
				drained = true
			}
		}
		for b, n := range got {
			if n != 1 || !tried[b] {
				t.Errorf("subscriber %d got %+v %d times (published: %v)", si, b, n, tried[b])
			}
		}
	}
	t.Logf("%d acknowledged publishes, %d publishers moved off the killed node", len(acked), moved)
}

// nodeConnections reads a node's sigil_connections.
func nodeConnections(t *testing.T, base string) float64 {
	t.Helper()
	v, err := readMetrics(context.Background(), cliHTTPClient(), base+"/metrics")
	if err != nil {
		t.Fatal(err)
	}
	return v["sigil_connections"]
}

type tlogWriter struct {
	t    *testing.T
	user string
}

func (w tlogWriter) Write(p []byte) (int, error) { w.t.Logf("%s: %s", w.user, p); return len(p), nil }
