package audit_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
)

// fixture is a real log written by audit.Log: the server's keys, a
// session token of alice, and frames she signed, each a real JWS.
type fixture struct {
	t      *testing.T
	dir    string
	log    *audit.Log
	v      note.Verifier
	server *protocol.PrivateKey
	sess   *protocol.PrivateKey
	jwk    []byte
	claims *protocol.SessionClaims
	signer *protocol.ClientSigner
	n      uint64 // entries added
}

func newFixture(t *testing.T) *fixture { t.Helper(); return newStoreFixture(t, audit.StoreTlog) }

// newStoreFixture is newFixture on store.
func newStoreFixture(t *testing.T, store audit.Store) *fixture {
	t.Helper()
	skey, vkey, err := audit.GenerateKey("sigil.test/audit")
	must(t, err)
	signer, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	f := &fixture{t: t, dir: t.TempDir(), v: v}
	must(t, os.WriteFile(filepath.Join(f.dir, audit.VKeyFile), []byte(vkey+"\n"), 0o644))
	f.log, err = audit.Open(context.Background(), audit.Config{Dir: f.dir, Signer: signer, CheckpointInterval: 100 * time.Millisecond, Store: store})
	must(t, err)
	t.Cleanup(func() { _ = f.log.Close(context.Background()) })
	f.server, err = protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	set, _ := protocol.NewKeySet(f.server.Public())
	jwks, _ := set.MarshalJSON()
	f.add(&audit.Entry{Kind: audit.KindKeys, JWKS: jwks})
	f.sess, err = protocol.GenerateKey(protocol.EdDSA, nil)
	must(t, err)
	f.jwk, _ = f.sess.Public().MarshalJSON()
	iss := &protocol.TokenIssuer{Key: f.server, Issuer: "https://sigil.test", Audience: "wss://sigil.test/v1/ws", TTL: time.Minute}
	tok, claims, err := iss.Issue(protocol.IssueRequest{Subject: "alice", Roles: []string{"user"}, JKT: f.sess.Public().Thumbprint()})
	must(t, err)
	f.claims = claims
	f.add(&audit.Entry{Kind: audit.KindToken, Token: tok, JWK: f.jwk})
	f.signer = &protocol.ClientSigner{Key: f.sess, Session: claims.Session, Subject: "alice"}
	return f
}

func (f *fixture) add(e *audit.Entry) uint64 {
	f.t.Helper()
	e.V, e.Time = audit.Version, time.Now().UnixMilli()
	i, err := f.log.Append(context.Background(), e)
	must(f.t, err)
	f.n = i + 1
	return i
}

