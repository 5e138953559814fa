package protocol_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	must(t, err)
	return b
}

func TestRoundTrip(t *testing.T) {
	for _, alg := range []string{"EdDSA", "ES256"} {
		t.Run(alg, func(t *testing.T) {
			f := newFixture(t, alg)
			s := f.hello(t)
			if s.Subject != "alice" || s.ID != f.claims.Session {
				t.Fatalf("session = %+v", s)
			}
			env := &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Body: []byte(`{"text":"hi"}`)}
			frame, err := f.signer.Sign(env)
			must(t, err)
			m, err := f.verifier.Verify(context.Background(), frame, s)
			must(t, err)
			if string(m.Body) != `{"text":"hi"}` || m.Seq != 2 {
				t.Fatalf("message = %+v", m)
			}
			// exact replay
			_, err = f.verifier.Verify(context.Background(), frame, s)
			if protocol.CodeOf(err) != protocol.CodeReplayID {
				t.Fatalf("replay: got %v", err)
			}
		})
	}
}
