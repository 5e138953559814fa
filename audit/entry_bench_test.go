package audit

import (
	"strings"
	"testing"
)

// BenchmarkEntryMarshal is the encoding of a frame entry as the server
// makes one per accepted pub: a compact JWS of about 700 bytes, the
// session key's JWK, its thumbprint and the token's jti.
func BenchmarkEntryMarshal(b *testing.B) {
	e := &Entry{V: Version, Kind: KindFrame, Time: 1764547200000, Node: "node-a",
		Frame: "eyJhbGciOiJFZERTQSIsInR5cCI6InNpZ2lsK2p3cyJ9." + strings.Repeat("eyJib2R5Ijp7InRleHQiOiJoZWxsbyJ9fQ", 16) + "." + strings.Repeat("A", 86),
		JTI:   "0b6f2d0e-4a43-4a8a-9a4c-6f1f7b0c9d11",
		JKT:   "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs",
		JWK:   []byte(`{"crv":"Ed25519","kty":"OKP","x":"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}`),
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := e.Marshal(); err != nil {
			b.Fatal(err)
		}
	}
}
