package main

import (
	"context"
	"fmt"
	"io"
	"net/http/httptest"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// countingStore is a real refresh store that records, per session, the
// refresh tokens it consumed: how the test sees in-band refreshes happen.
type countingStore struct {
	server.RefreshStore
	mu   sync.Mutex
	used map[string]int // sid → successful uses
}

func (c *countingStore) Use(ctx context.Context, hash string) (server.RefreshRecord, error) {
	rec, err := c.RefreshStore.Use(ctx, hash)
	if err == nil {
		c.mu.Lock()
		c.used[rec.Session]++
		c.mu.Unlock()
	}
	return rec, err
}

// refreshedAtLeast returns how many sessions have refreshed at least n times.
func (c *countingStore) refreshedAtLeast(n int) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	k := 0
	for _, u := range c.used {
		if u >= n {
			k++
		}
	}
	return k
}

// TestOneLoginManyProcesses: after one `sigil login`, a `sigil listen` and
// 20 concurrent `sigil send`s all work, and every one of them refreshes
// its token in-band (short token lifetime) on its own session, without
// breaking the others (spec.md §4.5). Before logins,
// all of them shared one session and one single-use refresh token: the
// second refresh was a reuse and revoked the login.
func TestOneLoginManyProcesses(t *testing.T) {
	t.Run("memory", func(t *testing.T) {
		t.Parallel()
		oneLoginManyProcesses(t, server.NewMemoryRefreshStore(nil))
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rd := sigiltest.StartRedis(t)
		r, err := server.NewRedis(server.RedisConfig{URL: rd.URL})
		must(t, err)
		t.Cleanup(r.Close)
		oneLoginManyProcesses(t, server.NewRedisRefreshStore(r, 0))
	})
}

func oneLoginManyProcesses(t *testing.T, store server.RefreshStore) {
	const senders = 20
	cs := &countingStore{RefreshStore: store, used: map[string]int{}}
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: &server.UsersDoc{Users: []server.User{
			{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		}}},
		Refresh: cs,
		// In-band refreshes every 6 s or so: short enough to see each of
		// 21 connections refresh, long enough that a refresh delayed by a
		// loaded machine still comes before its token expires.
		TokenTTL: 12 * time.Second,
		Logger:   sigiltest.QuietLogger(),
	})
	must(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); hs.Close() })
	creds := filepath.Join(t.TempDir(), "credentials.json")
	var out, errb sigiltest.SyncBuffer
	if code := run([]string{"login", "--server", hs.URL, "--user", "alice", "--credentials", creds}, strings.NewReader("pw\n"), &out, &errb); code != 0 {
		t.Fatalf("login: %d %s", code, errb.String())
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var lout sigiltest.SyncBuffer
	lerr := make(chan error, 1)
	go func() { lerr <- runListen(ctx, []string{"--credentials", creds, "rooms.many"}, &lout) }()
	sendOnce := func(text string) {
		t.Helper()
		var so, se strings.Builder
		if code := run([]string{"send", "--credentials", creds, "rooms.many", text}, nil, &so, &se); code != 0 {
			t.Fatalf("send: %d %s", code, se.String())
		}
	}
	sigiltest.Eventually(t, "listen to subscribe", func() bool {
		if strings.Contains(lout.String(), "probe") {
			return true
		}
		sendOnce("probe")
		return false
	})

	// 20 senders at once, each its own process-like command reading lines
	// from its stdin, so that it lives across several refreshes.
	pipes := make([]*io.PipeWriter, senders)
	codes := make(chan string, senders)
	for i := range senders {
		pr, pw := io.Pipe()
		pipes[i] = pw
		go func() {
			var so, se strings.Builder
			code := run([]string{"send", "--stdin", "--timeout", "5m", "--credentials", creds, "rooms.many"}, pr, &so, &se)
			codes <- fmt.Sprintf("sender %d: exit %d %s", i, code, se.String())
		}()
	}
	for i, pw := range pipes {
		fmt.Fprintf(pw, "first from %d\n", i)
	}
	diag := func() string {
		var b strings.Builder
		for {
			select {
			case s := <-codes:
				b.WriteString(s + "\n")
				continue
			case err := <-lerr:
				fmt.Fprintf(&b, "listen ended: %v\n", err)
				continue
			default:
			}
			break
		}
		cs.mu.Lock()
		fmt.Fprintf(&b, "refreshes by session: %v\n", cs.used)
		cs.mu.Unlock()
		return b.String()
	}
	sigiltest.Eventually(t, "every first message", func() bool { return countLines(lout.String(), "first from ") == senders }, diag)
	// Every connection (listen and the 20 senders) refreshes in-band while
	// they all run. (Probes refresh nothing: they are short.)
	sigiltest.Eventually(t, "a refresh in each of the 21 sessions", func() bool { return cs.refreshedAtLeast(1) >= senders+1 })
	for i, pw := range pipes {
		fmt.Fprintf(pw, "second from %d\n", i)
		pw.Close()
	}
	// Every sender exits once its stdin is closed; one that does not is
	// reported with where every goroutine stands.
	var exited []string
	sigiltest.Eventually(t, "every sender to exit", func() bool {
		for {
			select {
			case s := <-codes:
				exited = append(exited, s)
			default:
				return len(exited) == senders
			}
		}
	}, func() string {
		buf := make([]byte, 4<<20)
		return fmt.Sprintf("exited: %q\ngoroutines:\n%s", exited, buf[:runtime.Stack(buf, true)])
	})
	for _, s := range exited {
		if !strings.Contains(s, "exit 0") {
			t.Fatal(s)
		}
	}
	sigiltest.Eventually(t, "every second message", func() bool { return countLines(lout.String(), "second from ") == senders })
	// The login still works, and listen is still up.
	sendOnce("after")
	sigiltest.Eventually(t, "the last message", func() bool { return strings.Contains(lout.String(), "alice: after") })
	select {
	case err := <-lerr:
		t.Fatalf("listen ended: %v", err)
	default:
	}
	cancel()
	var lerrv error
	sigiltest.Eventually(t, "listen to end once cancelled", func() bool {
		select {
		case lerrv = <-lerr:
			return true
		default:
			return false
		}
	})
	if lerrv != nil {
		t.Fatal(lerrv)
	}
}

func countLines(s, substr string) int {
	n := 0
	for _, l := range strings.Split(s, "\n") {
		if strings.Contains(l, substr) {
			n++
		}
	}
	return n
}
