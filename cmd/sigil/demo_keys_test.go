package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

// TestServeDemoKeyFiles: --demo with --key-files signs with that key, so
// a token issued before a restart of the demo is still valid after it
// (the chat's reconnect test restarts a demo this way); without
// --key-files the demo's key is new on each start.
func TestServeDemoKeyFiles(t *testing.T) {
	key := filepath.Join(t.TempDir(), "demo.jwk")
	if out, err := sigil(t, "", "keygen", "--out", key).CombinedOutput(); err != nil {
		t.Fatalf("keygen: %v\n%s", err, out)
	}
	kids := func(args ...string) []string {
		url, _, _ := startServe(t, append([]string{"--demo", "--addr", "127.0.0.1:0"}, args...)...)
		_, body := get(t, url+"/.well-known/jwks.json")
		ks, err := protocol.ParseKeySet([]byte(body))
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, k := range ks.Keys() {
			out = append(out, k.KeyID())
		}
		return out
	}
	a, b := kids("--key-files", key), kids("--key-files", key)
	if len(a) != 1 || strings.Join(a, ",") != strings.Join(b, ",") {
		t.Fatalf("two starts with --key-files serve %v and %v", a, b)
	}
	if c := kids(); len(c) != 1 || c[0] == a[0] {
		t.Fatalf("a demo without --key-files serves %v (the file's key is %v)", c, a)
	}
}
