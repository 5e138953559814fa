package protocol

import (
	"bytes"
	"reflect"
	"testing"
)

// FuzzEnvelopeRoundTrip: whatever decodes strictly must re-encode to bytes
// that decode to the same envelope and re-encode identically (the encoding
// is stable after one round).
func FuzzEnvelopeRoundTrip(f *testing.F) {
	f.Add(samplePayload, true)
	f.Add([]byte(`{"id":"0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11","ts":1,"act":"deliver","ch":"a.b","body":{"frame":"x"}}`), false)
	f.Add([]byte(`{"id":"0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11","ts":1,"act":"pong","sid":"6a2f41a1-7c1b-4c8e-8d2a-1b2c3d4e5f60","body":"caf\u00e9"}`), false)
	f.Fuzz(func(t *testing.T, data []byte, client bool) {
		e1, err := decodeEnvelope(data, client)
		if err != nil {
			return
		}
		b1, err := e1.Marshal()
		if err != nil {
			t.Fatalf("marshal: %v", err)
		}
		e2, err := decodeEnvelope(b1, client)
		if err != nil {
			t.Fatalf("re-encoded envelope does not decode: %v\n%s", err, b1)
		}
		b2, _ := e2.Marshal()
		if !bytes.Equal(b1, b2) {
			t.Fatalf("unstable encoding:\n%s\n%s", b1, b2)
		}
		e1.Body, e2.Body = nil, nil
		if !reflect.DeepEqual(e1, e2) {
			t.Fatalf("claims changed: %+v != %+v", e1, e2)
		}
	})
}
