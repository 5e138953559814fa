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

// sharedKeys makes the nodes of a test accept each other's tokens.
func sharedKeys(t *testing.T) func(*server.Config) {
	k, err := protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	return func(c *server.Config) { c.Keys = []*protocol.PrivateKey{k} }
}

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
	rs := sigiltest.StartRedis(t)
	keys := sharedKeys(t)
	a, b := redisNode(t, rs, keys), redisNode(t, rs, keys)
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

// An admin kick on one node closes the session's connections on every
// node with 4004; with Redis away it is refused with 503, and nothing is
// closed.
func TestAdminKickAcrossNodes(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	keys := sharedKeys(t)
	a, b := redisNode(t, rs, keys), redisNode(t, rs, keys)
	adm := a.login("admin")
	alice := b.login("alice").connect()
	bob := b.login("bob").connect()
	st, data := adm.admin("POST", "kick", `{"sid":"`+alice.tok.Session+`"}`)
	if st != 200 {
		t.Fatalf("kick: %d %s", st, data)
	}
	alice.expectClose(server.CloseKicked)
	bob.ping()

	rs.Stop()
	st, data = adm.admin("POST", "kick", `{"sid":"`+bob.tok.Session+`"}`)
	var ae apiErr
	must(t, json.Unmarshal(data, &ae))
	if st != 503 || ae.Error != server.ErrCodeUnavailable {
		t.Fatalf("kick with Redis stopped: %d %s", st, data)
	}
	st, data = adm.admin("POST", "revoke", `{"sub":"bob"}`)
	if st != 503 || !strings.Contains(string(data), `"unavailable"`) {
		t.Fatalf("revoke with Redis stopped: %d %s", st, data)
	}
	bob.quiet()
}

// A node that may have missed kick notices (its subscription to them was
// lost) looks its sessions up when it subscribes again, and closes those
// that were kicked meanwhile.
func TestKickResyncAfterLostSubscription(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	b := redisNode(t, rs, nil)
	alice := b.login("alice").connect()
	bob := b.login("bob").connect()
	raw := rawRedis(t, rs)
	ctx := context.Background()
	// A kick whose notice b never saw: the key alone.
	must(t, raw.Do(ctx, raw.B().Set().Key("limits:kicked:"+alice.tok.Session).Value("1").Px(time.Minute).Build()).Error())
	must(t, raw.Do(ctx, raw.B().ClientKill().TypePubsub().Build()).Error())
	alice.expectClose(server.CloseKicked)
	bob.ping()
}
