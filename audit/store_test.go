package audit_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/transparency-dev/tessera/api/layout"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// testStores are the stores, for tests and benchmarks that run on each.
var testStores = []struct {
	name  string
	store audit.Store
}{{"tlog", audit.StoreTlog}, {"tessera", audit.StoreTessera}}

// storeLog opens the log in dir on store.
func storeLog(t *testing.T, dir string, signer note.Signer, store audit.Store) *audit.Log {
	t.Helper()
	l, err := audit.Open(context.Background(), audit.Config{Dir: dir, Signer: signer, Store: store, CheckpointInterval: audit.MinCheckpointInterval})
	must(t, err)
	return l
}

// addGroups adds entries from..from+sum(groups)-1 ("entry N"), each group
// added at once, and waits for each group's indexes.
func addGroups(t *testing.T, l *audit.Log, from int, groups ...int) int {
	t.Helper()
	for _, g := range groups {
		fs := make([]audit.Future, g)
		for i := range fs {
			fs[i] = l.AddRaw(context.Background(), fmt.Appendf(nil, "entry %d", from+i))
		}
		for i, f := range fs {
			idx, err := f()
			must(t, err)
			if idx != uint64(from+i) {
				t.Fatalf("entry %d got index %d", from+i, idx)
			}
		}
		from += g
	}
	return from
}

// closeLog closes l: the checkpoint then covers every entry.
func closeLog(t *testing.T, l *audit.Log) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), sigiltest.WaitLimit) // a safety limit
	defer cancel()
	must(t, l.Close(ctx))
}

// files reads what a reader of a log of n entries reads: the checkpoint,
// every entry bundle and every hash tile at that size.
func files(t *testing.T, dir string, n int64) map[string][]byte {
	t.Helper()
	src := audit.DirSource(dir)
	ctx := context.Background()
	out := map[string][]byte{}
	cp, err := src.ReadCheckpoint(ctx)
	must(t, err)
	out["checkpoint"] = cp
	for _, tl := range tlog.NewTiles(8, 0, n) {
		p := uint8(tl.W % 256)
		b, err := src.ReadTile(ctx, uint64(tl.L), uint64(tl.N), p)
		must(t, err)
		out[layout.TilePath(uint64(tl.L), uint64(tl.N), p)] = b
		if tl.L == 0 {
			b, err := src.ReadEntryBundle(ctx, uint64(tl.N), p)
			must(t, err)
			out[layout.EntriesPath(uint64(tl.N), p)] = b
		}
	}
	return out
}

func sameFiles(t *testing.T, what string, got, want map[string][]byte) {
	t.Helper()
	if len(got) != len(want) {
		t.Errorf("%s: %d files, want %d", what, len(got), len(want))
	}
	for p, w := range want {
		if !bytes.Equal(got[p], w) {
			t.Errorf("%s: %s differs", what, p)
		}
	}
}

func testSigner(t *testing.T) note.Signer {
	t.Helper()
	skey, _, err := audit.GenerateKey("sigil.test/audit")
	must(t, err)
	signer, err := note.NewSigner(skey)
	must(t, err)
	return signer
}

// The tlog store writes, byte for byte, the log Tessera's POSIX driver
// writes for the same entries: the checkpoint (same origin, size, root and
// signature), the entry bundles and the hash tiles, partial ones included.
func TestStoresWriteTheSameLog(t *testing.T) {
	signer := testSigner(t)
	groups := []int{1, 7, 300, 292, 50} // crosses bundles and a level-1 tile
	var logs []map[string][]byte
	for _, store := range []audit.Store{audit.StoreTlog, audit.StoreTessera} {
		dir := t.TempDir()
		l := storeLog(t, dir, signer, store)
		n := addGroups(t, l, 0, groups...)
		closeLog(t, l)
		logs = append(logs, files(t, dir, int64(n)))
		if store == audit.StoreTlog {
			// The partial files of full tiles and bundles are gone.
			for _, p := range []string{layout.EntriesPath(0, 0) + ".p", layout.TilePath(0, 0, 0) + ".p", layout.TilePath(0, 1, 0) + ".p"} {
				if _, err := os.Stat(filepath.Join(dir, p)); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s: %v", p, err)
				}
			}
		}
	}
	sameFiles(t, "tlog against Tessera", logs[0], logs[1])
}

