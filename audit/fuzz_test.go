package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-ws/sigil/audit"
	"golang.org/x/mod/sumdb/note"
)

// The fuzz targets of the parsers of what an auditor is handed, which
// may come from anyone: an entry, a proof, a checkpoint and an export
// bundle. Each starts from the vectors (testdata/vectors/audit) and must
// never panic; what parses must keep the parser's promise.

// vectorLog is the vector log's directory, its verifier key and that
// key's checkpoint verifier.
func vectorLog(f *testing.F) (string, string, note.Verifier) {
	dir := filepath.Join(vectorsDir, "audit", "log")
	raw, err := os.ReadFile(filepath.Join(dir, audit.VKeyFile))
	if err != nil {
		f.Fatal(err)
	}
	vkey := string(bytes.TrimSpace(raw))
	v, err := note.NewVerifier(vkey)
	if err != nil {
		f.Fatal(err)
	}
	return dir, vkey, v
}

// readVectors decodes the audit vector file name into v.
func readVectors(f *testing.F, name string, v any) {
	data, err := os.ReadFile(filepath.Join(vectorsDir, "audit", name))
	if err != nil {
		f.Fatal(err)
	}
	if err := json.Unmarshal(data, v); err != nil {
		f.Fatal(err)
	}
}

// An entry that parses is in its one canonical form (spec.md §21.2).
func FuzzParseEntry(f *testing.F) {
	var cases []struct {
		Entry string `json:"entry"`
	}
	readVectors(f, "entries.json", &cases)
	for _, c := range cases {
		f.Add([]byte(c.Entry))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := audit.ParseEntry(data)
		if err != nil {
			return
		}
		again, err := e.Marshal()
		if err != nil || !bytes.Equal(again, data) {
			t.Fatalf("parsed, but re-encodes to %q (%v)", again, err)
		}
	})
}

// A proof that checks names an entry inside its checkpoint, and the entry
// parses.
func FuzzProofCheck(f *testing.F) {
	_, _, v := vectorLog(f)
	var proofs []json.RawMessage
	readVectors(f, "proofs.json", &proofs)
	for _, raw := range proofs {
		p, err := audit.ParseProof(raw)
		if err != nil {
			f.Fatal(err)
		}
		if _, _, err := p.Check(v); err != nil {
			f.Fatalf("a seed proof does not check: %v", err)
		}
		f.Add([]byte(raw))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := audit.ParseProof(data)
		if err != nil {
			return
		}
		e, cp, err := p.Check(v)
		if err != nil {
			return
		}
		if e == nil || cp == nil || p.Index >= cp.Size {
			t.Fatalf("checked, but entry %v, checkpoint %v, index %d", e, cp, p.Index)
		}
		if _, err := audit.ParseEntry(p.Entry); err != nil {
			t.Fatalf("checked, but the entry does not parse: %v", err)
		}
	})
}

// A checkpoint that parses was signed by the log's key for its origin.
func FuzzParseCheckpoint(f *testing.F) {
	dir, _, v := vectorLog(f)
	cp, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	if err != nil {
		f.Fatal(err)
	}
	f.Add(cp)
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := audit.ParseCheckpoint(data, v)
		if err != nil {
			return
		}
		if c.Origin != v.Name() {
			t.Fatalf("parsed with origin %q under the key of %q", c.Origin, v.Name())
		}
	})
}

// VerifyBundle reports a bundle's problems; only a failure to read it is
// an error. A bundle without problems has entries within its checkpoint.
func FuzzVerifyBundle(f *testing.F) {
	dir, vkey, v := vectorLog(f)
	var whole, part bytes.Buffer
	ctx := context.Background()
	if err := audit.Export(ctx, audit.DirSource(dir), v, vkey, 0, 7, &whole); err != nil {
		f.Fatal(err)
	}
	if err := audit.Export(ctx, audit.DirSource(dir), v, vkey, 3, 5, &part); err != nil {
		f.Fatal(err)
	}
	for _, seed := range [][]byte{whole.Bytes(), part.Bytes()} {
		if r, err := audit.VerifyBundle(ctx, bytes.NewReader(seed), audit.VerifyOptions{Verifier: v}); err != nil || !r.OK() {
			f.Fatalf("a seed bundle does not verify: %v %+v", err, r)
		}
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := audit.VerifyBundle(ctx, bytes.NewReader(data), audit.VerifyOptions{Verifier: v})
		if err != nil || !r.OK() {
			return
		}
		var n uint64
		for _, k := range r.Kinds {
			n += k
		}
		if n > r.Size {
			t.Fatalf("a bundle without problems has %d entries, its checkpoint %d", n, r.Size)
		}
	})
}
