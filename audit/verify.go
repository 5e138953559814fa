package audit

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"github.com/transparency-dev/tessera/api"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
)

// Source reads a log's static resources (C2SP tlog-tiles): a directory
// (DirSource), a URL (URLSource) or an open Log (Log.Source).
type Source interface {
	ReadCheckpoint(ctx context.Context) ([]byte, error)
	ReadTile(ctx context.Context, level, index uint64, p uint8) ([]byte, error)
	ReadEntryBundle(ctx context.Context, index uint64, p uint8) ([]byte, error)
}

// DirSource reads the log in directory dir.
func DirSource(dir string) Source { return client.FileFetcher{Root: dir} }

// URLSource reads the log served at base (for a Sigil server,
// https://host/v1/audit/). hc may be nil (http.DefaultClient).
func URLSource(base string, hc *http.Client) (Source, error) {
	u, err := url.Parse(base)
	if err != nil {
		return nil, err
	}
	if u.Scheme != "https" && u.Scheme != "http" {
		return nil, fmt.Errorf("audit: %s is not an http(s) URL", base)
	}
	return client.NewHTTPFetcher(u, hc)
}

// Problem codes of a Report (spec.md §15, §21.5).
const (
	// CodeCheckpoint: the checkpoint is missing, malformed, or its
	// signature does not verify under the trusted key.
	CodeCheckpoint = "audit_checkpoint"
	// CodeInconsistent: the checkpoint does not extend a checkpoint seen
	// before: the log was rolled back or forked.
	CodeInconsistent = "audit_inconsistent"
	// CodeTree: an entry or a tile does not hash to the checkpoint: an
	// entry was edited, deleted, inserted or moved.
	CodeTree = "audit_tree"
	// CodeEntry: an entry is not a strict entry of spec.md §21.2.
	CodeEntry = "audit_entry"
	// CodeEvidence: an entry's frame, token or key binding does not verify
	// (spec.md §14), or names a token the log does not hold before it.
	CodeEvidence = "audit_evidence"
)

// Problem is one finding of Verify. Index is the entry it concerns, or -1
// for the log as a whole.
type Problem struct {
	Index   int64  `json:"index"`
	Code    string `json:"code"`
	Message string `json:"message"`
}

func (p Problem) String() string {
	if p.Index < 0 {
		return fmt.Sprintf("%s: %s", p.Code, p.Message)
	}
	return fmt.Sprintf("entry %d: %s: %s", p.Index, p.Code, p.Message)
}

// Report is the result of Verify.
type Report struct {
	Origin     string            `json:"origin"`
	Size       uint64            `json:"size"`       // entries the checkpoint commits to
	Root       []byte            `json:"root"`       // its root hash
	Checkpoint []byte            `json:"checkpoint"` // the checkpoint verified, as read
	Kinds      map[string]uint64 `json:"kinds"`      // entries by kind
	Subjects   []string          `json:"subjects"`   // the senders: distinct subjects of frame entries, sorted
	First      int64             `json:"first"`      // earliest entry time, Unix ms (0: none)
	Last       int64             `json:"last"`       // latest entry time, Unix ms
	Problems   []Problem         `json:"problems"`
	// Omitted counts problems beyond VerifyOptions.MaxProblems.
	Omitted int `json:"omitted,omitempty"`
}

// OK reports a log without problems.
func (r *Report) OK() bool { return len(r.Problems) == 0 && r.Omitted == 0 }

// VerifyOptions tune Verify.
type VerifyOptions struct {
	// Verifier is the checkpoint key trusted (required).
	Verifier note.Verifier
	// Previous is a checkpoint of this log seen before (by an earlier
	// run, a client, a witness): the checkpoint read must extend it, with
	// a consistency proof. Default none.
	Previous []byte
	// JWKS pins the server's public keys. Default: the keys entries of the
	// log itself (spec.md §21.2), which the checkpoint signature covers.
	JWKS *protocol.KeySet
	// MaxProblems bounds Report.Problems. Default 100.
	MaxProblems int
	// Visit, if set, is called for each entry that verified, in order.
	Visit func(index uint64, raw []byte, e *Entry, ev *protocol.Evidence)
}

