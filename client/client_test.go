package client_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

type text struct {
	Text string `json:"text"`
}

func TestPublishSubscribe(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	bob := e.dial("bob", func(o *client.Options) { o.Algorithm = protocol.ES256 })
	ctx := ctxT(t)
	as, err := alice.Subscribe(ctx, "rooms.lobby")
	must(t, err)
	bs, err := bob.Subscribe(ctx, "rooms.lobby")
	must(t, err)

	must(t, alice.Publish(ctx, "rooms.lobby", text{"hello bob"}))
	for _, s := range []*client.Subscription{as, bs} {
		m := next(t, s)
		var b text
		must(t, m.Decode(&b))
		if m.From != "alice" || b.Text != "hello bob" || m.Channel != "rooms.lobby" || m.FromServer {
			t.Fatalf("got %+v %s", m, m.Body)
		}
		if m.SenderKey == nil || len(m.Frame) == 0 || time.Since(m.Time) > time.Minute {
			t.Fatalf("missing sender evidence: %+v", m)
		}
	}
	must(t, bob.Publish(ctx, "rooms.lobby", json.RawMessage(`{"text":"hi alice"}`)))
	if m := next(t, as); m.From != "bob" || m.SenderKey.Algorithm() != protocol.ES256 {
		t.Fatalf("from %s alg %s", m.From, m.SenderKey.Algorithm())
	}
	next(t, bs)

	// The server application publishes too: checked against the JWKS.
	must(t, e.srv.Publish(ctx, "rooms.lobby", text{"motd"}))
	if m := next(t, as); !m.FromServer || m.From != "server" || string(m.Body) != `{"text":"motd"}` {
		t.Fatalf("server publish: %+v %s", m, m.Body)
	}
	next(t, bs)

	// After Close, bob's subscription ends and he gets nothing more.
	must(t, bs.Close())
	if _, ok := <-bs.C(); ok {
		t.Fatal("closed subscription still yields")
	}
	must(t, alice.Publish(ctx, "rooms.lobby", text{"bye"}))
	next(t, as)
	if st := alice.Stats(); st.Rejected != 0 {
		t.Fatalf("rejected %d", st.Rejected)
	}
}

func TestRefusalsAreTyped(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	ctx := ctxT(t)

	err := alice.Publish(ctx, "announce.news", text{"x"}) // needs role announcer
	var pe *protocol.Error
	if !errors.As(err, &pe) || pe.Code != protocol.CodeForbidden {
		t.Fatalf("want forbidden, got %v", err)
	}
	if _, err := alice.Subscribe(ctx, "secret.room"); protocol.CodeOf(err) != protocol.CodeForbidden {
		t.Fatalf("want forbidden subscribe, got %v", err)
	}
	if err := alice.Send(ctx, "nobody", text{"x"}); protocol.CodeOf(err) != protocol.CodeNotFound {
		t.Fatalf("want not_found, got %v", err)
	}
	// The session is still fine.
	must(t, alice.Ping(ctx))
}

func TestDirectMessages(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	bob := e.dial("bob", nil)
	inbox := bob.Inbox()
	ctx := ctxT(t)
	must(t, alice.Send(ctx, "bob", text{"psst"}))
	m := next(t, inbox)
	if m.From != "alice" || m.To != "bob" || string(m.Body) != `{"text":"psst"}` || m.Channel != "" {
		t.Fatalf("direct: %+v %s", m, m.Body)
	}
	none(t, alice.Inbox(), 100*time.Millisecond)
}

// A direct message to a client with no inbox open is dropped, and counted:
// the cause of a cluster test's lost delivery (it opened the inbox after the
// send) and a trap for any caller, so the count makes it visible.
func TestDirectMessageWithoutInboxIsCounted(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	bob := e.dial("bob", nil)
	ctx := ctxT(t)
	must(t, alice.Send(ctx, "bob", text{"early"}))
	sigiltest.Eventually(t, "the dropped direct message to be counted", func() bool { return bob.Stats().Unrouted > 0 })
	if st := bob.Stats(); st.Delivered != 0 || st.Unrouted != 1 {
		t.Fatalf("stats %+v", st)
	}
	inbox := bob.Inbox()
	must(t, alice.Send(ctx, "bob", text{"late"}))
	if m := next(t, inbox); string(m.Body) != `{"text":"late"}` {
		t.Fatalf("inbox got %s", m.Body)
	}
}