// frame adds a frame entry of a pub alice signed with text.
func (f *fixture) frame(text string) uint64 {
	f.t.Helper()
	fr, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{"text":"` + text + `"}`)})
	must(f.t, err)
	return f.add(&audit.Entry{Kind: audit.KindFrame, Frame: string(fr), JTI: f.claims.ID, JKT: f.sess.Public().Thumbprint(), JWK: f.jwk})
}

// published waits for a checkpoint of every entry added and returns it.
func (f *fixture) published() []byte {
	f.t.Helper()
	var raw []byte
	sigiltest.Eventually(f.t, fmt.Sprintf("a checkpoint of %d entries", f.n), func() bool {
		var err error
		if raw, err = f.log.Checkpoint(context.Background()); err != nil {
			return false
		}
		cp, err := audit.ParseCheckpoint(raw, f.v)
		return err == nil && cp.Size >= f.n
	})
	return raw
}

func (f *fixture) verify(prev []byte) *audit.Report {
	f.t.Helper()
	r, err := audit.Verify(context.Background(), audit.DirSource(f.dir), audit.VerifyOptions{Verifier: f.v, Previous: prev})
	must(f.t, err)
	return r
}

// bundle reads the entries of the (single, partial) entry bundle.
func (f *fixture) bundle() (path string, entries [][]byte) {
	f.t.Helper()
	path = filepath.Join(f.dir, layout.EntriesPath(0, uint8(f.n)))
	data, err := os.ReadFile(path)
	must(f.t, err)
	for len(data) > 0 {
		n := int(binary.BigEndian.Uint16(data))
		entries = append(entries, data[2:2+n])
		data = data[2+n:]
	}
	return path, entries
}

func (f *fixture) writeBundle(path string, entries [][]byte) {
	f.t.Helper()
	var buf bytes.Buffer
	for _, e := range entries {
		_ = binary.Write(&buf, binary.BigEndian, uint16(len(e)))
		buf.Write(e)
	}
	must(f.t, os.WriteFile(path, buf.Bytes(), 0o644))
}

func must(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// wantProblem checks that r's first problem is code at index.
func wantProblem(t *testing.T, r *audit.Report, code string, index int64) {
	t.Helper()
	if len(r.Problems) == 0 {
		t.Fatalf("no problem found, want %s at %d", code, index)
	}
	if p := r.Problems[0]; p.Code != code || p.Index != index {
		t.Fatalf("first problem %v, want %s at %d (all: %v)", p, code, index, r.Problems)
	}
}

func TestVerifyIntact(t *testing.T) {
	f := newFixture(t)
	for i := range 5 {
		f.frame("m" + string(rune('0'+i)))
	}
	f.published()
	r := f.verify(nil)
	if !r.OK() || r.Size != 7 || r.Kinds[audit.KindFrame] != 5 || len(r.Subjects) != 1 || r.Subjects[0] != "alice" {
		t.Fatalf("report: %+v", r)
	}
}

// Each way of tampering with the stored entries is found, at the index
// where it was done, in a log either store wrote.
func TestVerifyTampered(t *testing.T) {
	for _, st := range testStores {
		t.Run(st.name, func(t *testing.T) { verifyTampered(t, st.store) })
	}
}

func verifyTampered(t *testing.T, store audit.Store) {
	for _, tc := range []struct {
		name   string
		tamper func(entries [][]byte) [][]byte
	}{
		{"deleted entry", func(es [][]byte) [][]byte { return append(es[:4:4], es[5:]...) }},
		{"edited byte", func(es [][]byte) [][]byte {
			es[4] = bytes.Replace(es[4], []byte(`"kind":"frame"`), []byte(`"kind":"frane"`), 1)
			return es
		}},
		{"reordered pair", func(es [][]byte) [][]byte { es[4], es[5] = es[5], es[4]; return es }},
		{"inserted entry", func(es [][]byte) [][]byte {
			return append(es[:4:4], append([][]byte{es[2]}, es[4:]...)...)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newStoreFixture(t, store)
			for _, s := range []string{"a", "b", "c", "d", "e"} {
				f.frame(s)
			}
			f.published()
			path, entries := f.bundle()
			f.writeBundle(path, tc.tamper(entries))
			wantProblem(t, f.verify(nil), audit.CodeTree, 4)
		})
	}
}

// The operator itself cannot forge a message: an entry it appends,
// validly logged, whose frame alice did not sign, fails its evidence.
func TestVerifyForgedEntry(t *testing.T) {
	f := newFixture(t)
	f.frame("a")
	other, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	forger := &protocol.ClientSigner{Key: other, Session: f.claims.Session, Subject: "alice"}
	fr, err := forger.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{"text":"I owe you"}`)})
	must(t, err)
	i := f.add(&audit.Entry{Kind: audit.KindFrame, Frame: string(fr), JTI: f.claims.ID, JKT: f.sess.Public().Thumbprint(), JWK: f.jwk})
	f.frame("c")
	f.published()
	r := f.verify(nil)
	wantProblem(t, r, audit.CodeEvidence, int64(i))
	if len(r.Problems) != 1 {
		t.Fatalf("problems: %v", r.Problems)
	}
	// A raw entry that is not strict is found too.
	j := uint64(0)
	j, err = f.log.AddRaw(context.Background(), []byte(`{"v":1,"kind":"keys","time":1,"jwks":{"keys":[]},"jwks":{"keys":[]}}`))()
	must(t, err)
	f.n = j + 1
	f.published()
	r = f.verify(nil)
	if len(r.Problems) != 2 || r.Problems[1].Code != audit.CodeEntry || r.Problems[1].Index != int64(j) {
		t.Fatalf("problems: %v", r.Problems)
	}
}

