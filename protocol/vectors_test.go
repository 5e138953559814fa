package protocol_test

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"testing"
	"testing/cryptotest"

	"github.com/sigil-ws/sigil/internal/vectors"
	"github.com/sigil-ws/sigil/protocol"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors")

const vectorsDir = "../testdata/vectors"

// TestVectorsGolden regenerates the vectors from the fixed keys, clock and
// seed and compares them byte for byte with testdata/vectors. With -update it
// writes them instead (go generate ./protocol does this).
func TestVectorsGolden(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1) // go-jose's ECDSA and JWE randomness
	files, err := vectors.Files()
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.RemoveAll(filepath.Join(vectorsDir, "cases")); err != nil {
			t.Fatal(err)
		}
		for name, b := range files {
			p := filepath.Join(vectorsDir, name)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("wrote %d files", len(files))
		return
	}
	onDisk, _ := filepath.Glob(filepath.Join(vectorsDir, "cases", "*.json"))
	if len(onDisk)+2 != len(files) {
		t.Errorf("testdata/vectors has %d cases; the generator makes %d (run go generate ./protocol)", len(onDisk), len(files)-2)
	}
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(vectorsDir, name))
		if err != nil {
			t.Errorf("%s: %v (run go generate ./protocol)", name, err)
			continue
		}
		if !bytes.Equal(got, b) {
			t.Errorf("%s differs from the generator's output (run go generate ./protocol)", name)
		}
	}
}

// TestVectors runs every vector in testdata/vectors through this
// implementation.
func TestVectors(t *testing.T) {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Vectors) == 0 {
		t.Fatal("no vectors")
	}
	for _, v := range set.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			if err := set.Run(v); err != nil {
				t.Fatalf("%s (%s): %v", v.Name, v.Comment, err)
			}
		})
	}
}

// TestVectorsCoverEveryStep checks that every code of the verification
// order (spec.md §7) and of the handshake has at least one invalid vector,
// and every kind at least one valid one.
func TestVectorsCoverEveryStep(t *testing.T) {
	set, err := vectors.Load(vectorsDir)
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]int{}
	okKinds := map[string]int{}
	for _, v := range set.Vectors {
		if v.Expect.Result == "ok" {
			okKinds[v.Kind]++
		} else {
			codes[v.Expect.Code]++
		}
	}
	want := []protocol.Code{
		protocol.CodeTooLarge, protocol.CodeMalformed, protocol.CodeBadHeader, protocol.CodeBadTyp,
		protocol.CodeUnknownKey, protocol.CodeBadSignature, protocol.CodeBadClaims, protocol.CodeWrongSession,
		protocol.CodeStale, protocol.CodeFuture, protocol.CodeReplaySeq, protocol.CodeReplayID,
		protocol.CodeTokenExpired, protocol.CodeTokenRevoked, protocol.CodeForbidden, protocol.CodeBadEnc,
		protocol.CodeHelloRequired, protocol.CodeBadToken, protocol.CodeKeyMismatch, protocol.CodeBadRequest,
	}
	for _, c := range want {
		if codes[string(c)] == 0 {
			t.Errorf("no vector expects %s", c)
		}
	}
	for _, k := range []string{"hello", "client", "server", "delivery", "token", "wrapped_key", "grants"} {
		if okKinds[k] == 0 {
			t.Errorf("no valid %s vector", k)
		}
	}
	var lines []string
	for c, n := range codes {
		lines = append(lines, string(c)+"="+strconv.Itoa(n))
	}
	sort.Strings(lines)
	t.Logf("%d vectors; invalid by code: %v", len(set.Vectors), lines)
}
