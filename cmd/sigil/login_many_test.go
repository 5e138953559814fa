package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
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
		oneLoginManyProcesses(t, server.NewMemoryRefreshStore(nil), nil)
	})
	t.Run("redis", func(t *testing.T) {
		t.Parallel()
		rd := sigiltest.StartRedis(t)
		ops := &storeCalls{}
		r, err := server.NewRedis(server.RedisConfig{URL: rd.URL, Observe: ops.observe})
		must(t, err)
		t.Cleanup(r.Close)
		oneLoginManyProcesses(t, server.NewRedisRefreshStore(r, 0), ops)
	})
}

// storeCalls records the Redis store's calls that failed or were slow,
// for a failure's report. On a loaded machine a call can run out of
// RedisConfig.OpTimeout (1 s): the login grant or the in-band refresh
// that made it is answered unavailable, and the command dials again or
// goes on with a new session (TestSendWaitsOutUnavailable,
// TestListenOutlivesUnavailableRefresh); before, it exited, and the old
// version of this test then blocked for ever writing to its stdin.
type storeCalls struct {
	mu      sync.Mutex
	n       int
	slowest time.Duration
	notable []string
}

func (s *storeCalls) observe(op string, d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.n++
	s.slowest = max(s.slowest, d)
	if err != nil || d > 250*time.Millisecond {
		s.notable = append(s.notable, fmt.Sprintf("%s %s: %v %v", time.Now().Format(time.StampMilli), op, d, err))
	}
}

