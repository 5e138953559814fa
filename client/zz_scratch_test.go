package client_test

import (
	"testing"
	"time"

	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

func TestScratchRedisPauseDuringRefresh(t *testing.T) {
	rd := sigiltest.StartRedis(t)
	r, err := server.NewRedis(server.RedisConfig{URL: rd.URL, OpTimeout: 300 * time.Millisecond})
	must(t, err)
	t.Cleanup(r.Close)
	e := newEnvClock(t, func(c *server.Config) {
		c.Refresh = server.NewRedisRefreshStore(r, 0)
		c.SweepInterval = 20 * time.Millisecond
	})
	ctx := ctxT(t)
	l, err := client.LogIn(ctx, &client.TokenRequest{BaseURL: httpBase(e.url), HTTPClient: e.hs.Client()}, "alice", "pw")
	must(t, err)
	c := e.dial("alice", func(o *client.Options) { o.Tokens = client.LoginSessions(*l) })
	tok := c.Token()
	rd.Pause()
	e.clock.Advance(tok.Expiry.Sub(e.clock.Now()) - 30*time.Second)
	time.Sleep(2 * time.Second)
	rd.Resume()
	t.Logf("err after pause: %v; stats %+v", c.Err(), c.Stats())
	err = c.Publish(ctx, "rooms.x", map[string]string{"text": "x"})
	t.Logf("publish: %v", err)
}