// A checkpoint older than one seen before is a rollback; a checkpoint
// signed by another key is refused; in a log either store wrote.
func TestVerifyRollback(t *testing.T) {
	for _, st := range testStores {
		t.Run(st.name, func(t *testing.T) { verifyRollback(t, st.store) })
	}
}

func verifyRollback(t *testing.T, store audit.Store) {
	f := newStoreFixture(t, store)
	f.frame("a")
	old := f.published()
	oldSize := f.n
	f.frame("b")
	f.frame("c")
	seen := f.published()
	if r := f.verify(old); !r.OK() {
		t.Fatalf("the newer checkpoint does not extend the older: %v", r.Problems)
	}
	must(t, os.WriteFile(filepath.Join(f.dir, layout.CheckpointPath), old, 0o644))
	wantProblem(t, f.verify(seen), audit.CodeInconsistent, int64(oldSize))

	skey, _, _ := audit.GenerateKey("sigil.test/audit")
	s, _ := note.NewSigner(skey)
	forged, err := note.Sign(&note.Note{Text: strings.SplitN(string(seen), "\n\n", 2)[0] + "\n"}, s)
	must(t, err)
	must(t, os.WriteFile(filepath.Join(f.dir, layout.CheckpointPath), forged, 0o644))
	wantProblem(t, f.verify(nil), audit.CodeCheckpoint, -1)
}

// Proofs: each entry's inclusion proof checks against the checkpoint; a
// proof with another entry does not.
func TestProve(t *testing.T) {
	f := newFixture(t)
	for _, s := range []string{"a", "b", "c"} {
		f.frame(s)
	}
	f.published()
	for i := range f.n {
		p, err := audit.Prove(context.Background(), audit.DirSource(f.dir), f.v, i)
		must(t, err)
		if _, _, err := p.Check(f.v); err != nil {
			t.Fatalf("proof %d: %v", i, err)
		}
		data, _ := json.Marshal(p)
		if q, err := audit.ParseProof(data); err != nil || q.Index != i {
			t.Fatalf("round trip: %v", err)
		}
	}
	p, _ := audit.Prove(context.Background(), audit.DirSource(f.dir), f.v, 2)
	q, _ := audit.Prove(context.Background(), audit.DirSource(f.dir), f.v, 3)
	p.Entry = q.Entry
	if _, _, err := p.Check(f.v); err == nil || !strings.Contains(err.Error(), audit.CodeTree) {
		t.Fatalf("a proof with another entry: %v", err)
	}
	if _, err := audit.Prove(context.Background(), audit.DirSource(f.dir), f.v, f.n); err != audit.ErrNotPublished {
		t.Fatalf("beyond the checkpoint: %v", err)
	}
}

// An export of a range verifies alone, with the keys and the token it
// needs; an edited bundle does not.
func TestExport(t *testing.T) {
	f := newFixture(t)
	for _, s := range []string{"a", "b", "c", "d"} {
		f.frame(s)
	}
	f.published()
	var buf bytes.Buffer
	must(t, audit.Export(context.Background(), audit.DirSource(f.dir), f.v, "", 3, 5, &buf))
	r, err := audit.VerifyBundle(context.Background(), bytes.NewReader(buf.Bytes()), audit.VerifyOptions{Verifier: f.v})
	must(t, err)
	if !r.OK() || r.Kinds[audit.KindFrame] != 2 || r.Kinds[audit.KindToken] != 1 || r.Kinds[audit.KindKeys] != 1 {
		t.Fatalf("report: %+v", r)
	}
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	var p audit.Proof
	must(t, json.Unmarshal([]byte(lines[4]), &p))
	p.Entry = bytes.Replace(p.Entry, []byte(`"kind"`), []byte(`"kind" `), 1)
	edited, _ := json.Marshal(p)
	lines[4] = string(edited)
	r, err = audit.VerifyBundle(context.Background(), strings.NewReader(strings.Join(lines, "\n")), audit.VerifyOptions{Verifier: f.v})
	must(t, err)
	wantProblem(t, r, audit.CodeTree, 4)
}

