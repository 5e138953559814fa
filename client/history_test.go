package client_test

import (
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// cutProxy forwards TCP connections to a server; down cuts every
// forwarded connection and refuses new ones until up.
type cutProxy struct {
	l      net.Listener
	target string

	mu       sync.Mutex
	down     bool
	conns    []net.Conn
	dropUp   bool // swallow what the client sends
	dropDown bool // swallow what the server sends
	dropped  int  // bytes swallowed
}

func newCutProxy(t testing.TB, target string) *cutProxy {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	p := &cutProxy{l: l, target: target}
	t.Cleanup(func() { l.Close(); p.setDown(true) })
	go p.serve()
	return p
}

// url is the proxy's WebSocket URL.
func (p *cutProxy) url() string { return "ws://" + p.l.Addr().String() + "/v1/ws" }

func (p *cutProxy) serve() {
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.down {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns = append(p.conns, in, out)
		p.mu.Unlock()
		go func() { p.pipe(out, in, &p.dropUp); out.Close() }()
		go func() { p.pipe(in, out, &p.dropDown); in.Close() }()
	}
}

// pipe copies from src to dst, swallowing what arrives while *drop.
func (p *cutProxy) pipe(dst, src net.Conn, drop *bool) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			d := *drop
			if d {
				p.dropped += n
			}
			p.mu.Unlock()
			if !d {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					return
				}
			}
		}
		if err != nil {
			return
		}
	}
}

// swallow starts swallowing the traffic of one direction (up: from the
// client).
func (p *cutProxy) swallow(up bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if up {
		p.dropUp = true
	} else {
		p.dropDown = true
	}
}

func (p *cutProxy) swallowed() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.dropped
}

func (p *cutProxy) setDown(down bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.down = down
	p.dropUp, p.dropDown, p.dropped = false, false, 0
	if down {
		for _, c := range p.conns {
			c.Close()
		}
		p.conns = nil
	}
}

// historyPolicy is the default policy with "rooms.>" keeping size
// publications.
func historyPolicy(t testing.TB, size int) *protocol.Policy {
	p, err := protocol.DefaultPolicy().WithHistory([]protocol.HistoryRule{{Channel: "rooms.>", Size: size}})
	must(t, err)
	return p
}

// dialVia dials user through the proxy.
func (e *env) dialVia(p *cutProxy, user string, mod func(*client.Options)) *client.Client {
	e.t.Helper()
	o := &client.Options{Tokens: client.Password(user, "pw"), Reconnect: fastReconnect,
		OnError: func(err error) { e.t.Logf("%s: OnError: %v", user, err) }}
	if mod != nil {
		mod(o)
	}
	c, err := client.Dial(ctxT(e.t), p.url(), o)
	must(e.t, err)
	e.t.Cleanup(func() { c.Close() })
	return c
}

type numbered struct {
	P int `json:"p"` // publisher
	N int `json:"n"` // its message number
}

// checkInOrder reads want messages from s and checks that their offsets
// are consecutive from first, that each verifies offline as evidence, and
// that each publisher's messages come in its order, none twice.
func checkInOrder(t *testing.T, s *client.Subscription, jwks *protocol.KeySet, first uint64, want int) []numbered {
	t.Helper()
	var got []numbered
	last := map[int]int{}
	for i := range want {
		m := next(t, s)
		if pos := m.Position(); pos.Offset != first+uint64(i) {
			t.Fatalf("message %d at offset %d, want %d", i, pos.Offset, first+uint64(i))
		}
		if !raceEnabled || i%10 == 0 {
			ev, err := protocol.VerifyDeliveryEvidence(jwks, m.Delivery)
			if err != nil || ev.Subject != m.From {
				t.Fatalf("message %d: evidence %v", i, err)
			}
		}
		var b numbered
		must(t, json.Unmarshal(m.Body, &b))
		if n, ok := last[b.P]; ok && b.N != n+1 {
			t.Fatalf("publisher %d: message %d after %d", b.P, b.N, n)
		}
		last[b.P] = b.N
		got = append(got, b)
	}
	return got
}