func TestCall(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.Policy, _ = protocol.NewPolicy(append(protocol.DefaultPolicy().Rules(),
			protocol.Rule{Action: "math.add", Roles: []string{"user"}},
			protocol.Rule{Action: "math.fail", Roles: []string{"user"}},
			protocol.Rule{Action: "math.none", Roles: []string{"user"}},
			protocol.Rule{Action: "math.slow", Roles: []string{"user"}}))
	})
	e.srv.Handle("math.add", func(ctx context.Context, m *server.Message) (any, error) {
		var req struct{ A, B int }
		if err := json.Unmarshal(m.Body, &req); err != nil {
			return nil, &protocol.Error{Code: protocol.CodeBadRequest, Message: "want {A,B}"}
		}
		return map[string]any{"sum": req.A + req.B, "by": m.Session.Subject}, nil
	})
	e.srv.Handle("math.fail", func(ctx context.Context, m *server.Message) (any, error) {
		return nil, errors.New("boom")
	})
	alice := e.dial("alice", nil)
	ctx := ctxT(t)

	var resp struct {
		Sum int    `json:"sum"`
		By  string `json:"by"`
	}
	must(t, alice.Call(ctx, "math.add", map[string]int{"A": 2, "B": 40}, &resp))
	if resp.Sum != 42 || resp.By != "alice" {
		t.Fatalf("resp %+v", resp)
	}
	var pe *protocol.Error
	if err := alice.Call(ctx, "math.fail", nil, nil); !errors.As(err, &pe) || pe.Code != protocol.CodeAppError {
		t.Fatalf("want app_error, got %v", err)
	}
	if err := alice.Call(ctx, "math.none", nil, nil); protocol.CodeOf(err) != protocol.CodeUnknownAction {
		t.Fatalf("want unknown_action, got %v", err)
	}
	if err := alice.Call(ctx, "math.add", "not an object", nil); protocol.CodeOf(err) != protocol.CodeBadRequest {
		t.Fatalf("want bad_request, got %v", err)
	}
	// The ctx deadline bounds the wait: the handler holds the call until
	// the test releases it, so only the deadline can end it.
	entered, release := make(chan struct{}), make(chan struct{})
	e.srv.Handle("math.slow", func(ctx context.Context, m *server.Message) (any, error) {
		close(entered)
		<-release
		return map[string]int{"sum": -1}, nil
	})
	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	if err := alice.Call(short, "math.slow", nil, &resp); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("want the deadline, got %v", err)
	}
	select { // the server did receive the call
	case <-entered:
	case <-time.After(30 * time.Second):
		t.Fatal("the call never reached the handler")
	}
	// The late reply, once released, is ignored, and the next call pairs
	// correctly: the server answers in order, the late reply first.
	close(release)
	must(t, alice.Call(ctx, "math.add", map[string]int{"A": 1, "B": 1}, &resp))
	if resp.Sum != 2 {
		t.Fatalf("resp %+v", resp)
	}
}