func TestEntryStrict(t *testing.T) {
	good := `{"v":1,"kind":"token","time":5,"token":"a.b.c","jwk":{"kty":"OKP"}}`
	if _, err := audit.ParseEntry([]byte(good)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{
		`{"v":2,"kind":"token","time":5,"token":"a.b.c","jwk":{"kty":"OKP"}}`,
		`{"v":1,"kind":"token","time":5,"token":"a.b.c","jwk":{"kty":"OKP"},"jti":"x"}`,
		`{"v":1,"kind":"token","time":5,"token":"a.b.c"}`,
		`{"kind":"token","v":1,"time":5,"token":"a.b.c","jwk":{"kty":"OKP"}}`,
		`{"v":1,"kind":"token","time":5,"token":"a.b.c","jwk":{"kty": "OKP"}}`,
		`{"v":1,"kind":"token","time":5,"token":"a.b.c","jwk":{"kty":"OKP"},"Token":"x"}`,
		`{"v":1,"kind":"other","time":5}`,
		`{"v":1,"kind":"token","time":5,"token":"a.b.c","jwk":{"kty":"OKP"}} `,
	} {
		if _, err := audit.ParseEntry([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
}

// Marshal writes what encoding/json writes for the struct with HTML
// escaping off: the one form of spec.md §21.2.
func TestEntryMarshalIsEncodingJSON(t *testing.T) {
	pos := uint64(7)
	for _, node := range []string{"", "node-a", `a"b\c`, "<&>", "tab\there", "é\u2028\x01"} {
		e := &audit.Entry{V: 1, Kind: audit.KindFrame, Time: 5, Node: node, Frame: "a.b.c", JTI: "j", JKT: "k", JWK: json.RawMessage(`{ "kty" : "OKP" }`), Pos: &pos}
		got, err := e.Marshal()
		must(t, err)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		must(t, enc.Encode(e))
		if want := bytes.TrimSuffix(buf.Bytes(), []byte("\n")); !bytes.Equal(got, want) {
			t.Errorf("node %q:\n got %s\nwant %s", node, got, want)
		}
		if _, err := audit.ParseEntry(got); err != nil {
			t.Errorf("node %q: %v", node, err)
		}
	}
}

// Checkpoints are timed (spec.md §21.3): an interval under Tessera's
// minimum is refused with a clear error; at the minimum, successive
// batches are covered by checkpoints without anything but time passing.
func TestCheckpointInterval(t *testing.T) {
	skey, vkey, err := audit.GenerateKey("sigil.test/audit")
	must(t, err)
	signer, _ := note.NewSigner(skey)
	v, _ := note.NewVerifier(vkey)
	_, err = audit.Open(context.Background(), audit.Config{Dir: t.TempDir(), Signer: signer, CheckpointInterval: audit.MinCheckpointInterval - time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), "CheckpointInterval must be at least 100ms") {
		t.Fatalf("an interval under the minimum: %v", err)
	}
	l, err := audit.Open(context.Background(), audit.Config{Dir: t.TempDir(), Signer: signer, CheckpointInterval: audit.MinCheckpointInterval})
	must(t, err)
	defer l.Close(context.Background())
	for n := uint64(1); n <= 3; n++ {
		_, err := l.Append(context.Background(), &audit.Entry{V: audit.Version, Kind: audit.KindServer, Time: 1, Frame: "a.b.c"})
		must(t, err)
		sigiltest.Eventually(t, fmt.Sprintf("a checkpoint of %d entries", n), func() bool {
			raw, err := l.Checkpoint(context.Background())
			if err != nil {
				return false
			}
			cp, err := audit.ParseCheckpoint(raw, v)
			return err == nil && cp.Size == n
		})
	}
}
