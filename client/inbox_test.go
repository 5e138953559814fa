package client_test

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// inboxPolicy is the default policy with every user's inbox keeping size
// direct messages (spec.md §20.11).
func inboxPolicy(t testing.TB, size int) *protocol.Policy {
	p, err := protocol.DefaultPolicy().WithHistory([]protocol.HistoryRule{
		{Channel: "rooms.>", Size: 100}, {Channel: protocol.InboxPattern, Size: size}})
	must(t, err)
	return p
}

// readDMs reads want direct messages from alice off the inbox and checks
// that their bodies count up from first, their offsets are consecutive
// from off, and each verifies offline as evidence. It returns the last
// one's position.
func readDMs(t *testing.T, inbox *client.Subscription, jwks *protocol.KeySet, first int, off uint64, want int) client.Position {
	t.Helper()
	var last client.Position
	for i := range want {
		m := next(t, inbox)
		var b numbered
		must(t, json.Unmarshal(m.Body, &b))
		if b.N != first+i || m.Position().Offset != off+uint64(i) || m.From != "alice" || m.To == "" {
			t.Fatalf("dm %d: n=%d at %v from %q", i, b.N, m.Position(), m.From)
		}
		ev, err := protocol.VerifyDeliveryEvidence(jwks, m.Delivery)
		if err != nil || ev.Subject != "alice" {
			t.Fatalf("dm %d: evidence %v", i, err)
		}
		last = m.Position()
	}
	return last
}

// waitGone waits until the server has no session of user.
func waitGone(t *testing.T, e *env, user string) {
	sigiltest.Eventually(t, user+"'s sessions to end", func() bool {
		for _, si := range e.srv.Sessions() {
			if si.Subject == user {
				return false
			}
		}
		return true
	})
}

// TestInboxRecoversMissedDMs: bob's connection drops; alice's direct
// messages to him are accepted while he has no session; when his client
// reconnects, its Inbox yields every one of them, in order, once, each
// verifying end to end, then the live ones, with no gap. A new process
// resumes a saved position with Options.InboxSince.
func TestInboxRecoversMissedDMs(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Policy = inboxPolicy(t, 1000) })
	p := newCutProxy(t, strings.TrimPrefix(strings.TrimSuffix(e.url, "/v1/ws"), "ws://"))
	ctx := ctxT(t)
	gaps := make(chan client.Gap, 4)
	bob := e.dialVia(p, "bob", nil)
	inbox := bob.Inbox(client.OnGap(func(g client.Gap) { gaps <- g }))
	alice := e.dial("alice", nil)
	must(t, alice.Send(ctx, "bob", numbered{0, 0}))
	readDMs(t, inbox, e.srv.KeySet(), 0, 1, 1)

	p.setDown(true)
	waitGone(t, e, "bob")
	const n = 50
	for i := 1; i <= n; i++ {
		must(t, alice.Send(ctx, "bob", numbered{0, i})) // accepted: stored
	}
	p.setDown(false)
	readDMs(t, inbox, e.srv.KeySet(), 1, 2, n)
	must(t, alice.Send(ctx, "bob", numbered{0, n + 1}))
	last := readDMs(t, inbox, e.srv.KeySet(), n+1, n+2, 1) // the live one next: nothing twice
	if bob.Stats().Reconnects < 1 || len(gaps) != 0 {
		t.Fatalf("reconnects %d, gaps %d", bob.Stats().Reconnects, len(gaps))
	}
	none(t, inbox, 100*time.Millisecond)

	// A new process of bob, away meanwhile, resumes after the saved
	// position.
	bob.Close()
	waitGone(t, e, "bob")
	for i := n + 2; i < n+5; i++ {
		must(t, alice.Send(ctx, "bob", numbered{0, i}))
	}
	bob2 := e.dial("bob", func(o *client.Options) { o.InboxSince = &last })
	readDMs(t, bob2.Inbox(), e.srv.KeySet(), n+2, last.Offset+1, 3)

	// A position of a lost epoch is a gap, reported to OnError.
	errs := make(chan error, 4)
	bob3 := e.dial("bob", func(o *client.Options) {
		o.InboxSince = &client.Position{Epoch: "gone", Offset: 2}
		o.OnError = func(err error) { errs <- err }
	})
	select {
	case err := <-errs:
		var ge *client.GapError
		if !errors.As(err, &ge) || ge.Gap.Channel != "" || ge.Gap.To.Offset != last.Offset+3 {
			t.Fatalf("OnError %v", err)
		}
	case <-ctx.Done():
		t.Fatal("no gap reported")
	}
	must(t, alice.Send(ctx, "bob", numbered{0, n + 5}))
	readDMs(t, bob3.Inbox(), e.srv.KeySet(), n+5, last.Offset+4, 1)

	// What the gap left out can be paged, each message verified.
	page, err := bob3.InboxHistory(ctx, client.HistoryQuery{Limit: 3})
	must(t, err)
	if len(page.Messages) != 3 || page.Top != last.Offset+4 || !page.More {
		t.Fatalf("inbox page: %d messages, top %d, more %v", len(page.Messages), page.Top, page.More)
	}
	for i, m := range page.Messages {
		var b numbered
		must(t, json.Unmarshal(m.Body, &b))
		if b.N != n+3+i || m.Position().Offset != last.Offset+2+uint64(i) || m.From != "alice" {
			t.Fatalf("page %d: n=%d at %v", i, b.N, m.Position())
		}
	}
}
