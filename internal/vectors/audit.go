package vectors

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path"
	"path/filepath"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// AuditOrigin is the origin line of the audit log vectors.
const AuditOrigin = "sigil.test/audit"

// AuditConsistency is consistency.json: a checkpoint of the first Size
// entries, and the consistency proof from it to the log's checkpoint.
type AuditConsistency struct {
	Old    string   `json:"old"`
	New    string   `json:"new"`
	Hashes [][]byte `json:"hashes"`
}

// AuditEntryCase is one case of entries.json: an entry, and whether a
// strict parser accepts it (spec.md §21.2).
type AuditEntryCase struct {
	Name    string `json:"name"`
	Comment string `json:"comment"`
	Entry   string `json:"entry"`
	Expect  string `json:"expect"` // "ok" or "audit_entry"
}

// AuditFiles generates the audit log vectors (spec.md §21), files under
// audit/ of the vectors directory: log/ (a tiny log: its checkpoint, its
// checkpoint key log.vkey, its level-0 tile and entry bundle), proofs.json
// (the inclusion proof of every entry), consistency.json, and entries.json
// (strict-form cases). The log is written in tmp by the default store
// (Tessera writes the same files), from the fixed keys, clock and seeds
// of the other vectors.
func AuditFiles(ctx context.Context, tmp string) (map[string][]byte, error) {
	g, err := newGen()
	if err != nil {
		return nil, err
	}
	skey, vkey, err := note.GenerateKey(seeded{rand.NewChaCha8([32]byte([]byte("sigil audit vectors, fixed seed!")))}, AuditOrigin)
	if err != nil {
		return nil, err
	}
	signer, err := note.NewSigner(skey)
	if err != nil {
		return nil, err
	}
	v, err := note.NewVerifier(vkey)
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(tmp, "log")
	l, err := audit.Open(ctx, audit.Config{Dir: dir, Signer: signer, CheckpointInterval: 100 * time.Millisecond})
	if err != nil {
		return nil, err
	}
	defer l.Close(ctx)
	alice := g.identity("alice", []string{"user"}, "alice-eddsa")
	bob := g.identity("bob", []string{"user"}, "bob-eddsa")
	jwk := func(id *identity) json.RawMessage { b, _ := id.key.Public().MarshalJSON(); return b }
	frame := func(id *identity, env *protocol.Envelope) *audit.Entry {
		return &audit.Entry{Kind: audit.KindFrame, Frame: g.sign(id, env), JTI: id.claims.ID, JKT: id.key.Public().Thumbprint(), JWK: jwk(id)}
	}
	jwks, err := g.jwks.MarshalJSON()
	if err != nil {
		return nil, err
	}
	entries := []*audit.Entry{
		{Kind: audit.KindKeys, JWKS: jwks},
		{Kind: audit.KindToken, Token: alice.token, JWK: jwk(alice)},
		{Kind: audit.KindToken, Token: bob.token, JWK: jwk(bob)},
		frame(alice, &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.lobby", Corr: "c1", Body: json.RawMessage(`{"text":"hello, lobby"}`)}),
		frame(bob, &protocol.Envelope{Action: protocol.ActDM, To: "alice", Body: json.RawMessage(`{"text":"hi alice"}`)}),
		{Kind: audit.KindServer, Frame: g.serverSign(&protocol.Envelope{Action: protocol.ActPub, Channel: "announce.all", Body: json.RawMessage(`{"text":"maintenance at noon"}`)})},
		frame(alice, &protocol.Envelope{Action: "orders.create", Corr: "c2", Body: json.RawMessage(`{"qty":3}`)}),
	}
	var raw [][]byte
	for i, e := range entries {
		e.V, e.Time, e.Node = audit.Version, NowMS+int64(i)*1000, ""
		if _, err := l.Append(ctx, e); err != nil {
			return nil, err
		}
		b, _ := e.Marshal()
		raw = append(raw, b)
	}
	size := uint64(len(entries))
	var cpRaw []byte
	for deadline := time.Now().Add(60 * time.Second); ; {
		if cpRaw, err = l.Checkpoint(ctx); err == nil {
			if cp, err := audit.ParseCheckpoint(cpRaw, v); err == nil && cp.Size == size {
				break
			}
		}
		if time.Now().After(deadline) {
			return nil, errors.New("vectors: no checkpoint of the audit log")
		}
		time.Sleep(20 * time.Millisecond)
	}
	cp, err := audit.ParseCheckpoint(cpRaw, v)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	p := uint8(size)
	for _, name := range []string{layout.CheckpointPath, layout.TilePath(0, 0, p), layout.EntriesPath(0, p)} {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(name)))
		if err != nil {
			return nil, err
		}
		files[path.Join("audit/log", name)] = b
	}
	files["audit/log/"+audit.VKeyFile] = []byte(vkey + "\n")
	src := audit.DirSource(dir)
	var proofs []*audit.Proof
	for i := range size {
		pr, err := audit.ProveAt(ctx, src, cpRaw, cp, i)
		if err != nil {
			return nil, err
		}
		proofs = append(proofs, pr)
	}
	if files["audit/proofs.json"], err = indent(proofs); err != nil {
		return nil, err
	}
	// A checkpoint of the first 3 entries, signed by the same key, and the
	// consistency proof from it.
	const oldSize = 3
	rng := (&compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}).NewEmptyRange(0)
	for _, b := range raw[:oldSize] {
		if err := rng.Append(rfc6962.DefaultHasher.HashLeaf(b), nil); err != nil {
			return nil, err
		}
	}
	oldRoot, err := rng.GetRootHash(nil)
	if err != nil {
		return nil, err
	}
	old, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: AuditOrigin, Size: oldSize, Hash: oldRoot}.Marshal())}, signer)
	if err != nil {
		return nil, err
	}
	pb, err := client.NewProofBuilder(ctx, size, src.ReadTile)
	if err != nil {
		return nil, err
	}
	hashes, err := pb.ConsistencyProof(ctx, oldSize, size)
	if err != nil {
		return nil, err
	}
	if files["audit/consistency.json"], err = indent(AuditConsistency{Old: string(old), New: string(cpRaw), Hashes: hashes}); err != nil {
		return nil, err
	}
	tok := string(raw[1])
	cases := []AuditEntryCase{
		{"token-ok", "a token entry of the log", tok, "ok"},
		{"frame-ok", "a frame entry of the log", string(raw[3]), "ok"},
		{"member-order", "members out of the order of §21.2", fmt.Sprintf(`{"kind":"token","v":1%s`, tok[len(`{"v":1,"kind":"token"`):]), audit.CodeEntry},
		{"white-space", "a space after a colon", `{"v": 1` + tok[len(`{"v":1`):], audit.CodeEntry},
		{"unknown-member", "a member no kind has", tok[:len(tok)-1] + `,"sig":"x"}`, audit.CodeEntry},
		{"foreign-member", "a jti in a token entry", tok[:len(tok)-1] + `,"jti":"x"}`, audit.CodeEntry},
		{"duplicate-member", "kind twice", `{"v":1,"kind":"token","kind":"token"` + tok[len(`{"v":1,"kind":"token"`):], audit.CodeEntry},
		{"version-2", "an unknown version", `{"v":2` + tok[len(`{"v":1`):], audit.CodeEntry},
		{"escaped", "an escape JSON does not require", `{"v":1,"kind":"\u0074oken"` + tok[len(`{"v":1,"kind":"token"`):], audit.CodeEntry},
	}
	if files["audit/entries.json"], err = indent(cases); err != nil {
		return nil, err
	}
	return files, nil
}

func indent(v any) ([]byte, error) {
	b, err := json.MarshalIndent(v, "", "  ")
	return append(b, '\n'), err
}