func TestPresence(t *testing.T) {
	e := newEnv(t, nil)
	events := make(chan client.PresenceEvent, 16)
	alice := e.dial("alice", func(o *client.Options) {
		o.OnPresence = func(ev client.PresenceEvent) { events <- ev }
	})
	bob := e.dial("bob", nil)
	ctx := ctxT(t)
	_, err := alice.Subscribe(ctx, "rooms.a")
	must(t, err)
	bs, err := bob.Subscribe(ctx, "rooms.a")
	must(t, err)
	members, err := alice.Presence(ctx, "rooms.nobody")
	must(t, err)
	if members == nil || len(members) != 0 {
		t.Fatalf("members of an empty channel: %#v", members)
	}
	members, err = alice.Presence(ctx, "rooms.a")
	must(t, err)
	slices.Sort(members)
	if !slices.Equal(members, []string{"alice", "bob"}) {
		t.Fatalf("members %v", members)
	}
	must(t, bs.Close())
	deadline := time.Now().Add(3 * time.Second)
	for {
		members, err = alice.Presence(ctx, "rooms.a")
		must(t, err)
		if slices.Equal(members, []string{"alice"}) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after unsub: %v", members)
		}
		time.Sleep(20 * time.Millisecond)
	}
	// OnPresence saw alice herself join and bob join (in either order:
	// each join is broadcast by its own connection after its reply), then
	// bob leave.
	var got []string
	for len(got) < 3 {
		select {
		case ev := <-events:
			if ev.Channel != "rooms.a" || ev.Time.IsZero() {
				t.Fatalf("event %+v", ev)
			}
			got = append(got, fmt.Sprintf("%s:%v", ev.Subject, ev.Joined))
		case <-time.After(3 * time.Second):
			t.Fatalf("presence events so far: %v", got)
		}
	}
	joins := slices.Sorted(slices.Values(got[:2]))
	if !slices.Equal(joins, []string{"alice:true", "bob:true"}) || got[2] != "bob:false" {
		t.Fatalf("presence events %v, want alice and bob joining, then bob leaving", got)
	}
}

func TestEncryption(t *testing.T) {
	e := newEnv(t, nil)
	enc := func(o *client.Options) { o.Encrypt = true }
	alice := e.dial("alice", enc)
	bob := e.dial("bob", enc)
	carol := e.dial("carol", nil) // no encryption: cannot read sealed bodies
	ctx := ctxT(t)
	if err := alice.Publish(ctx, "rooms.sealed", text{"x"}); !errors.Is(err, client.ErrNoChannelKey) {
		t.Fatalf("want ErrNoChannelKey, got %v", err)
	}
	as, err := alice.Subscribe(ctx, "rooms.sealed")
	must(t, err)
	bs, err := bob.Subscribe(ctx, "rooms.sealed")
	must(t, err)
	cs, err := carol.Subscribe(ctx, "rooms.sealed")
	must(t, err)
	must(t, alice.Publish(ctx, "rooms.sealed", text{"secret"}))
	for _, s := range []*client.Subscription{as, bs} {
		m := next(t, s)
		if !m.Encrypted || string(m.Body) != `{"text":"secret"}` || m.From != "alice" {
			t.Fatalf("sealed: %+v %s", m, m.Body)
		}
	}
	if m := next(t, cs); !m.Encrypted || m.Body != nil || m.From != "alice" {
		t.Fatalf("carol should see a verified but unreadable message: %+v", m)
	}
	inbox := bob.Inbox()
	must(t, alice.Send(ctx, "bob", text{"dm secret"}))
	if m := next(t, inbox); !m.Encrypted || string(m.Body) != `{"text":"dm secret"}` {
		t.Fatalf("sealed dm: %+v %s", m, m.Body)
	}
	// A member leaving rotates the channel key; publishing keeps working.
	must(t, cs.Close())
	time.Sleep(100 * time.Millisecond)
	must(t, bob.Publish(ctx, "rooms.sealed", text{"after rotation"}))
	if m := next(t, as); string(m.Body) != `{"text":"after rotation"}` {
		t.Fatalf("after rotation: %s", m.Body)
	}
}

