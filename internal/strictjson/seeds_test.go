package strictjson

import (
	"encoding/base64"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// vectorTexts returns JSON texts from the shared vectors (testdata/vectors)
// to seed the fuzz targets: every file, and the header and payload of every
// compact JWS frame in them, and of the frames nested in their bodies.
func vectorTexts(tb testing.TB) [][]byte {
	tb.Helper()
	dir := filepath.Join("..", "..", "testdata", "vectors")
	files, err := filepath.Glob(filepath.Join(dir, "cases", "*.json"))
	if err != nil || len(files) == 0 {
		tb.Fatalf("no vectors in %s: %v", dir, err)
	}
	files = append(files, filepath.Join(dir, "keys.json"), filepath.Join(dir, "policy.json"))
	var out [][]byte
	var frame func(s string)
	frame = func(s string) {
		parts := strings.Split(s, ".")
		if len(parts) != 3 {
			return
		}
		for _, p := range parts[:2] {
			b, err := base64.RawURLEncoding.DecodeString(p)
			if err != nil {
				continue
			}
			out = append(out, b)
			var env struct {
				Body json.RawMessage `json:"body"`
			}
			if json.Unmarshal(b, &env) == nil && len(env.Body) > 0 {
				out = append(out, env.Body)
				var db struct {
					Frame string `json:"frame"`
					Token string `json:"token"`
				}
				if json.Unmarshal(env.Body, &db) == nil {
					frame(db.Frame)
					frame(db.Token)
				}
			}
		}
	}
	for _, name := range files {
		b, err := os.ReadFile(name)
		if err != nil {
			tb.Fatal(err)
		}
		out = append(out, b)
		var v struct {
			Frame string `json:"frame"`
		}
		if json.Unmarshal(b, &v) == nil {
			frame(v.Frame)
		}
	}
	return out
}