func (s *storeCalls) String() string {
	if s == nil {
		return "(memory store)"
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return fmt.Sprintf("%d calls, the slowest %v; failed or over 250ms: %q", s.n, s.slowest, s.notable)
}

func oneLoginManyProcesses(t *testing.T, store server.RefreshStore, ops *storeCalls) {
	const senders = 20
	cs := &countingStore{RefreshStore: store, used: map[string]int{}}
	var srvLog sigiltest.SyncBuffer // printed on failure
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: &server.UsersDoc{Users: []server.User{
			{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		}}},
		Refresh: cs,
		// In-band refreshes every 6 s or so: short enough to see each of
		// 21 connections refresh, long enough that a refresh delayed by a
		// loaded machine still comes before its token expires.
		TokenTTL: 12 * time.Second,
		Logger:   slog.New(slog.NewTextHandler(&srvLog, nil)),
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
	procs := make([]*senderProc, senders)
	for i := range senders {
		p := &senderProc{stdin: feed{lines: make(chan string, 2)}, done: make(chan struct{})}
		procs[i] = p
		t.Cleanup(p.closeStdin) // a failed test ends them too
		go func() {
			defer close(p.done)
			var so strings.Builder
			p.code = run([]string{"send", "--stdin", "--timeout", "5m", "--credentials", creds, "rooms.many"}, &p.stdin, &so, &p.stderr)
		}()
	}
	// report is what a failure prints: every sender's state and stderr,
	// listen's, the refreshes, the server's sessions and log, and where
	// every goroutine stands (the commands run in this process).
	report := func() string {
		var b strings.Builder
		for i, p := range procs {
			if code, ok := p.exited(); ok {
				fmt.Fprintf(&b, "sender %d: exit %d %s\n", i, code, p.stderr.String())
			} else {
				fmt.Fprintf(&b, "sender %d: running %s\n", i, p.stderr.String())
			}
		}
		select {
		case err := <-lerr:
			fmt.Fprintf(&b, "listen ended: %v\n", err)
			lerr <- err
		default:
		}
		fmt.Fprintf(&b, "listen printed %d first, %d second\n", countLines(lout.String(), "first from "), countLines(lout.String(), "second from "))
		cs.mu.Lock()
		fmt.Fprintf(&b, "refreshes by session: %v\n", cs.used)
		cs.mu.Unlock()
		for _, si := range srv.Sessions() {
			fmt.Fprintf(&b, "server session %s: jti %s, expires %s\n", si.ID, si.TokenID, si.ExpiresAt.Format(time.StampMilli))
		}
		fmt.Fprintf(&b, "store calls: %s\nserver log:\n%s", ops, srvLog.String())
		buf := make([]byte, 8<<20)
		fmt.Fprintf(&b, "goroutines:\n%s", buf[:runtime.Stack(buf, true)])
		return b.String()
	}
	// Until their stdin is closed, the senders run, and listen runs
	// throughout: one that ended already failed, and the test says why at
	// once.
	running := func() {
		t.Helper()
		for i, p := range procs {
			if _, ok := p.exited(); ok {
				t.Fatalf("sender %d ended before its stdin did\n%s", i, report())
			}
		}
		select {
		case err := <-lerr:
			lerr <- err
			t.Fatalf("listen ended: %v\n%s", err, report())
		default:
		}
	}
	for i, p := range procs {
		p.stdin.lines <- fmt.Sprintf("first from %d\n", i)
	}
	sigiltest.Eventually(t, "every first message", func() bool {
		running()
		return countLines(lout.String(), "first from ") == senders
	}, report)
	// Every connection (listen and the 20 senders) refreshes in-band while
	// they all run. (Probes refresh nothing: they are short.)
	sigiltest.Eventually(t, "a refresh in each of the 21 sessions", func() bool {
		running()
		return cs.refreshedAtLeast(1) >= senders+1
	}, report)
	for i, p := range procs {
		p.stdin.lines <- fmt.Sprintf("second from %d\n", i)
		p.closeStdin()
	}
	// Every sender exits once its stdin is closed, with 0.
	sigiltest.Eventually(t, "every sender to exit", func() bool {
		for _, p := range procs {
			if _, ok := p.exited(); !ok {
				return false
			}
		}
		return true
	}, report)
	for i, p := range procs {
		if p.code != 0 {
			t.Fatalf("sender %d: exit %d\n%s", i, p.code, report())
		}
	}
	sigiltest.Eventually(t, "every second message", func() bool { return countLines(lout.String(), "second from ") == senders }, report)
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
	t.Logf("store calls: %s", ops)
}

// loginOnRedis starts a server whose refresh store is on a Redis of its
// own, whose calls time out after 200 ms (observe, if not nil, sees each
// one), with session tokens of ttl, logs alice in, and returns the Redis
// and the credentials file.
func loginOnRedis(t *testing.T, ttl time.Duration, observe func(string, time.Duration, error)) (*sigiltest.Redis, string) {
	rd := sigiltest.StartRedis(t)
	t.Cleanup(rd.Resume) // before Redis stops (cleanups run last first)
	r, err := server.NewRedis(server.RedisConfig{URL: rd.URL, OpTimeout: 200 * time.Millisecond, Observe: observe})
	must(t, err)
	t.Cleanup(r.Close)
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: &server.UsersDoc{Users: []server.User{
			{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		}}},
		Refresh:  server.NewRedisRefreshStore(r, 0),
		TokenTTL: ttl,
		Logger:   sigiltest.QuietLogger(),
	})
	must(t, err)
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); hs.Close() })
	creds := filepath.Join(t.TempDir(), "credentials.json")
	var out, errb strings.Builder
	if code := run([]string{"login", "--server", hs.URL, "--user", "alice", "--credentials", creds}, strings.NewReader("pw\n"), &out, &errb); code != 0 {
		t.Fatalf("login: %d %s", code, errb.String())
	}
	return rd, creds
}

