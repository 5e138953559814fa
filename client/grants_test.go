package client_test

import (
	"testing"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// TestGrants: the welcome announces the session's rights from the
// server's policy (spec.md §8.3); Can agrees with what the server then
// accepts and refuses over the same socket, and a new policy is announced
// on the next connection.
func TestGrants(t *testing.T) {
	e := newEnv(t, nil)
	alice := e.dial("alice", nil)
	ctx := ctxT(t)
	g := alice.Grants()
	if len(g) == 0 {
		t.Fatal("welcome announced no grants")
	}
	if !g.Allows(protocol.ActDM, "") {
		t.Errorf("grants %v do not allow dm", g)
	}
	for _, c := range []struct {
		act, ch string
		can     bool
	}{
		{protocol.ActPub, "rooms.lobby", true},
		{protocol.ActPub, "announce.news", false},
		{protocol.ActSub, "announce.news", true},
		{protocol.ActSub, "secret.x", false},
	} {
		if got := alice.Can(c.act, c.ch); got != c.can {
			t.Errorf("Can(%s, %s) = %v, want %v (grants %v)", c.act, c.ch, got, c.can, g)
		}
		var err error
		switch c.act {
		case protocol.ActPub:
			err = alice.Publish(ctx, c.ch, text{"hi"})
		case protocol.ActSub:
			var s interface{ Close() error }
			s, err = alice.Subscribe(ctx, c.ch)
			if err == nil {
				must(t, s.Close())
			}
		}
		if refused := protocol.CodeOf(err) == protocol.CodeForbidden; refused == c.can {
			t.Errorf("%s %s: Can=%v but the server answered %v", c.act, c.ch, c.can, err)
		}
	}

	// A policy that lets every user publish in announce.>: announced by
	// the welcome of a new server, and Can follows it.
	open, err := protocol.NewPolicy(append(protocol.DefaultPolicy().Rules(), protocol.Rule{Action: protocol.ActPub, Channel: "announce.>", Roles: []string{"user"}}))
	must(t, err)
	e2 := newEnv(t, func(c *server.Config) { c.Policy = open })
	bob := e2.dial("bob", nil)
	if !bob.Can(protocol.ActPub, "announce.news") {
		t.Errorf("bob's grants %v do not allow pub on announce.news", bob.Grants())
	}
	must(t, bob.Publish(ctx, "announce.news", text{"news"}))
}
