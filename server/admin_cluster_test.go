package server_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

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