// TestHundredGoroutinesPublish: 100 goroutines publish through one client;
// every message arrives once, in no particular order. It waits on
// progress, not on a time budget: it fails only if nothing happens for
// stallLimit, however long the whole takes on a loaded machine.
func TestHundredGoroutinesPublish(t *testing.T) {
	const stallLimit = 30 * time.Second
	e := newEnv(t, func(c *server.Config) { c.SendQueue = 4096 })
	alice := e.dial("alice", nil)
	bob := e.dial("bob", func(o *client.Options) { o.SubscriptionBuffer = 4096 })
	ctx, stalled := progressContext(t, stallLimit)
	bs, err := bob.Subscribe(ctx, "rooms.load")
	must(t, err)
	const workers, each = 100, 10
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		go func() {
			for i := 0; i < each; i++ {
				if err := alice.Publish(ctx, "rooms.load", map[string]int{"w": w, "i": i}); err != nil {
					errs <- err
					return
				}
				stalled.progress()
			}
			errs <- nil
		}()
	}
	for w := 0; w < workers; w++ {
		must(t, <-errs)
	}
	seen := map[string]bool{}
	for len(seen) < workers*each {
		m, err := bs.Next(ctx)
		if err != nil {
			t.Fatalf("after %d messages: %v", len(seen), err)
		}
		stalled.progress()
		if seen[string(m.Body)] {
			t.Fatalf("duplicate %s", m.Body)
		}
		seen[string(m.Body)] = true
	}
	if st := alice.Stats(); st.Rejected != 0 {
		t.Fatalf("rejected %d", st.Rejected)
	}
	if tok := alice.Token(); tok.Seq < workers*each {
		t.Fatalf("seq %d", tok.Seq)
	}
}

// stallWatch cancels a context when no progress was reported for a while.
type stallWatch struct{ ch chan struct{} }

func (s stallWatch) progress() {
	select {
	case s.ch <- struct{}{}:
	default: // a report is pending already
	}
}

// progressContext returns a context that is canceled when limit passes
// without a call to progress, and at the end of the test.
func progressContext(t *testing.T, limit time.Duration) (context.Context, stallWatch) {
	ctx, cancel := context.WithCancelCause(context.Background())
	s := stallWatch{ch: make(chan struct{}, 1)}
	done := make(chan struct{})
	t.Cleanup(func() { close(done); cancel(nil) })
	go func() {
		timer := time.NewTimer(limit)
		defer timer.Stop()
		for {
			select {
			case <-s.ch:
				timer.Reset(limit)
			case <-timer.C:
				cancel(fmt.Errorf("no progress for %v", limit))
				return
			case <-done:
				return
			}
		}
	}()
	return ctx, s
}

// downRevocations fails every check while down is set, as a revocation
// store on a network that went away.
type downRevocations struct {
	*server.MemoryRevocationStore
	down atomic.Bool
}

func (r *downRevocations) IsRevoked(ctx context.Context, jti, sub string, iat time.Time) (bool, error) {
	if r.down.Load() {
		return false, errors.New("store unreachable")
	}
	return r.MemoryRevocationStore.IsRevoked(ctx, jti, sub, iat)
}

// TestStoreUnavailable: a failing store reaches the client as the code
// unavailable: a refused Publish (the session stays), and a refused hello
// (close 4006: Dial fails; a reconnecting client would back off).
func TestStoreUnavailable(t *testing.T) {
	rev := &downRevocations{MemoryRevocationStore: server.NewMemoryRevocationStore()}
	e := newEnv(t, func(c *server.Config) { c.Revocations = rev })
	alice := e.dial("alice", nil)
	ctx := ctxT(t)
	rev.down.Store(true)
	if err := alice.Publish(ctx, "rooms.x", text{"x"}); protocol.CodeOf(err) != protocol.CodeUnavailable {
		t.Fatalf("want unavailable, got %v", err)
	}
	_, err := client.Dial(ctx, e.url, &client.Options{Tokens: client.Password("bob", "pw")})
	var ce *client.CloseError
	if !errors.As(err, &ce) || ce.Code != protocol.CloseServerError || protocol.CodeOf(err) != protocol.CodeUnavailable {
		t.Fatalf("want a 4006 CloseError with unavailable, got %v", err)
	}
	rev.down.Store(false)
	must(t, alice.Publish(ctx, "rooms.x", text{"x"}))
	e.dial("bob", nil)
}