// TestRecoverMissedMessages: a subscriber's connection drops; 1,000
// messages (200 under the race detector) are published by two publishers
// while it is away, and more while it reconnects. Its subscription yields every one, in the stream's
// order, once, each verifying end to end; no gap is reported.
func TestRecoverMissedMessages(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = historyPolicy(t, 5000); c.SendQueue = 1024 })
	p := newCutProxy(t, strings.TrimPrefix(strings.TrimSuffix(e.url, "/v1/ws"), "ws://"))
	var gaps []client.Gap
	alice := e.dialVia(p, "alice", func(o *client.Options) { o.SubscriptionBuffer = 4096 })
	ctx := ctxT(t)
	s, err := alice.Subscribe(ctx, "rooms.rec", client.OnGap(func(g client.Gap) { gaps = append(gaps, g) }))
	must(t, err)
	pubs := []*client.Client{e.dial("bob", nil), e.dial("carol", nil)}
	must(t, pubs[0].Publish(ctx, "rooms.rec", numbered{0, 0}))
	checkInOrder(t, s, e.srv.KeySet(), 1, 1)

	p.setDown(true)
	away, during := 500, 100 // per publisher
	if raceEnabled {
		away, during = 100, 50
	}
	var wg sync.WaitGroup
	publish := func(pi, from, n int) {
		defer wg.Done()
		for i := range n {
			if err := pubs[pi].Publish(ctx, "rooms.rec", numbered{pi, from + i}); err != nil {
				t.Error(err)
				return
			}
		}
	}
	wg.Add(2)
	go publish(0, 1, away)
	go publish(1, 0, away)
	wg.Wait()
	// More while alice reconnects and recovers.
	wg.Add(2)
	go publish(0, 1+away, during)
	go publish(1, away, during)
	p.setDown(false)
	got := checkInOrder(t, s, e.srv.KeySet(), 2, 2*(away+during))
	wg.Wait()
	if len(got) != 2*(away+during) || len(gaps) != 0 || alice.Stats().Reconnects < 1 {
		t.Fatalf("got %d, gaps %v, reconnects %d", len(got), gaps, alice.Stats().Reconnects)
	}
	none(t, s, 100*time.Millisecond)
}

// TestRecoveryGapAfterRestart: the memory engine's streams end with the
// server; after a restart the client is told (OnGap, from the old epoch)
// and goes on with the new stream.
func TestRecoveryGapAfterRestart(t *testing.T) {
	e := newEnv(t, nil) // the default policy: rooms.> keeps 100
	gaps := make(chan client.Gap, 4)
	alice := e.dial("alice", nil)
	ctx := ctxT(t)
	s, err := alice.Subscribe(ctx, "rooms.g", client.OnGap(func(g client.Gap) { gaps <- g }))
	must(t, err)
	bob := e.dial("bob", nil)
	must(t, bob.Publish(ctx, "rooms.g", numbered{0, 1}))
	before := next(t, s).Position()
	e.restart()
	var g client.Gap
	select {
	case g = <-gaps:
	case <-ctx.Done():
		t.Fatal("no gap reported after the restart")
	}
	if g.Channel != "rooms.g" || g.From != before || g.To.Epoch == before.Epoch || g.To.Offset != 0 {
		t.Fatalf("gap %+v (before %v)", g, before)
	}
	must(t, bob.Publish(ctx, "rooms.g", numbered{0, 2}))
	if m := next(t, s); m.Position() != (client.Position{Epoch: g.To.Epoch, Offset: 1}) {
		t.Fatalf("after the restart: %v", m.Position())
	}
	if alice.Stats().Gaps != 1 {
		t.Fatalf("gaps %d", alice.Stats().Gaps)
	}
}