// The tlog store keeps the files of collected partial tiles and bundles
// (at close here, a minute after their tile fills in a running log) in
// .spare/, and later batches overwrite them in place of new files: the
// log is the same, byte for byte, as one written at once, and a spare
// larger than what it now holds is cut to size.
func TestTlogStoreRecyclesPartialFiles(t *testing.T) {
	signer := testSigner(t)
	dir, ref := t.TempDir(), t.TempDir()
	spares := func() int {
		des, err := os.ReadDir(filepath.Join(dir, ".spare"))
		must(t, err)
		return len(des)
	}
	l := storeLog(t, dir, signer, audit.StoreTlog)
	// 20 batches of one entry, then bundles 0 and 1 and level-0 tiles 0
	// and 1 fill: at least 20 partial files each for bundle and tile 0.
	n := addGroups(t, l, 0, append(slices.Repeat([]int{1}, 20), 300, 292, 50)...)
	if got := spares(); got != 0 {
		t.Fatalf("%d spare files before any tile filled and was collected", got)
	}
	closeLog(t, l)
	kept := spares()
	if kept < 40 {
		t.Fatalf("%d spare files kept at close, want 40 or more", kept)
	}
	// A stray directory among the spares is left alone.
	must(t, os.Mkdir(filepath.Join(dir, ".spare", "stray"), 0o755))
	l = storeLog(t, dir, signer, audit.StoreTlog)
	n = addGroups(t, l, n, 3, 1, 200)
	// Each batch (at least 3) wrote at least 3 files (entry bundle and
	// tiles of levels 0 and 1), each a spare.
	if got := spares(); got > kept+1-9 {
		t.Fatalf("%d spare files (and the stray) after 3 batches, had %d and the stray", got, kept)
	}
	closeLog(t, l)
	r := storeLog(t, ref, signer, audit.StoreTlog)
	addGroups(t, r, 0, n)
	closeLog(t, r)
	sameFiles(t, "with recycled files", files(t, dir, int64(n)), files(t, ref, int64(n)))
}

// The tlog store's state is its checkpoint: it reopens a log at the
// checkpoint's size, overwrites what a crash left beyond it, and refuses
// a log whose tiles do not hash to its checkpoint.
func TestTlogStoreReopens(t *testing.T) {
	signer := testSigner(t)
	dir, ref := t.TempDir(), t.TempDir()
	l := storeLog(t, dir, signer, audit.StoreTlog)
	n := addGroups(t, l, 0, 300)
	closeLog(t, l)
	// A batch that a crash cut short: its bundle and tile written, not
	// its checkpoint (300 + 56 entries: bundle 1 and tile 0/1 of width 100).
	for _, p := range []string{layout.EntriesPath(1, 100), layout.TilePath(0, 1, 100), ".checkpoint.tmp"} {
		must(t, os.MkdirAll(filepath.Dir(filepath.Join(dir, p)), 0o755))
		must(t, os.WriteFile(filepath.Join(dir, p), []byte("torn"), 0o644))
	}
	l = storeLog(t, dir, signer, audit.StoreTlog)
	if size, err := l.Size(context.Background()); err != nil || size != 300 {
		t.Fatalf("reopened at %d (%v), want 300", size, err)
	}
	// One writer at a time.
	if _, err := audit.Open(context.Background(), audit.Config{Dir: dir, Signer: signer}); err == nil || !strings.Contains(err.Error(), "another writer has it open") {
		t.Fatalf("a second writer: %v", err)
	}
	n = addGroups(t, l, n, 56, 1)
	closeLog(t, l)
	// The same entries written at once.
	r := storeLog(t, ref, signer, audit.StoreTlog)
	addGroups(t, r, 0, n)
	closeLog(t, r)
	sameFiles(t, "reopened", files(t, dir, int64(n)), files(t, ref, int64(n)))

	// An edited hash tile or entry: refused.
	for _, p := range []string{layout.TilePath(0, 1, 101), layout.EntriesPath(1, 101)} {
		name := filepath.Join(dir, p)
		b, err := os.ReadFile(name)
		must(t, err)
		must(t, os.WriteFile(name, append(b[:40:40], append([]byte{b[40] ^ 1}, b[41:]...)...), 0o644))
		_, err = audit.Open(context.Background(), audit.Config{Dir: dir, Signer: signer})
		if err == nil || !strings.Contains(err.Error(), "hash to the checkpoint") {
			t.Fatalf("%s edited: %v", p, err)
		}
		must(t, os.WriteFile(name, b, 0o644))
	}
	// Tiles without a checkpoint: refused, not overwritten.
	must(t, os.Rename(filepath.Join(ref, "checkpoint"), filepath.Join(ref, "checkpoint.old")))
	_, err := audit.Open(context.Background(), audit.Config{Dir: ref, Signer: signer})
	if err == nil || !strings.Contains(err.Error(), "has tiles but no checkpoint") {
		t.Fatalf("no checkpoint: %v", err)
	}
	must(t, os.Rename(filepath.Join(ref, "checkpoint.old"), filepath.Join(ref, "checkpoint")))
	// Another log's key: refused.
	_, err = audit.Open(context.Background(), audit.Config{Dir: ref, Signer: otherSigner(t)})
	if err == nil || !strings.Contains(err.Error(), `holds the log "sigil.test/audit"`) {
		t.Fatalf("another key: %v", err)
	}
}

