package audit

import (
	"context"
	"errors"
	"fmt"

	"github.com/sigil-ws/sigil/internal/strictjson"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// Proof is an inclusion proof of one entry against a signed checkpoint
// (spec.md §21.4). Its JSON form is what /v1/audit/proof answers, what
// "sigil audit prove" prints and what "sigil audit check-proof" reads.
type Proof struct {
	Index      uint64   `json:"index"`      // the entry's index
	Entry      []byte   `json:"entry"`      // the entry, byte for byte (base64)
	Checkpoint string   `json:"checkpoint"` // the signed checkpoint (note text)
	Hashes     [][]byte `json:"hashes"`     // the RFC 9162 inclusion proof (base64 each)
}

// ErrNotPublished: the entry is not yet covered by a published
// checkpoint (checkpoints come every Config.CheckpointInterval).
var ErrNotPublished = errors.New("audit: the entry is not in the latest checkpoint yet")

// Prove builds the inclusion proof of entry index against the latest
// checkpoint of src, which must verify under v.
func Prove(ctx context.Context, src Source, v note.Verifier, index uint64) (*Proof, error) {
	raw, err := src.ReadCheckpoint(ctx)
	if err != nil {
		return nil, err
	}
	cp, err := ParseCheckpoint(raw, v)
	if err != nil {
		return nil, err
	}
	return ProveAt(ctx, src, raw, cp, index)
}

// ProveAt is Prove against a given checkpoint cp (raw: its note text).
func ProveAt(ctx context.Context, src Source, raw []byte, cp *log.Checkpoint, index uint64) (*Proof, error) {
	if index >= cp.Size {
		return nil, ErrNotPublished
	}
	eb, err := client.GetEntryBundle(ctx, src.ReadEntryBundle, index/256, cp.Size)
	if err != nil {
		return nil, err
	}
	if int(index%256) >= len(eb.Entries) {
		return nil, fmt.Errorf("audit: entry bundle %d lacks entry %d", index/256, index)
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		return nil, err
	}
	hashes, err := pb.InclusionProof(ctx, index)
	if err != nil {
		return nil, err
	}
	if hashes == nil {
		hashes = [][]byte{}
	}
	return &Proof{Index: index, Entry: eb.Entries[index%256], Checkpoint: string(raw), Hashes: hashes}, nil
}

// ParseProof decodes a Proof strictly.
func ParseProof(data []byte) (*Proof, error) {
	var p Proof
	if err := strictjson.Unmarshal(data, &p, nil); err != nil {
		return nil, fmt.Errorf("audit: not a proof: %w", err)
	}
	return &p, nil
}

// Check verifies p offline: the checkpoint's signature under v, and that
// the entry is the leaf at p.Index of the tree the checkpoint commits to.
// It returns the parsed entry (strict, spec.md §21.2) and the checkpoint.
// The evidence of the entry (spec.md §14) needs its token and the
// server's keys: Verify checks it for a whole log or an export.
func (p *Proof) Check(v note.Verifier) (*Entry, *log.Checkpoint, error) {
	cp, err := ParseCheckpoint([]byte(p.Checkpoint), v)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", CodeCheckpoint, err)
	}
	if p.Index >= cp.Size {
		return nil, nil, fmt.Errorf("%s: index %d is outside the checkpoint's %d entries", CodeTree, p.Index, cp.Size)
	}
	leaf := rfc6962.DefaultHasher.HashLeaf(p.Entry)
	if err := proof.VerifyInclusion(rfc6962.DefaultHasher, p.Index, cp.Size, leaf, p.Hashes, cp.Hash); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", CodeTree, err)
	}
	e, err := ParseEntry(p.Entry)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", CodeEntry, err)
	}
	return e, cp, nil
}