// TestSendWaitsOutUnavailable: a send whose login grant is answered 503
// unavailable, because the server's Redis does not answer (stopped here;
// on a loaded machine, a call beyond RedisConfig.OpTimeout, which made
// senders of TestOneLoginManyProcesses exit at once), tries again as the
// server asks, and sends once Redis is back.
func TestSendWaitsOutUnavailable(t *testing.T) {
	failed := make(chan struct{}, 1)
	rd, creds := loginOnRedis(t, time.Minute, func(_ string, _ time.Duration, err error) {
		if err != nil {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
	})
	rd.Pause()
	exit := make(chan string, 1)
	go func() {
		var so, se strings.Builder
		code := run([]string{"send", "--credentials", creds, "rooms.x", "hi"}, nil, &so, &se)
		exit <- fmt.Sprintf("exit %d %s", code, se.String())
	}()
	receive(t, "a store call to fail", failed)
	rd.Resume()
	got := receive(t, "send to end", exit)
	if got != "exit 0 " {
		t.Fatalf("send while Redis did not answer, then did: %s", got)
	}
}

// TestListenOutlivesUnavailableRefresh: a listen whose in-band refresh
// fails because the server's Redis does not answer (stopped here; on a
// loaded machine, a call beyond RedisConfig.OpTimeout, which ended
// listens and senders of TestOneLoginManyProcesses) goes on with a new
// session from the login (spec.md §12.2), and prints what is sent once
// Redis is back.
func TestListenOutlivesUnavailableRefresh(t *testing.T) {
	failed := make(chan struct{}, 1)
	// The in-band refresh comes 2 s after the dial.
	rd, creds := loginOnRedis(t, 4*time.Second, func(_ string, _ time.Duration, err error) {
		if err != nil {
			select {
			case failed <- struct{}{}:
			default:
			}
		}
	})
	var lout, lerrb sigiltest.SyncBuffer
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	lerr := make(chan error, 1)
	go func() { lerr <- listen(ctx, []string{"--credentials", creds, "rooms.x"}, &lout, &lerrb) }()
	sigiltest.Eventually(t, "listen to subscribe", func() bool { return strings.Contains(lerrb.String(), "listening") })
	rd.Pause()
	receive(t, "a store call to fail", failed)
	rd.Resume()
	var out, errb strings.Builder
	sigiltest.Eventually(t, "listen to print what is sent once Redis is back", func() bool {
		select {
		case err := <-lerr:
			t.Fatalf("listen ended: %v", err)
		default:
		}
		if strings.Contains(lout.String(), "after the outage") {
			return true
		}
		// Until listen is subscribed on its new session, a message may
		// pass it by: send again.
		if code := run([]string{"send", "--credentials", creds, "rooms.x", "after the outage"}, nil, &out, &errb); code != 0 {
			t.Fatalf("send after Redis is back: %d %s", code, errb.String())
		}
		return false
	})
}

// senderProc is one `sigil send --stdin` running in this process.
type senderProc struct {
	stdin  feed
	stderr sigiltest.SyncBuffer
	done   chan struct{} // closed when it ended, with code
	code   int
	eof    sync.Once
}

// closeStdin ends the sender's stdin (EOF once it read every line).
func (p *senderProc) closeStdin() { p.eof.Do(func() { close(p.stdin.lines) }) }

// exited returns the sender's exit code once it ended.
func (p *senderProc) exited() (int, bool) {
	select {
	case <-p.done:
		return p.code, true
	default:
		return 0, false
	}
}

// feed is a sender's stdin: the lines sent on lines, then EOF once lines
// is closed. Giving it a line never blocks the test, whether or not the
// sender still reads (with an io.Pipe, a sender that had failed blocked
// the test's write until the 10-minute test timeout).
type feed struct {
	lines chan string
	rest  string
}

func (f *feed) Read(p []byte) (int, error) {
	if f.rest == "" {
		line, ok := <-f.lines
		if !ok {
			return 0, io.EOF
		}
		f.rest = line
	}
	n := copy(p, f.rest)
	f.rest = f.rest[n:]
	return n, nil
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

// receive waits, within the shared safety limit, for a value on ch.
func receive[T any](t *testing.T, what string, ch <-chan T) T {
	t.Helper()
	var v T
	sigiltest.Eventually(t, what, func() bool {
		select {
		case v = <-ch:
			return true
		default:
			return false
		}
	})
	return v
}
