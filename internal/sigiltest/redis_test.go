package sigiltest

import (
	"fmt"
	"strings"
	"testing"
)

func TestRedisStopRestart(t *testing.T) {
	r := StartRedis(t)
	if err := r.ping(); err != nil {
		t.Fatalf("started server does not answer: %v", err)
	}
	addr := r.Addr
	r.Stop()
	if err := r.ping(); err == nil {
		t.Fatal("stopped server still answers PING")
	}
	r.Stop() // stopping twice is allowed
	r.Restart()
	if r.Addr != addr {
		t.Fatalf("restart moved the server from %s to %s", addr, r.Addr)
	}
	if err := r.ping(); err != nil {
		t.Fatalf("restarted server does not answer: %v", err)
	}
}

func TestRedisPauseResume(t *testing.T) {
	r := StartRedis(t)
	r.Pause()
	if err := r.ping(); err == nil {
		t.Fatal("paused server answers PING")
	}
	r.Resume()
	if err := r.ping(); err != nil {
		t.Fatalf("resumed server does not answer: %v", err)
	}
	r.Pause()
	r.Stop() // a paused server can be stopped
}

func TestTwoRedisServersAreSeparate(t *testing.T) {
	a, b := StartRedis(t), StartRedis(t)
	if a.Addr == b.Addr {
		t.Fatalf("two servers share %s", a.Addr)
	}
	a.Stop()
	if err := b.ping(); err != nil {
		t.Fatalf("stopping one server stopped the other: %v", err)
	}
}

// fatalTB records the first Fatalf and stops the caller, as testing.T does,
// so that a test can see StartRedis fail.
type fatalTB struct {
	testing.TB
	msg string
}

type stopped struct{}

func (f *fatalTB) Helper() {}

func (f *fatalTB) Fatalf(format string, args ...any) {
	f.msg = fmt.Sprintf(format, args...)
	panic(stopped{})
}

func TestStartRedisFailsWithoutRedisServer(t *testing.T) {
	t.Setenv("PATH", t.TempDir())
	f := &fatalTB{TB: t}
	func() {
		defer func() {
			if v := recover(); v != nil && v != (stopped{}) {
				panic(v)
			}
		}()
		StartRedis(f)
	}()
	if !strings.Contains(f.msg, "apt-get install -y redis-server") {
		t.Fatalf("StartRedis without redis-server: want a failure with an install hint, got %q", f.msg)
	}
}

func TestRedisCluster(t *testing.T) {
	c := StartRedisCluster(t, 3)
	if len(c.Nodes) != 3 || !strings.HasPrefix(c.URL, "redis://"+c.Nodes[0].Addr+"?addr=") {
		t.Fatalf("cluster %v at %s", c.Nodes, c.URL)
	}
	for _, r := range c.Nodes {
		info, err := r.command("CLUSTER INFO")
		if err != nil || !strings.Contains(info, "cluster_known_nodes:3") || !strings.Contains(info, "cluster_slots_ok:16384") {
			t.Fatalf("node %s: %v %s", r.Addr, err, info)
		}
	}
	if counts := c.KeyCounts(t); len(counts) != 3 || counts[0]+counts[1]+counts[2] != 0 {
		t.Fatalf("a new cluster holds keys: %v", counts)
	}
}

func TestRedisTLS(t *testing.T) {
	r := StartRedisTLS(t)
	if !strings.HasPrefix(r.URL, "rediss://") || r.RootCAs == nil {
		t.Fatalf("TLS server at %s", r.URL)
	}
	if err := r.ping(); err != nil {
		t.Fatalf("PING over TLS: %v", err)
	}
	plain := &Redis{Addr: r.Addr}
	if err := plain.ping(); err == nil {
		t.Fatal("the TLS port answers plain text")
	}
	r.Restart()
	if err := r.ping(); err != nil {
		t.Fatalf("PING over TLS after a restart: %v", err)
	}
}

func TestRedisSentinel(t *testing.T) {
	s := StartRedisSentinel(t)
	if err := s.Sentinel.ping(); err != nil {
		t.Fatalf("sentinel: %v", err)
	}
	if s.URL != "redis://"+s.Sentinel.Addr+"?master_set="+s.MasterSet {
		t.Fatalf("URL %s", s.URL)
	}
}
