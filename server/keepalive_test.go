package server_test

import (
	"sync/atomic"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// TestKeepalivePingsEverySession: the sweeper's ping wheel pings every
// idle session again and again, round after round of the wheel (here 5
// slots of 10 ms for a 30 ms interval, so each session goes round it many
// times), and no session is left out or pinged only once.
func TestKeepalivePingsEverySession(t *testing.T) {
	e := newEnv(t, func(c *server.Config) {
		c.PingInterval = 30 * time.Millisecond
		c.PongTimeout = 10 * time.Second
		c.SweepInterval = 10 * time.Millisecond
	})
	const n, rounds = 6, 10
	pings := make([]atomic.Int64, n)
	for i := range n {
		c := e.login([]string{"alice", "bob", "carol"}[i%3]).connect()
		c.ws.SetPingHandler(func(string) error {
			pings[i].Add(1)
			return nil // no pong: the session stays idle on the server's side
		})
		go func() {
			for {
				if _, _, err := c.ws.ReadMessage(); err != nil {
					return
				}
			}
		}()
	}
	sigiltest.Eventually(t, "every session pinged 10 times", func() bool {
		for i := range pings {
			if pings[i].Load() < rounds {
				return false
			}
		}
		return true
	})
	if got := len(e.srv.Sessions()); got != n {
		t.Fatalf("%d sessions, want %d", got, n)
	}
}