// ParseCheckpoint verifies a checkpoint's signature under v and parses it.
func ParseCheckpoint(cp []byte, v note.Verifier) (*log.Checkpoint, error) {
	c, _, _, err := log.ParseCheckpoint(cp, v.Name(), v)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// Verify checks the log that src reads, streaming: the checkpoint's
// signature; its consistency with opts.Previous; that every entry and
// every tile hashes to the checkpoint's root; that every entry is strict;
// and the evidence of every entry (spec.md §21.5). Memory stays flat in
// the number of entries (it grows with the number of sessions, whose
// tokens it keeps by jti). The error is for a failure to read the log
// (a problem found is in the Report).
func Verify(ctx context.Context, src Source, opts VerifyOptions) (*Report, error) {
	if opts.Verifier == nil {
		return nil, errors.New("audit: VerifyOptions.Verifier is required")
	}
	if opts.MaxProblems <= 0 {
		opts.MaxProblems = 100
	}
	r := &Report{Origin: opts.Verifier.Name(), Kinds: map[string]uint64{}}
	add := func(index int64, code, format string, args ...any) {
		if len(r.Problems) >= opts.MaxProblems {
			r.Omitted++
			return
		}
		r.Problems = append(r.Problems, Problem{Index: index, Code: code, Message: fmt.Sprintf(format, args...)})
	}
	raw, err := src.ReadCheckpoint(ctx)
	if err != nil {
		add(-1, CodeCheckpoint, "no checkpoint: %v", err)
		return r, nil
	}
	r.Checkpoint = raw
	cp, err := ParseCheckpoint(raw, opts.Verifier)
	if err != nil {
		add(-1, CodeCheckpoint, "%v", err)
		return r, nil
	}
	r.Size, r.Root = cp.Size, cp.Hash
	if opts.Previous != nil {
		if p := checkPrevious(ctx, src, opts, cp); p != nil {
			add(p.Index, p.Code, "%s", p.Message)
		}
	}
	w := newWalker(ctx, src, cp.Size)
	ev := newEvidenceChecker(opts.JWKS)
	idx := uint64(0)
	for b, err := range client.EntryBundles(ctx, 2, func(context.Context) (uint64, error) { return cp.Size, nil }, src.ReadEntryBundle, 0, cp.Size) {
		if err != nil {
			add(int64(idx), CodeTree, "entry bundle unreadable: %v", err)
			break
		}
		var eb api.EntryBundle
		if err := eb.UnmarshalText(b.Data); err != nil {
			add(int64(idx), CodeTree, "entry bundle %d is malformed: %v", b.RangeInfo.Index, err)
			break
		}
		want := int(b.RangeInfo.First + b.RangeInfo.N)
		if len(eb.Entries) < want {
			// The bundle lacks entries: check those it has, then stop.
			want = len(eb.Entries)
		}
		for _, data := range eb.Entries[b.RangeInfo.First:want] {
			if err := w.leaf(idx, data); err != nil {
				add(int64(w.badAt), CodeTree, "%v", err)
			}
			ev.check(idx, data, r, add, opts.Visit)
			idx++
		}
		if want < int(b.RangeInfo.First+b.RangeInfo.N) {
			add(int64(idx), CodeTree, "entry bundle %d ends early: entries %d and after are missing", b.RangeInfo.Index, idx)
			break
		}
	}
	if idx == cp.Size && !w.broken {
		if root, err := w.root(); err != nil {
			add(-1, CodeTree, "%v", err)
		} else if !bytes.Equal(root, cp.Hash) {
			add(-1, CodeTree, "the entries hash to %x, not to the checkpoint's root %x", root, cp.Hash)
		}
	}
	r.Subjects = ev.subjects()
	return r, nil
}

// checkPrevious checks that cp extends prev: same origin, not smaller, and
// a consistency proof from the tiles that verifies.
func checkPrevious(ctx context.Context, src Source, opts VerifyOptions, cp *log.Checkpoint) *Problem {
	prev, err := ParseCheckpoint(opts.Previous, opts.Verifier)
	if err != nil {
		return &Problem{Index: -1, Code: CodeCheckpoint, Message: "the previous checkpoint: " + err.Error()}
	}
	if cp.Size < prev.Size {
		return &Problem{Index: int64(cp.Size), Code: CodeInconsistent,
			Message: fmt.Sprintf("the log was rolled back: its checkpoint has %d entries, one seen before had %d", cp.Size, prev.Size)}
	}
	if err := Consistent(ctx, src, prev, cp); err != nil {
		return &Problem{Index: -1, Code: CodeInconsistent, Message: err.Error()}
	}
	return nil
}

// Consistent checks, with a consistency proof built from src's tiles,
// that checkpoint b extends checkpoint a (RFC 9162 §2.1.4).
func Consistent(ctx context.Context, src Source, a, b *log.Checkpoint) error {
	if a.Size > b.Size {
		return fmt.Errorf("checkpoint of size %d cannot extend one of size %d", b.Size, a.Size)
	}
	var hashes [][]byte
	if a.Size > 0 && a.Size < b.Size {
		pb, err := client.NewProofBuilder(ctx, b.Size, src.ReadTile)
		if err != nil {
			return err
		}
		if hashes, err = pb.ConsistencyProof(ctx, a.Size, b.Size); err != nil {
			return err
		}
	}
	if err := proof.VerifyConsistency(rfc6962.DefaultHasher, a.Size, b.Size, hashes, a.Hash, b.Hash); err != nil {
		return fmt.Errorf("the checkpoint of size %d is not consistent with the one of size %d: %w", b.Size, a.Size, err)
	}
	return nil
}

// walker hashes the entries into a compact range (RFC 6962) and compares
// every node it completes at a tile level (height 8L) with the hash the
// log's tile holds: one tile per level is kept.
type walker struct {
	ctx    context.Context
	src    Source
	size   uint64
	rng    *compact.Range
	tiles  map[uint64]*tileCache // by tile level
	broken bool                  // a leaf is missing: no root
	badAt  uint64                // first leaf of the subtree that mismatched
	bad    bool                  // a mismatch was reported (only the first is)
}

type tileCache struct {
	index uint64
	nodes [][]byte
}

func newWalker(ctx context.Context, src Source, size uint64) *walker {
	f := compact.RangeFactory{Hash: rfc6962.DefaultHasher.HashChildren}
	return &walker{ctx: ctx, src: src, size: size, rng: f.NewEmptyRange(0), tiles: map[uint64]*tileCache{}}
}

func (w *walker) leaf(index uint64, data []byte) error {
	var mismatch error
	visit := func(id compact.NodeID, hash []byte) {
		if mismatch != nil || id.Level%layout.TileHeight != 0 {
			return
		}
		if err := w.compare(uint64(id.Level/layout.TileHeight), id.Index, hash); err != nil {
			mismatch = err
			w.badAt = id.Index << id.Level
		}
	}
	if err := w.rng.Append(rfc6962.DefaultHasher.HashLeaf(data), visit); err != nil {
		return err
	}
	if mismatch != nil && !w.bad {
		w.bad = true
		return mismatch
	}
	_ = index
	return nil
}

// compare checks node n of tile level l (tree height 8l) against its tile.
func (w *walker) compare(l, n uint64, hash []byte) error {
	ti, pos := n/layout.TileWidth, n%layout.TileWidth
	tc := w.tiles[l]
	if tc == nil || tc.index != ti {
		p := layout.PartialTileSize(l, ti, w.size)
		raw, err := w.src.ReadTile(w.ctx, l, ti, p)
		if err != nil {
			return fmt.Errorf("tile %d/%d unreadable: %v", l, ti, err)
		}
		var ht api.HashTile
		if err := ht.UnmarshalText(raw); err != nil {
			return fmt.Errorf("tile %d/%d is malformed: %v", l, ti, err)
		}
		tc = &tileCache{index: ti, nodes: ht.Nodes}
		w.tiles[l] = tc
	}
	if pos >= uint64(len(tc.nodes)) {
		return fmt.Errorf("tile %d/%d has %d hashes, not %d", l, ti, len(tc.nodes), pos+1)
	}
	if !bytes.Equal(tc.nodes[pos], hash) {
		if l == 0 {
			return fmt.Errorf("the entry does not hash to the log's tile (edited, deleted, inserted or moved)")
		}
		return fmt.Errorf("the entries from here do not hash to tile %d/%d", l, ti)
	}
	return nil
}

func (w *walker) root() ([]byte, error) {
	if w.size == 0 {
		return rfc6962.DefaultHasher.EmptyRoot(), nil
	}
	return w.rng.GetRootHash(nil)
}

// evidenceChecker checks each entry's form and evidence (spec.md §21.5):
// the server keys from keys entries (or pinned), and the tokens by jti.
type evidenceChecker struct {
	pinned  *protocol.KeySet
	keys    *protocol.KeySet
	all     []*protocol.PublicKey
	tokens  map[string]tokenInfo
	senders map[string]struct{}
}

type tokenInfo struct {
	claims *protocol.SessionClaims
	key    *protocol.PublicKey
}

func newEvidenceChecker(pinned *protocol.KeySet) *evidenceChecker {
	return &evidenceChecker{pinned: pinned, keys: pinned, tokens: map[string]tokenInfo{}, senders: map[string]struct{}{}}
}

func (c *evidenceChecker) keyByID(kid string) (*protocol.PublicKey, bool) {
	if c.keys == nil {
		return nil, false
	}
	return c.keys.Key(kid)
}

func (c *evidenceChecker) subjects() []string {
	return slices.Sorted(maps.Keys(c.senders))
}

func (c *evidenceChecker) check(index uint64, data []byte, r *Report, add func(int64, string, string, ...any), visit func(uint64, []byte, *Entry, *protocol.Evidence)) {
	i := int64(index)
	e, err := ParseEntry(data)
	if err != nil {
		add(i, CodeEntry, "%v", err)
		return
	}
	r.Kinds[e.Kind]++
	if r.First == 0 || e.Time < r.First {
		r.First = e.Time
	}
	r.Last = max(r.Last, e.Time)
	var ev *protocol.Evidence
	switch e.Kind {
	case KindKeys:
		ks, err := protocol.ParseKeySet(e.JWKS)
		if err != nil {
			add(i, CodeEntry, "keys: %v", err)
			return
		}
		if c.pinned == nil {
			// The keys logged so far, each once: a kid names one key.
			grew := false
			for _, k := range ks.Keys() {
				if old, ok := c.keyByID(k.KeyID()); ok {
					if old.Thumbprint() != k.Thumbprint() {
						add(i, CodeEvidence, "keys: kid %s names another key than before", k.KeyID())
						return
					}
					continue
				}
				c.all, grew = append(c.all, k), true
			}
			if grew {
				if c.keys, err = protocol.NewKeySet(c.all...); err != nil {
					add(i, CodeEntry, "keys: %v", err)
					return
				}
			}
		}
	case KindToken:
		if c.keys == nil {
			add(i, CodeEvidence, "a token before any keys entry")
			return
		}
		claims, key, err := protocol.VerifyTokenEvidence(c.keys, e.Token, e.JWK)
		if err != nil {
			add(i, CodeEvidence, "token: %s: %v", protocol.CodeOf(err), err)
			return
		}
		c.tokens[claims.ID] = tokenInfo{claims, key}
	case KindFrame:
		t, ok := c.tokens[e.JTI]
		if !ok {
			add(i, CodeEvidence, "frame: no token entry with jti %s before it", e.JTI)
			return
		}
		if t.key.Thumbprint() != e.JKT {
			add(i, CodeEvidence, "frame: jkt is not the thumbprint of the token's key")
			return
		}
		if k, err := protocol.ParsePublicJWK(e.JWK); err != nil || k.Thumbprint() != e.JKT {
			add(i, CodeEvidence, "frame: jwk is not the key named by jkt")
			return
		}
		if ev, err = protocol.VerifyFrameEvidence(t.claims, t.key, []byte(e.Frame)); err != nil {
			add(i, CodeEvidence, "frame: %s: %v", protocol.CodeOf(err), err)
			return
		}
		c.senders[ev.Subject] = struct{}{}
	case KindServer:
		if c.keys == nil {
			add(i, CodeEvidence, "a server frame before any keys entry")
			return
		}
		if ev, err = protocol.VerifyPublishedEvidence(c.keys, []byte(e.Frame)); err != nil {
			add(i, CodeEvidence, "server frame: %s: %v", protocol.CodeOf(err), err)
			return
		}
	}
	if visit != nil {
		visit(index, data, e, ev)
	}
}

// Since reports entry times as a time.
func Since(ms int64) time.Time { return time.UnixMilli(ms) }
