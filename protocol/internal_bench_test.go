package protocol

import (
	"context"
	"testing"
	"time"
)

var samplePayload = []byte(`{"id":"0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11","ts":1767225600000,"seq":2,"sid":"6a2f41a1-7c1b-4c8e-8d2a-1b2c3d4e5f60","sub":"alice","act":"pub","ch":"rooms.lobby","body":{"text":"hello, world"}}`)

func BenchmarkDecodeEnvelope(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		if _, err := decodeEnvelope(samplePayload, true); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkReplayCheck(b *testing.B) {
	m := NewMemoryReplayStore(0, nil)
	ids := make([]string, 1<<16) // reused only after their 1 ms expiry
	for i := range ids {
		ids[i], _ = newUUID(nil)
	}
	b.ReportAllocs()
	exp := time.Now().Add(time.Hour)
	var seq uint64
	for b.Loop() {
		seq++
		if err := m.Check(context.Background(), ReplayCheck{Session: "s", ID: ids[seq%(1<<16)], Seq: seq, IDExpiry: time.Now().Add(time.Millisecond), SessionExpiry: exp}); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkPolicy(b *testing.B) {
	p := DefaultPolicy()
	roles := []string{"user"}
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Allow("pub", "rooms.lobby", roles); err != nil {
			b.Fatal(err)
		}
	}
}
