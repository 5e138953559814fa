package audit

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/sigil-ws/sigil/internal/strictjson"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// BundleHeader is the first line of an export bundle (spec.md §21.6).
type BundleHeader struct {
	Bundle     string `json:"bundle"`     // "sigil-audit-export/v1"
	Checkpoint string `json:"checkpoint"` // the signed checkpoint every proof is against
	VKey       string `json:"vkey"`       // the checkpoint key, for reference: a verifier pins its own
	From       uint64 `json:"from"`       // the range exported, [from, to)
	To         uint64 `json:"to"`
}

// BundleFormat names the export format.
const BundleFormat = "sigil-audit-export/v1"

// Export writes a self-contained bundle of the entries [from, to) of the
// log src reads, against its latest checkpoint (which must verify under
// v): a BundleHeader line, then one Proof per line, in index order: every
// keys entry before to, the token entries that the exported frames name,
// and the entries of the range. VerifyBundle checks it with nothing else.
func Export(ctx context.Context, src Source, v note.Verifier, vkey string, from, to uint64, w io.Writer) error {
	raw, err := src.ReadCheckpoint(ctx)
	if err != nil {
		return err
	}
	cp, err := ParseCheckpoint(raw, v)
	if err != nil {
		return err
	}
	if from >= to || to > cp.Size {
		return fmt.Errorf("audit: the range [%d, %d) is not within the checkpoint's %d entries", from, to, cp.Size)
	}
	size := func(context.Context) (uint64, error) { return cp.Size, nil }
	// Pass 1: the tokens the range's frames name.
	jtis := map[string]bool{}
	err = eachEntry(ctx, src, size, from, to-from, func(_ uint64, data []byte) error {
		if e, err := ParseEntry(data); err == nil && e.Kind == KindFrame {
			jtis[e.JTI] = true
		}
		return nil
	})
	if err != nil {
		return err
	}
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	if err := enc.Encode(BundleHeader{Bundle: BundleFormat, Checkpoint: string(raw), VKey: vkey, From: from, To: to}); err != nil {
		return err
	}
	pb, err := client.NewProofBuilder(ctx, cp.Size, src.ReadTile)
	if err != nil {
		return err
	}
	emit := func(i uint64, data []byte) error {
		hashes, err := pb.InclusionProof(ctx, i)
		if err != nil {
			return err
		}
		return enc.Encode(Proof{Index: i, Entry: data, Checkpoint: "", Hashes: hashes})
	}
	// Pass 2: the keys and the tokens before the range; then the range.
	err = eachEntry(ctx, src, size, 0, from, func(i uint64, data []byte) error {
		e, err := ParseEntry(data)
		if err != nil || e.Kind == KindKeys || e.Kind == KindToken && tokenJTI(e) != "" && jtis[tokenJTI(e)] {
			return emit(i, data)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if err := eachEntry(ctx, src, size, from, to-from, emit); err != nil {
		return err
	}
	return bw.Flush()
}

// tokenJTI is the jti of a token entry's token, read without verifying
// (Export only selects entries; VerifyBundle verifies them).
func tokenJTI(e *Entry) string {
	payload, err := protocol.UnsafeClaims([]byte(e.Token))
	if err != nil {
		return ""
	}
	var c struct {
		ID string `json:"jti"`
	}
	if strictjson.Unmarshal(payload, &c, &strictjson.Options{AllowUnknown: true}) != nil {
		return ""
	}
	return c.ID
}

// eachEntry calls fn for the entries [from, from+n) of src.
func eachEntry(ctx context.Context, src Source, size client.TreeSizeFunc, from, n uint64, fn func(uint64, []byte) error) error {
	if n == 0 {
		return nil
	}
	// client.EntryBundles (Tessera v1.0.4) reads up to from+(from+n), not
	// from+n: the loop stops at from+n itself.
	i, end := from, from+n
	for b, err := range client.EntryBundles(ctx, 2, size, src.ReadEntryBundle, from, n) {
		if err != nil {
			return err
		}
		var eb api.EntryBundle
		if err := eb.UnmarshalText(b.Data); err != nil {
			return err
		}
		if int(b.RangeInfo.First+b.RangeInfo.N) > len(eb.Entries) {
			return fmt.Errorf("audit: entry bundle %d is short", b.RangeInfo.Index)
		}
		for _, data := range eb.Entries[b.RangeInfo.First : b.RangeInfo.First+b.RangeInfo.N] {
			if i == end {
				return nil
			}
			if err := fn(i, data); err != nil {
				return err
			}
			i++
		}
	}
	return nil
}

// IsBundle reports whether the start of a file is an export bundle.
func IsBundle(head []byte) bool {
	return bytes.HasPrefix(head, []byte(`{"bundle":"`+BundleFormat+`"`))
}

// VerifyBundle checks an export bundle read from r, streaming: the
// checkpoint under opts.Verifier, each entry's inclusion proof against it,
// indexes strictly increasing, and each entry's form and evidence as
// Verify does. Report.Size is the checkpoint's; Kinds counts the entries
// of the bundle.
func VerifyBundle(ctx context.Context, r io.Reader, opts VerifyOptions) (*Report, error) {
	if opts.Verifier == nil {
		return nil, errors.New("audit: VerifyOptions.Verifier is required")
	}
	if opts.MaxProblems <= 0 {
		opts.MaxProblems = 100
	}
	rep := &Report{Origin: opts.Verifier.Name(), Kinds: map[string]uint64{}}
	add := func(index int64, code, format string, args ...any) {
		if len(rep.Problems) >= opts.MaxProblems {
			rep.Omitted++
			return
		}
		rep.Problems = append(rep.Problems, Problem{Index: index, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	if !sc.Scan() {
		return nil, errors.New("audit: empty bundle")
	}
	var h BundleHeader
	if err := strictjson.Unmarshal(sc.Bytes(), &h, nil); err != nil || h.Bundle != BundleFormat {
		return nil, errors.New("audit: not an export bundle")
	}
	rep.Checkpoint = []byte(h.Checkpoint)
	cp, err := ParseCheckpoint([]byte(h.Checkpoint), opts.Verifier)
	if err != nil {
		add(-1, CodeCheckpoint, "%v", err)
		return rep, nil
	}
	rep.Size, rep.Root = cp.Size, cp.Hash
	ev := newEvidenceChecker(opts.JWKS)
	next := int64(-1)
	for sc.Scan() {
		p, err := ParseProof(sc.Bytes())
		if err != nil {
			add(next+1, CodeEntry, "%v", err)
			continue
		}
		if int64(p.Index) <= next {
			add(int64(p.Index), CodeTree, "entries out of order: %d after %d", p.Index, next)
			continue
		}
		next = int64(p.Index)
		p.Checkpoint = h.Checkpoint
		if _, _, err := p.Check(opts.Verifier); err != nil {
			add(int64(p.Index), CodeTree, "%v", err)
			continue
		}
		ev.check(p.Index, p.Entry, rep, add, opts.Visit)
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	rep.Subjects = ev.subjects()
	return rep, nil
}