func otherSigner(t *testing.T) note.Signer {
	t.Helper()
	skey, _, err := audit.GenerateKey("sigil.test/other")
	must(t, err)
	signer, err := note.NewSigner(skey)
	must(t, err)
	return signer
}

// The tlog store continues a log Tessera wrote, including entries Tessera
// integrated (and acknowledged) that its timed checkpoint did not cover
// when it stopped; Tessera then refuses the log, which it would overwrite
// from its own older state.
func TestTlogStoreContinuesTessera(t *testing.T) {
	signer := testSigner(t)
	dir, ref := t.TempDir(), t.TempDir()
	l := storeLog(t, dir, signer, audit.StoreTessera)
	n := addGroups(t, l, 0, 300)
	closeLog(t, l)
	old, err := os.ReadFile(filepath.Join(dir, "checkpoint"))
	must(t, err)
	l = storeLog(t, dir, signer, audit.StoreTessera)
	n = addGroups(t, l, n, 50)
	closeLog(t, l)
	// Stopped before its checkpoint covered the last 50.
	must(t, os.WriteFile(filepath.Join(dir, "checkpoint"), old, 0o644))

	l = storeLog(t, dir, signer, audit.StoreTlog)
	if size, err := l.Size(context.Background()); err != nil || size != 350 {
		t.Fatalf("the tlog store continues at %d (%v), want 350", size, err)
	}
	n = addGroups(t, l, n, 20)
	closeLog(t, l)
	r := storeLog(t, ref, signer, audit.StoreTlog)
	addGroups(t, r, 0, n)
	closeLog(t, r)
	sameFiles(t, "continued", files(t, dir, int64(n)), files(t, ref, int64(n)))

	_, err = audit.Open(context.Background(), audit.Config{Dir: dir, Signer: signer, Store: audit.StoreTessera})
	if err == nil || !strings.Contains(err.Error(), "open it with StoreTlog") {
		t.Fatalf("Tessera on a log the tlog store extended: %v", err)
	}
	_, err = audit.Open(context.Background(), audit.Config{Dir: ref, Signer: signer, Store: audit.StoreTessera})
	if err == nil || !strings.Contains(err.Error(), "open it with StoreTlog") {
		t.Fatalf("Tessera on a log the tlog store wrote: %v", err)
	}
}

// Close that stops waiting (its context done) while groups are being
// written: each entry then resolves to its index or ErrClosed, the
// indexes given are the log's first entries, and the log reopens at their
// number.
func TestTlogStoreCloseDuringWrites(t *testing.T) {
	signer := testSigner(t)
	dir := t.TempDir()
	l := storeLog(t, dir, signer, audit.StoreTlog)
	fs := make([]audit.Future, 3000)
	for i := range fs {
		fs[i] = l.AddRaw(context.Background(), fmt.Appendf(nil, "entry %d", i))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	must(t, l.Close(ctx))
	n := 0
	for i, f := range fs {
		idx, err := f()
		switch {
		case err == nil && idx == uint64(i) && n == i:
			n++
		case errors.Is(err, audit.ErrClosed) && n <= i:
		default:
			t.Fatalf("entry %d: index %d, %v (after %d written)", i, idx, err, n)
		}
	}
	l = storeLog(t, dir, signer, audit.StoreTlog)
	defer closeLog(t, l)
	if size, err := l.Size(context.Background()); err != nil || size != uint64(n) {
		t.Fatalf("reopened at %d (%v), want %d", size, err, n)
	}
	t.Logf("%d of %d entries written before Close", n, len(fs))
}