// TestSinceResumesAfterProcessRestart: a service saves the position of the
// last message it processed; a new client (a new process, a new session)
// subscribes with Since and receives exactly what came after. Without an
// OnGap, a position that cannot be recovered is reported to OnError.
func TestSinceResumesAfterProcessRestart(t *testing.T) {
	e := newEnv(t, nil)
	ctx := ctxT(t)
	bob := e.dial("bob", nil)
	a1 := e.dial("alice", nil)
	s1, err := a1.Subscribe(ctx, "rooms.since")
	must(t, err)
	for i := range 3 {
		must(t, bob.Publish(ctx, "rooms.since", numbered{0, i}))
	}
	var saved client.Position
	for range 3 {
		saved = next(t, s1).Position()
	}
	a1.Close()
	for i := 3; i < 8; i++ {
		must(t, bob.Publish(ctx, "rooms.since", numbered{0, i}))
	}
	a2 := e.dial("alice", nil)
	s2, err := a2.Subscribe(ctx, "rooms.since", client.Since(saved))
	must(t, err)
	for i := 3; i < 8; i++ {
		var b numbered
		m := next(t, s2)
		must(t, json.Unmarshal(m.Body, &b))
		if b.N != i || m.Position().Offset != uint64(i+1) {
			t.Fatalf("resumed: %+v at %v", b, m.Position())
		}
	}
	none(t, s2, 100*time.Millisecond)

	errs := make(chan error, 4)
	a3 := e.dial("alice", func(o *client.Options) { o.OnError = func(err error) { errs <- err } })
	_, err = a3.Subscribe(ctx, "rooms.since", client.Since(client.Position{Epoch: "gone", Offset: 3}))
	must(t, err)
	select {
	case err := <-errs:
		var ge *client.GapError
		if !errors.Is(err, client.ErrNotRecovered) || !errors.As(err, &ge) || ge.Gap.To.Offset != 8 {
			t.Fatalf("OnError %v", err)
		}
	case <-ctx.Done():
		t.Fatal("no gap reported")
	}
}

// TestClientHistory: Client.History pages a channel's history, each
// message verified end to end with its position; a session the policy
// does not let read history is refused.
func TestClientHistory(t *testing.T) {
	pol, err := protocol.NewPolicy([]protocol.Rule{
		{Action: protocol.ActPub, Channel: "rooms.>", Roles: []string{"user"}},
		{Action: protocol.ActHistory, Channel: "rooms.page", Roles: []string{"user"}},
		{Action: protocol.ActHistory, Channel: "announce.>", Roles: []string{"user"}},
	})
	must(t, err)
	pol, err = pol.WithHistory([]protocol.HistoryRule{{Channel: "rooms.>", Size: 20}})
	must(t, err)
	e := newEnv(t, func(c *server.Config) { c.Policy = pol })
	ctx := ctxT(t)
	bob := e.dial("bob", nil)
	for i := range 25 {
		must(t, bob.Publish(ctx, "rooms.page", numbered{0, i}))
	}
	page, err := bob.History(ctx, "rooms.page", client.HistoryQuery{Limit: 5})
	must(t, err)
	if page.Top != 25 || !page.More || len(page.Messages) != 5 || page.Messages[0].Position().Offset != 21 {
		t.Fatalf("last 5: top %d more %v n %d", page.Top, page.More, len(page.Messages))
	}
	before := page.Messages[0].Position().Offset
	older, err := bob.History(ctx, "rooms.page", client.HistoryQuery{Limit: 100, Before: &before})
	must(t, err)
	if len(older.Messages) != 15 || older.More || older.Messages[0].Position().Offset != 6 {
		t.Fatalf("older: n %d more %v", len(older.Messages), older.More)
	}
	for i, m := range older.Messages {
		var b numbered
		must(t, json.Unmarshal(m.Body, &b))
		if b.N != 5+i || m.From != "bob" {
			t.Fatalf("older %d: %+v from %s", i, b, m.From)
		}
	}
	if _, err := bob.History(ctx, "rooms.secret", client.HistoryQuery{}); !protocol.IsCode(err, protocol.CodeForbidden) {
		t.Fatalf("history the policy does not grant: %v", err)
	}
	if _, err := bob.History(ctx, "announce.x", client.HistoryQuery{}); !protocol.IsCode(err, protocol.CodeNotFound) {
		t.Fatalf("no history: %v", err)
	}
}
