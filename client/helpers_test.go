package client_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

func testUsers() *server.UsersDoc {
	pwHash := sigiltest.PasswordHash()
	return &server.UsersDoc{Users: []server.User{
		{Name: "alice", Hash: pwHash, Roles: []string{"user"}},
		{Name: "bob", Hash: pwHash, Roles: []string{"user"}},
		{Name: "carol", Hash: pwHash, Roles: []string{"user"}},
	}}
}

// env is a real Sigil server on a random loopback port.
type env struct {
	t     testing.TB
	srv   *server.Server
	hs    *httptest.Server
	url   string // ws://127.0.0.1:port/v1/ws
	keys  []*protocol.PrivateKey
	mod   func(*server.Config)
	clock *sigiltest.Clock // the clock of the server and of the clients dial makes, if set
}

// newEnvClock is newEnv with a running sigiltest.Clock shared by the server (across
// restarts) and the clients that dial makes.
func newEnvClock(t testing.TB, mod func(*server.Config)) *env {
	clk := sigiltest.NewClock()
	e := newEnv(t, func(c *server.Config) {
		c.Now = clk.Now
		if mod != nil {
			mod(c)
		}
	})
	e.clock = clk
	return e
}

func newEnv(t testing.TB, mod func(*server.Config)) *env {
	t.Helper()
	k, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, keys: []*protocol.PrivateKey{k}, mod: mod}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	e.start(l)
	e.url = "ws://" + l.Addr().String() + "/v1/ws"
	t.Cleanup(e.stop)
	return e
}

// start runs a new server with the env's keys on l.
func (e *env) start(l net.Listener) {
	e.t.Helper()
	cfg := server.Config{
		Keys:          e.keys,
		Authenticator: server.StaticUsers{Doc: testUsers()},
		Logger:        sigiltest.QuietLogger(),
		HelloTimeout:  10 * time.Second,
	}
	if e.mod != nil {
		e.mod(&cfg)
	}
	srv, err := server.New(cfg)
	if err != nil {
		e.t.Fatal(err)
	}
	hs := httptest.NewUnstartedServer(srv.Handler())
	hs.Listener.Close()
	hs.Listener = l
	hs.Start()
	e.srv, e.hs = srv, hs
}

func (e *env) stop() {
	if e.srv == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = e.srv.Shutdown(ctx)
	e.hs.Close()
	e.srv, e.hs = nil, nil
}

// restart shuts the server down (clients see 1001) and starts a new one on
// the same address with the same keys.
func (e *env) restart() {
	e.t.Helper()
	addr := e.hs.Listener.Addr().String()
	e.stop()
	e.restartStopped(addr)
}

var fastReconnect = &client.ReconnectPolicy{Min: 20 * time.Millisecond, Max: 200 * time.Millisecond}

// dial connects user with password "pw".
func (e *env) dial(user string, mod func(*client.Options)) *client.Client {
	e.t.Helper()
	o := &client.Options{Tokens: client.Password(user, "pw"), Reconnect: fastReconnect,
		OnError: func(err error) { e.t.Logf("%s: OnError: %v", user, err) }}
	if e.clock != nil {
		o.Now = e.clock.Now
	}
	if mod != nil {
		mod(o)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := client.Dial(ctx, e.url, o)
	if err != nil {
		e.t.Fatalf("dial %s: %v", user, err)
	}
	e.t.Cleanup(func() { c.Close() })
	return c
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// next reads one message or fails.
func next(t testing.TB, s *client.Subscription) *client.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	m, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("next on %q: %v", s.Channel(), err)
	}
	return m
}

// none checks that nothing arrives for a while.
func none(t testing.TB, s *client.Subscription, d time.Duration) {
	t.Helper()
	select {
	case m, ok := <-s.C():
		if ok {
			t.Fatalf("unexpected message on %q from %s: %s", s.Channel(), m.From, m.Body)
		}
	case <-time.After(d):
	}
}

// states records state changes.
type states struct {
	mu sync.Mutex
	l  []client.State
	ch chan client.State
	t  testing.TB
}

func newStates() *states { return &states{ch: make(chan client.State, 64)} }

func (s *states) record(st client.State, err error) {
	if s.t != nil {
		s.t.Logf("state %s: %v", st, err)
	}
	s.mu.Lock()
	s.l = append(s.l, st)
	s.mu.Unlock()
	select {
	case s.ch <- st:
	default:
	}
}

func (s *states) list() []client.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]client.State(nil), s.l...)
}

// wait waits for state want.
func (s *states) wait(t testing.TB, want client.State, d time.Duration) {
	t.Helper()
	deadline := time.After(d)
	for {
		select {
		case st := <-s.ch:
			if st == want {
				return
			}
		case <-deadline:
			t.Fatalf("state %s not reached; saw %v", want, s.list())
		}
	}
}

func httpBase(wsURL string) string {
	return "http" + strings.TrimSuffix(strings.TrimPrefix(wsURL, "ws"), "/v1/ws")
}

var _ = http.StatusOK

// sharedRefresh keeps refresh tokens across server restarts, as a
// persistent store would.
var sharedRefresh = server.NewMemoryRefreshStore(nil)

// restartStopped starts a new server on addr after stop.
func (e *env) restartStopped(addr string) {
	e.t.Helper()
	var l net.Listener
	var err error
	for i := 0; i < 50; i++ {
		if l, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	e.start(l)
}
