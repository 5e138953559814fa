package protocol_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

func TestHTTPWireTypes(t *testing.T) {
	var req protocol.TokenRequest
	must(t, protocol.DecodeBody([]byte(`{"grant_type":"password","username":"alice","password":"pw","jwk":{"kty":"OKP"}}`), &req))
	if req.GrantType != protocol.GrantPassword || req.Username != "alice" || string(req.JWK) != `{"kty":"OKP"}` {
		t.Fatalf("%+v", req)
	}
	for _, bad := range []string{
		`{"grant_type":"password","Username":"alice","jwk":{}}`,            // case variant
		`{"grant_type":"password","username":"a","username":"b","jwk":{}}`, // duplicate
		`{"grant_type":"password","scope":"admin","jwk":{}}`,               // unknown
		`{"grant_type":"password","username":["a"],"jwk":{}}`,              // mistyped
		`null`,
	} {
		var r protocol.TokenRequest
		if err := protocol.DecodeBody([]byte(bad), &r); err == nil {
			t.Errorf("DecodeBody(%s) accepted", bad)
		}
	}
	var rr protocol.RefreshRequest
	if err := protocol.DecodeBody([]byte(`{"refresh_token":"r","proof":"p","Proof":"q"}`), &rr); err == nil {
		t.Error("a case-variant proof member was accepted")
	}
	res := protocol.TokenResponse{Token: "secret-token", RefreshToken: "secret-refresh", Session: "s", Subject: "alice", ExpiresAt: 1767226500000}
	for _, s := range []string{res.String(), fmt.Sprint(res), fmt.Sprintf("%v", &res), protocol.TokenRequest{Password: "pw", Assertion: "secret-assertion"}.String()} {
		if strings.Contains(s, "secret") || strings.Contains(s, "pw") {
			t.Errorf("a secret is printed: %s", s)
		}
	}
	if res.Expiry().UnixMilli() != 1767226500000 || !res.RefreshExpiry().IsZero() {
		t.Error("Expiry / RefreshExpiry")
	}
}
