package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// getStatus GETs path and returns the status and, for an error, its code
// and message.
func (e *env) getStatus(path string) (int, apiErr) {
	e.t.Helper()
	resp, err := http.Get(e.url + path)
	must(e.t, err)
	defer resp.Body.Close()
	data, _ := io.ReadAll(resp.Body)
	var ae apiErr
	if resp.StatusCode != http.StatusOK {
		must(e.t, json.Unmarshal(data, &ae))
	}
	return resp.StatusCode, ae
}

// /readyz follows Redis: 503 unavailable while it is down (stopped, or
// paused so that pings time out), 200 again by itself when it answers,
// with no restart; /healthz stays 200 throughout.
func TestReadyzFollowsRedis(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	r, err := server.NewRedis(server.RedisConfig{URL: rs.URL, OpTimeout: 200 * time.Millisecond})
	must(t, err)
	t.Cleanup(r.Close)
	e := newEnv(t, func(c *server.Config) {
		c.ReadyChecks = []server.ReadyCheck{{Name: "redis", Check: r.Ping}}
		c.ReadyInterval = 20 * time.Millisecond
	})
	ready := func() bool { st, _ := e.getStatus("/readyz"); return st == http.StatusOK }
	notReady := func() bool {
		st, ae := e.getStatus("/readyz")
		if st == http.StatusOK {
			return false
		}
		if st != http.StatusServiceUnavailable || ae.Error != server.ErrCodeUnavailable || !strings.Contains(ae.Message, "redis") {
			t.Fatalf("/readyz = %d %+v, want 503 unavailable naming redis", st, ae)
		}
		return true
	}
	healthy := func() {
		t.Helper()
		if st, _ := e.getStatus("/healthz"); st != http.StatusOK {
			t.Fatalf("/healthz = %d while Redis is away", st)
		}
	}
	if !ready() {
		t.Fatal("not ready with Redis up")
	}
	if m := e.metric(`sigil_ready_check{check="redis"}`); !strings.HasSuffix(m, " 1") {
		t.Fatalf("metric %q, want 1", m)
	}

	rs.Stop()
	waitUntil(t, "/readyz 503 with Redis stopped", notReady)
	healthy()
	if m := e.metric(`sigil_ready_check{check="redis"}`); !strings.HasSuffix(m, " 0") {
		t.Fatalf("metric %q, want 0", m)
	}
	rs.Restart()
	waitUntil(t, "/readyz 200 with Redis back", ready)

	rs.Pause()
	waitUntil(t, "/readyz 503 with Redis paused", notReady)
	healthy()
	rs.Resume()
	waitUntil(t, "/readyz 200 with Redis resumed", ready)
}

// A server whose check fails at start is not ready from the first request:
// New runs the checks once before it returns.
func TestReadyChecksRunBeforeNew(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.ReadyChecks = []server.ReadyCheck{{Name: "db", Check: func(context.Context) error { return context.DeadlineExceeded }}}
		c.ReadyInterval = time.Hour
	})
	if st, ae := e.getStatus("/readyz"); st != http.StatusServiceUnavailable || ae.Message != "not ready: db" {
		t.Fatalf("/readyz = %d %+v", st, ae)
	}
	if err := e.srv.Ready(); err == nil {
		t.Fatal("Ready() = nil")
	}
	for _, bad := range [][]server.ReadyCheck{
		{{Name: "", Check: func(context.Context) error { return nil }}},
		{{Name: "x"}},
		{{Name: "x", Check: func(context.Context) error { return nil }}, {Name: "x", Check: func(context.Context) error { return nil }}},
	} {
		if _, err := server.New(server.Config{ReadyChecks: bad, Logger: sigiltest.QuietLogger()}); err == nil {
			t.Fatalf("New accepted ReadyChecks %+v", bad)
		}
	}
}
