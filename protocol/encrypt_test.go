package protocol_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// TestKeyRingUsesInjectedClock: a rotated key stays usable for its grace
// period on the ring's clock, not the wall clock. The fixture's clock is
// fixed in 2026; before the clock was injected, the ring compared the
// expiry with time.Now, so a grace period computed on an injected clock
// ended (or never ended) at the wrong time.
func TestKeyRingUsesInjectedClock(t *testing.T) {
	f := newFixture(t, "EdDSA")
	s := f.hello(t)
	ring := protocol.NewKeyRing(func() time.Time { return f.now })
	old, err := protocol.NewContentKey(protocol.ScopeSession, nil)
	must(t, err)
	ring.Add(old, time.Time{})
	s.SetKeys(ring)
	send := func() error {
		enc, err := protocol.SealBody(old, []byte(`{"text":"sealed"}`))
		must(t, err)
		frame, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Enc: enc})
		must(t, err)
		m, err := f.verifier.Verify(context.Background(), frame, s)
		if err == nil && !json.Valid(m.Body) {
			t.Fatalf("decrypted body is not JSON: %q", m.Body)
		}
		return err
	}
	if err := send(); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	// Rotation: the old key is accepted for 60 s more, on the injected clock.
	ring.Expire(old.ID, f.now.Add(60*time.Second))
	f.now = f.now.Add(59 * time.Second)
	if err := send(); err != nil {
		t.Fatalf("within the grace period: %v", err)
	}
	f.now = f.now.Add(2 * time.Second)
	if err := send(); !protocol.IsCode(err, protocol.CodeBadEnc) {
		t.Fatalf("after the grace period: %v; want bad_enc", err)
	}
}
