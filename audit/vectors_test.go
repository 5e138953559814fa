package audit_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"testing"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/internal/vectors"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"
)

var update = flag.Bool("update", false, "regenerate testdata/vectors/audit")

const vectorsDir = "../testdata/vectors"

// TestAuditVectorsGolden regenerates the audit log vectors and compares
// them byte for byte with testdata/vectors/audit; with -update it writes
// them (go generate ./audit).
func TestAuditVectorsGolden(t *testing.T) {
	files, err := vectors.AuditFiles(context.Background(), t.TempDir())
	must(t, err)
	if *update {
		must(t, os.RemoveAll(filepath.Join(vectorsDir, "audit")))
		for name, b := range files {
			p := filepath.Join(vectorsDir, filepath.FromSlash(name))
			must(t, os.MkdirAll(filepath.Dir(p), 0o755))
			must(t, os.WriteFile(p, b, 0o644))
		}
		t.Logf("wrote %d files", len(files))
		return
	}
	for name, b := range files {
		got, err := os.ReadFile(filepath.Join(vectorsDir, filepath.FromSlash(name)))
		if err != nil || !bytes.Equal(got, b) {
			t.Errorf("%s differs from the generator's output (run go generate ./audit): %v", name, err)
		}
	}
}

// TestAuditVectors runs the audit vectors: the log verifies, each proof
// checks, the consistency proof verifies, and each entry case parses as
// expected.
func TestAuditVectors(t *testing.T) {
	dir := filepath.Join(vectorsDir, "audit")
	vkey, err := os.ReadFile(filepath.Join(dir, "log", audit.VKeyFile))
	must(t, err)
	v, err := note.NewVerifier(string(bytes.TrimSpace(vkey)))
	must(t, err)
	r, err := audit.Verify(context.Background(), audit.DirSource(filepath.Join(dir, "log")), audit.VerifyOptions{Verifier: v})
	must(t, err)
	if !r.OK() || r.Size != 7 || r.Kinds[audit.KindFrame] != 3 || r.Kinds[audit.KindServer] != 1 || len(r.Subjects) != 2 {
		t.Fatalf("the vector log: %+v", r)
	}
	var proofs []*audit.Proof
	data, err := os.ReadFile(filepath.Join(dir, "proofs.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &proofs))
	for i, p := range proofs {
		if _, _, err := p.Check(v); err != nil || p.Index != uint64(i) {
			t.Errorf("proof %d: %v", i, err)
		}
	}
	var c vectors.AuditConsistency
	data, err = os.ReadFile(filepath.Join(dir, "consistency.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &c))
	oldCP, err := audit.ParseCheckpoint([]byte(c.Old), v)
	must(t, err)
	newCP, err := audit.ParseCheckpoint([]byte(c.New), v)
	must(t, err)
	must(t, proof.VerifyConsistency(rfc6962.DefaultHasher, oldCP.Size, newCP.Size, c.Hashes, oldCP.Hash, newCP.Hash))
	var cases []vectors.AuditEntryCase
	data, err = os.ReadFile(filepath.Join(dir, "entries.json"))
	must(t, err)
	must(t, json.Unmarshal(data, &cases))
	for _, tc := range cases {
		_, err := audit.ParseEntry([]byte(tc.Entry))
		if (err == nil) != (tc.Expect == "ok") {
			t.Errorf("%s (%s): %v, want %s", tc.Name, tc.Comment, err, tc.Expect)
		}
	}
}
