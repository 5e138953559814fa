package server_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// adminWithProof sends GET /v1/admin/sessions to url with c's token and
// the given proof, and returns the status.
func adminWithProof(t *testing.T, url string, c *client, proof []byte) int {
	t.Helper()
	r, _ := http.NewRequest(http.MethodGet, url+"/v1/admin/sessions", strings.NewReader(""))
	r.Header.Set("Authorization", "Bearer "+c.tok.Token)
	r.Header.Set(server.ProofHeader, string(proof))
	resp, err := http.DefaultClient.Do(r)
	must(t, err)
	resp.Body.Close()
	return resp.StatusCode
}

// With Config.Redis, an admin proof accepted by one node is a replay on
// every other (its seq and id are checked in Redis).
func TestAdminProofReplayAcrossNodes(t *testing.T) {
	cl := newClusterEnv(t, 2, sigiltest.StartRedis(t).URL, "adm:", nil)
	a, b := cl.nodes[0], cl.nodes[1]
	adm := a.login("admin")
	ab, _ := json.Marshal(server.AdminBody{JWK: adm.jwk, Req: json.RawMessage(`{}`)})
	proof := adm.sign(&protocol.Envelope{Action: "admin.sessions", Body: ab})
	if st := adminWithProof(t, a.url, adm, proof); st != 200 {
		t.Fatalf("proof on node a: %d", st)
	}
	if st := adminWithProof(t, b.url, adm, proof); st != 401 {
		t.Fatalf("the same proof on node b: %d, want 401 (replay)", st)
	}
	next := adm.sign(&protocol.Envelope{Action: "admin.sessions", Body: ab})
	if st := adminWithProof(t, b.url, adm, next); st != 200 {
		t.Fatalf("a new proof on node b: %d", st)
	}
}

// rawRedis is a plain client of rs, for what a test does behind the
// nodes' backs.
func rawRedis(t *testing.T, rs *sigiltest.Redis) rueidis.Client {
	t.Helper()
	c, err := rueidis.NewClient(rueidis.ClientOption{InitAddress: []string{rs.Addr}, DisableCache: true})
	must(t, err)
	t.Cleanup(c.Close)
	return c
}

// The admin API sees every node: the session list has the sessions of
// every node, with their node's name; a kick on one node closes the
// session's connections on another with 4004 (and counts them); with
// Redis away the API answers 503, and nothing is closed.
func TestAdminAcrossNodes(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	cl := newClusterEnv(t, 3, rs.URL, "adm:", nil)
	adm := cl.login(0, "admin")
	alice := cl.login(1, "alice").connect()
	bob := cl.login(2, "bob").connect()
	var list struct{ Sessions []server.SessionInfo }
	sigiltest.Eventually(t, "the session list to show both sessions", func() bool {
		st, data := adm.admin("GET", "sessions", "")
		must(t, json.Unmarshal(data, &list))
		return st == 200 && len(list.Sessions) == 2
	})
	nodes := map[string]string{}
	for _, si := range list.Sessions {
		nodes[si.Subject] = si.Node
	}
	if nodes["alice"] != "node-b" || nodes["bob"] != "node-c" {
		t.Fatalf("sessions by node: %v", nodes)
	}

	st, data := adm.admin("POST", "kick", `{"sid":"`+alice.tok.Session+`"}`)
	if st != 200 || string(data) != "{\"closed\":1}\n" {
		t.Fatalf("kick: %d %s", st, data)
	}
	alice.expectClose(protocol.CloseKicked)
	bob.ping()
	if st, _ := adm.admin("POST", "kick", `{"sid":"00000000-0000-4000-8000-000000000000"}`); st != 404 {
		t.Fatalf("kick of an unknown sid: %d", st)
	}

	rs.Stop()
	for _, op := range [][2]string{{"GET", "sessions"}, {"POST", "kick"}, {"POST", "revoke"}} {
		body := map[string]string{"sessions": "", "kick": `{"sid":"` + bob.tok.Session + `"}`, "revoke": `{"sub":"bob"}`}[op[1]]
		st, data = adm.admin(op[0], op[1], body)
		var ae apiErr
		must(t, json.Unmarshal(data, &ae))
		if st != 503 || ae.Error != server.ErrCodeUnavailable {
			t.Fatalf("%s with Redis stopped: %d %s", op[1], st, data)
		}
	}
	rs.Restart()
	bob.pingUntilAnswered() // still connected: nothing was kicked
}

// pingUntilAnswered pings until the server answers pong rather than
// unavailable (a shared store coming back), failing on anything else.
func (c *client) pingUntilAnswered() {
	c.t.Helper()
	sigiltest.Eventually(c.t, "a pong", func() bool {
		env := c.send(&protocol.Envelope{Action: protocol.ActPing, Corr: "p"})
		m := c.recv()
		if m.Action == protocol.ActPong && m.Corr == env.Corr {
			return true
		}
		var eb protocol.ErrorBody
		if m.Action != protocol.ActError || json.Unmarshal(m.Body, &eb) != nil || eb.Code != protocol.CodeUnavailable {
			c.t.Fatalf("want pong or unavailable, got %s %s", m.Action, m.Body)
		}
		time.Sleep(20 * time.Millisecond)
		return false
	})
}

// A node that may have missed kick notices (its subscription to them was
// lost) looks its sessions up when it subscribes again, and closes those
// that were kicked meanwhile.
func TestKickResyncAfterLostSubscription(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	b := newClusterEnv(t, 1, rs.URL, "adm:", nil).nodes[0]
	alice := b.login("alice").connect()
	bob := b.login("bob").connect()
	raw := rawRedis(t, rs)
	ctx := context.Background()
	// A kick whose notice b never saw: the key alone.
	must(t, raw.Do(ctx, raw.B().Set().Key("adm:kicked:"+alice.tok.Session).Value("1").Px(time.Minute).Build()).Error())
	must(t, raw.Do(ctx, raw.B().ClientKill().TypePubsub().Build()).Error())
	alice.expectClose(protocol.CloseKicked)
	bob.ping()
}
