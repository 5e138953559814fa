package audit

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/client"
	"golang.org/x/mod/sumdb/note"
	"golang.org/x/mod/sumdb/tlog"
)

// tlogStore writes the log itself (StoreTlog), in the C2SP tlog-tiles
// layout that Tessera's POSIX driver writes: the checkpoint, hash tiles
// tile/<L>/<N>[.p/<W>] and entry bundles tile/entries/<N>[.p/<W>] (each
// entry as a 2-byte big-endian length and its bytes). Every hash, tile
// and root comes from golang.org/x/mod/sumdb/tlog (tiles of height 8, as
// C2SP's); this file only stores them.
//
// A group is one batch: its bundles and tiles are written and fsynced
// (the files, then the directories that gained a name), then a checkpoint
// covering it is signed and put in place atomically (publish). The
// checkpoint is the log's state: a crash never leaves one that covers
// data not on disk, and whatever lies beyond it is overwritten by the
// next batch. Partial tiles and bundles of a tile that has since filled
// are collected a minute later, or when the log is closed (readers fall
// back to the full one, as Tessera's clients do; a crash leaves them):
// their files become spares (spareDir), which later batches write and
// rename into place instead of creating files.
type tlogStore struct {
	client.FileFetcher // reads, as DirSource
	dir                string
	signer             note.Signer
	lock               *os.File
	n                  atomic.Uint64 // entries covered by the checkpoint

	// Owned by write (Log.commit: calls do not overlap), open and close;
	// mu keeps close from running during a write (Log.Close gave up
	// waiting for the writes).
	mu     sync.Mutex
	closed bool
	edges  []edgeTile // the rightmost tile of each level, by level
	bundle []byte     // the partial entry bundle at n (n%256 entries)
	dirs   map[string]bool
	open   map[string]*os.File // directories kept open to fsync, by name
	gc     []gcDir
	spares []spareFile // in spareDir, the newest last
	spared int64       // their bytes
	seq    uint64      // the last spare's name
	broken error       // every write fails with it
}

// spareFile is a file of a collected partial tile or bundle, kept in
// spareDir for a later batch to rename into place and overwrite.
type spareFile struct {
	name string
	size int64
}

// spareDir (a dot name: not served) holds the files of collected partial
// tiles and bundles. A batch renames one into place for each file it
// writes, as long as there are some, instead of creating a file: on ext4,
// creating a file near recently deleted ones searched the inode table
// (recently_deleted), and that was most of a batch's system CPU when the
// partial files were deleted instead (README, audit log figures). At most
// maxSpares files and maxSpareBytes bytes are kept; the rest are removed.
const (
	spareDir      = ".spare"
	maxSpares     = 1024
	maxSpareBytes = 64 << 20
)

// edgeTile is the latest tile of a level: the hashes of its bottom row.
type edgeTile struct {
	n    int64
	data []byte // W hashes
}

// gcDir is the partial files' directory of a tile or bundle now full.
type gcDir struct {
	path string
	at   time.Time
}

// tileHeight is C2SP tlog-tiles' (and Tessera's) tile height.
const tileHeight = 8

// gcDelay is how long the partial files of a full tile stay for readers
// of an older checkpoint (Tessera's default collection interval).
const gcDelay = time.Minute

// openTlog opens the log in cfg.Dir, holding .lock (not served: a dot
// name) until close, so that a second writer fails at once.
func openTlog(cfg Config) (*tlogStore, error) {
	lock, err := lockFile(filepath.Join(cfg.Dir, ".lock"))
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", cfg.Dir, err)
	}
	s, err := loadTlog(cfg)
	if err != nil {
		lock.Close()
		return nil, err
	}
	s.lock = lock
	s.loadSpares()
	return s, nil
}

// loadSpares finds the spare files that an earlier writer left. The
// directory is the store's own: a failure only means no spares.
func (s *tlogStore) loadSpares() {
	dir := filepath.Join(s.dir, spareDir)
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return
	}
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		name := filepath.Join(dir, de.Name())
		fi, err := de.Info()
		if err != nil || !fi.Mode().IsRegular() {
			continue
		}
		if !s.keepSpare(name, fi.Size()) {
			_ = os.Remove(name)
		}
		if n, err := strconv.ParseUint(de.Name(), 10, 64); err == nil && n > s.seq {
			s.seq = n
		}
	}
}

// keepSpare adds the spare file name of size bytes to the pool, if there
// is room.
func (s *tlogStore) keepSpare(name string, size int64) bool {
	if len(s.spares) >= maxSpares || s.spared+size > maxSpareBytes {
		return false
	}
	s.spares = append(s.spares, spareFile{name, size})
	s.spared += size
	return true
}

// reclaim moves the files of the directory dir (a collected .p/
// directory) to the spares, removes those there is no room for, and dir.
func (s *tlogStore) reclaim(dir string) {
	des, _ := os.ReadDir(dir)
	for _, de := range des {
		name := filepath.Join(dir, de.Name())
		if fi, err := de.Info(); err == nil && fi.Mode().IsRegular() && len(s.spares) < maxSpares && s.spared+fi.Size() <= maxSpareBytes {
			s.seq++
			spare := filepath.Join(s.dir, spareDir, strconv.FormatUint(s.seq, 10))
			if rename(name, spare) == nil {
				s.keepSpare(spare, fi.Size())
				continue
			}
		}
		_ = os.RemoveAll(name)
	}
	if fd := s.open[dir]; fd != nil {
		fd.Close()
		delete(s.open, dir)
	}
	_ = os.RemoveAll(dir)
}

// loadTlog reads the log's state: its checkpoint, checked against the
// tiles, and the partial entry bundle.
func loadTlog(cfg Config) (*tlogStore, error) {
	s := &tlogStore{FileFetcher: client.FileFetcher{Root: cfg.Dir}, dir: cfg.Dir, signer: cfg.Signer, dirs: map[string]bool{}}
	raw, err := os.ReadFile(filepath.Join(cfg.Dir, layout.CheckpointPath))
	if errors.Is(err, os.ErrNotExist) {
		// A new log (every log has a checkpoint from its start: tiles
		// without one are not a log to overwrite).
		if _, err := os.Stat(filepath.Join(cfg.Dir, "tile")); err == nil {
			return nil, fmt.Errorf("audit: %s has tiles but no checkpoint", cfg.Dir)
		}
		// Its first checkpoint, of the empty tree.
		empty, err := tlog.TreeHash(0, nil)
		if err != nil {
			return nil, err
		}
		if err := s.publish(0, empty); err != nil {
			return nil, err
		}
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	cp, err := checkpointBody(raw)
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", filepath.Join(cfg.Dir, layout.CheckpointPath), err)
	}
	if cp.Origin != cfg.Signer.Name() {
		return nil, fmt.Errorf("audit: %s holds the log %q, not %q", cfg.Dir, cp.Origin, cfg.Signer.Name())
	}
	n, want := int64(cp.Size), cp.Hash
	size, tsRoot, ok, err := tesseraState(cfg.Dir)
	if err != nil {
		return nil, err
	}
	if ok && size > cp.Size {
		// A log Tessera wrote, with entries integrated (and acknowledged)
		// that its timed checkpoint does not cover yet: they are the log's.
		n, want = int64(size), tsRoot
	}
	// The tiles must hash to the checkpoint: this reads the edge tiles.
	root, err := tlog.TreeHash(n, s.reader(n, nil))
	if err != nil {
		return nil, fmt.Errorf("audit: %s: %w", cfg.Dir, err)
	}
	if !bytes.Equal(root[:], want) {
		return nil, fmt.Errorf("audit: %s: the tiles do not hash to the checkpoint (size %d)", cfg.Dir, n)
	}
	if uint64(n) > cp.Size {
		if err := s.publish(uint64(n), root); err != nil {
			return nil, err
		}
	}
	if w := n % layout.EntryBundleWidth; w > 0 {
		b, err := s.ReadEntryBundle(context.Background(), uint64(n/layout.EntryBundleWidth), uint8(w))
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		if s.bundle, err = bundlePrefix(b, int(w)); err != nil {
			return nil, fmt.Errorf("audit: %s: entry bundle %d: %w", cfg.Dir, n/layout.EntryBundleWidth, err)
		}
		// Its entries go into the next bundles: they must be the tree's.
		tile, err := s.edge(n, tlog.Tile{H: tileHeight, L: 0, N: n / layout.EntryBundleWidth, W: int(w)})
		if err != nil {
			return nil, fmt.Errorf("audit: %w", err)
		}
		for i, e := range entries(s.bundle) {
			if h := tlog.RecordHash(e); !bytes.Equal(h[:], tile[i*tlog.HashSize:(i+1)*tlog.HashSize]) {
				return nil, fmt.Errorf("audit: %s: entry %d does not hash to the checkpoint", cfg.Dir, n-w+int64(i))
			}
		}
	}
	s.n.Store(uint64(n))
	return s, nil
}

// checkpointBody parses a signed checkpoint's text, unverified: the log's
// own file, whose root the tiles are then checked against.
func checkpointBody(raw []byte) (*log.Checkpoint, error) {
	i := bytes.Index(raw, []byte("\n\n"))
	if i < 0 {
		return nil, errors.New("not a signed note")
	}
	var cp log.Checkpoint
	if _, err := cp.Unmarshal(raw[:i+1]); err != nil {
		return nil, err
	}
	return &cp, nil
}

// bundlePrefix is the first w entries of bundle b (a full bundle may
// stand in for a partial one).
func bundlePrefix(b []byte, w int) ([]byte, error) {
	off := 0
	for range w {
		if len(b)-off < 2 {
			return nil, errors.New("truncated")
		}
		off += 2 + int(binary.BigEndian.Uint16(b[off:]))
		if off > len(b) {
			return nil, errors.New("truncated")
		}
	}
	return b[:off:off], nil
}

// entries splits a bundle (checked by bundlePrefix) into its entries.
func entries(b []byte) [][]byte {
	var out [][]byte
	for len(b) >= 2 {
		l := 2 + int(binary.BigEndian.Uint16(b))
		out = append(out, b[2:l])
		b = b[l:]
	}
	return out
}

// reader reads stored hashes (tlog.StoredHashIndex) of a tree of n
// entries: fresh[i] is stored hash StoredHashCount(n)+i, written by the
// batch in hand; older ones come from the edge tiles, read from disk on
// first use.
func (s *tlogStore) reader(n int64, fresh *[]tlog.Hash) tlog.HashReader {
	base := tlog.StoredHashCount(n)
	return tlog.HashReaderFunc(func(indexes []int64) ([]tlog.Hash, error) {
		out := make([]tlog.Hash, len(indexes))
		for i, x := range indexes {
			if x >= base {
				if fresh == nil || x-base >= int64(len(*fresh)) {
					return nil, fmt.Errorf("hash %d is beyond the tree", x)
				}
				out[i] = (*fresh)[x-base]
				continue
			}
			t := tlog.TileForIndex(tileHeight, x)
			data, err := s.edge(n, t)
			if err != nil {
				return nil, err
			}
			t.W = len(data) / tlog.HashSize
			if out[i], err = tlog.HashFromTile(t, data, x); err != nil {
				return nil, err
			}
		}
		return out, nil
	})
}

// edge returns the bottom row of tile t (level and index) in a tree of n
// entries: the cached edge tile of its level, or the file.
func (s *tlogStore) edge(n int64, t tlog.Tile) ([]byte, error) {
	for len(s.edges) <= t.L {
		s.edges = append(s.edges, edgeTile{n: -1})
	}
	if e := s.edges[t.L]; e.n == t.N {
		return e.data, nil
	}
	w := int64(tileWidth(n, t.L, t.N))
	if w < int64(t.W) {
		return nil, fmt.Errorf("tile %d/%d is beyond the tree", t.L, t.N)
	}
	data, err := s.ReadTile(context.Background(), uint64(t.L), uint64(t.N), partial(w))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) < w*tlog.HashSize {
		return nil, fmt.Errorf("tile %d/%d is short", t.L, t.N)
	}
	data = data[: w*tlog.HashSize : w*tlog.HashSize]
	s.edges[t.L] = edgeTile{n: t.N, data: data}
	return data, nil
}

// tileWidth is the number of hashes of tile (level l, index i) in a tree
// of n entries (256 for a full tile).
func tileWidth(n int64, l int, i int64) int {
	row := n >> (tileHeight * l) // nodes at the tile's bottom level
	w := row - i<<tileHeight
	return int(max(0, min(w, 1<<tileHeight)))
}

// partial is the C2SP path's partial width: 0 for a full tile or bundle.
func partial(w int64) uint8 {
	if w >= 1<<tileHeight {
		return 0
	}
	return uint8(w)
}

func (s *tlogStore) size(context.Context) (uint64, error) { return s.n.Load(), nil }

// close removes the partial files still kept for readers (after the
// last write: Log.Close): a reader falls back to the full tile.
func (s *tlogStore) close(context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	for _, d := range s.gc {
		s.reclaim(filepath.Join(s.dir, filepath.FromSlash(d.path)))
	}
	s.gc = nil
	s.closeDirs()
	return s.lock.Close()
}

// write appends the group as one batch.
func (s *tlogStore) write(group []*pending) {
	s.mu.Lock()
	defer s.mu.Unlock()
	first := s.n.Load()
	err := s.broken
	if s.closed {
		err = ErrClosed
	}
	if err == nil {
		err = s.append(group)
	}
	for i, p := range group {
		if err != nil {
			p.err = err
		} else {
			p.index = first + uint64(i)
		}
	}
}

// file is a file a batch writes.
type file struct {
	path string // relative to the log's directory
	data []byte
}

func (s *tlogStore) append(group []*pending) error {
	n := int64(s.n.Load())
	k := int64(len(group))
	fresh := make([]tlog.Hash, 0, tlog.StoredHashCount(n+k)-tlog.StoredHashCount(n))
	r := s.reader(n, &fresh)
	var files []file

	// Entry bundles: the partial one at n, completed and continued. The
	// new entries go in the partial one's spare room, which s.bundle does
	// not cover: it stays the bundle at n until the batch is written.
	need := len(s.bundle)
	for _, p := range group {
		need += 2 + len(p.data)
	}
	bundle := slices.Grow(s.bundle, need-len(s.bundle))
	inBundle := n % layout.EntryBundleWidth
	bundleIndex := uint64(n / layout.EntryBundleWidth)
	var full []string // .p/ directories of bundles and tiles filled
	for i, p := range group {
		hs, err := tlog.StoredHashes(n+int64(i), p.data, r)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		fresh = append(fresh, hs...)
		bundle = binary.BigEndian.AppendUint16(bundle, uint16(len(p.data)))
		bundle = append(bundle, p.data...)
		if inBundle++; inBundle == layout.EntryBundleWidth {
			files = append(files, file{layout.EntriesPath(bundleIndex, 0), bundle})
			full = append(full, layout.EntriesPath(bundleIndex, 0)+".p")
			bundle, inBundle = bundle[len(bundle):], 0
			bundleIndex++
		}
	}
	if inBundle > 0 {
		files = append(files, file{layout.EntriesPath(bundleIndex, uint8(inBundle)), bundle})
	}
	// Hash tiles: those the batch changed, at their new width.
	tiles := tlog.NewTiles(tileHeight, n, n+k)
	edges := make([]edgeTile, 0, len(tiles))
	levels := make([]int, 0, len(tiles))
	for _, t := range tiles {
		data, err := tlog.ReadTileData(t, r)
		if err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		p := layout.TilePath(uint64(t.L), uint64(t.N), partial(int64(t.W)))
		files = append(files, file{p, data})
		if t.W == 1<<tileHeight {
			full = append(full, p+".p")
		}
		edges, levels = append(edges, edgeTile{n: t.N, data: data}), append(levels, t.L)
	}
	root, err := tlog.TreeHash(n+k, r)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	if err := s.writeFiles(files); err != nil {
		return err
	}
	if err := s.publish(uint64(n+k), root); err != nil {
		if errors.Is(err, errPublished) {
			// The checkpoint may be the batch's: the log cannot go on
			// from n, nor claim n+k durable (fail closed until reopened).
			s.broken = err
		}
		return err
	}
	// The batch is in the log.
	s.n.Store(uint64(n + k))
	if cap(bundle)-len(bundle) > 1<<20 {
		bundle = slices.Clip(bytes.Clone(bundle)) // not a large batch's array
	}
	s.bundle = bundle
	for i, e := range edges {
		for len(s.edges) <= levels[i] {
			s.edges = append(s.edges, edgeTile{n: -1})
		}
		s.edges[levels[i]] = e
	}
	s.collect(full)
	return nil
}

// writeFiles writes files durably: each is written and its write-back
// started, then each is fsynced (so that one journal commit covers them
// all, not one each: README, audit log figures), then every directory
// that gained a name.
func (s *tlogStore) writeFiles(files []file) (err error) {
	var dirs []string
	fds := make([]*os.File, 0, len(files))
	defer func() {
		for _, fd := range fds {
			if cerr := fd.Close(); err == nil && cerr != nil {
				err = fmt.Errorf("audit: %w", cerr)
			}
		}
	}()
	for _, f := range files {
		name := filepath.Join(s.dir, filepath.FromSlash(f.path))
		dir := filepath.Dir(name)
		if !s.dirs[dir] {
			if err := s.mkdirs(dir); err != nil {
				return err
			}
		}
		if len(dirs) == 0 || dirs[len(dirs)-1] != dir {
			dirs = append(dirs, dir)
		}
		fd, err := s.create(name, f.data)
		if err != nil {
			return err
		}
		fds = append(fds, fd)
	}
	for _, fd := range fds {
		if err := datasync(fd); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	for _, d := range dirs {
		if err := s.syncDir(d); err != nil {
			return err
		}
	}
	return nil
}

// maxOpenDirs bounds the directories a store keeps open to fsync: a batch
// syncs one for the entry bundles and one per tree level, and the rest
// are closed when they are not used.
const maxOpenDirs = 16

// syncDir fsyncs the directory dir, through a file kept open for the
// next batches (each batch syncs the same few: opening one is two more
// system calls and a path walk each time).
func (s *tlogStore) syncDir(dir string) error {
	fd := s.open[dir]
	if fd == nil {
		var err error
		if fd, err = os.Open(dir); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
		if len(s.open) >= maxOpenDirs {
			s.closeDirs()
		}
		if s.open == nil {
			s.open = map[string]*os.File{}
		}
		s.open[dir] = fd
	}
	if err := fd.Sync(); err != nil {
		fd.Close()
		delete(s.open, dir)
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// closeDirs closes the directories kept open.
func (s *tlogStore) closeDirs() {
	for d, fd := range s.open {
		fd.Close()
		delete(s.open, d)
	}
}

// create writes data as the file name, replacing any, and starts its
// write-back: in a spare file if there is one, renamed into place once
// written (the name never shows another file's bytes), else in a new
// file. The caller syncs and closes it.
func (s *tlogStore) create(name string, data []byte) (*os.File, error) {
	if fd := s.recycle(name, data); fd != nil {
		startWriteback(fd)
		return fd, nil
	}
	fd, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("audit: %w", err)
	}
	if _, err := fd.Write(data); err != nil {
		fd.Close()
		return nil, fmt.Errorf("audit: %w", err)
	}
	startWriteback(fd)
	return fd, nil
}

// recycle writes data over the newest spare file, cut to its length, and
// renames it to name. It returns the open file, or nil if there is no
// spare or it fails (the spare is then dropped, and the caller creates
// the file).
func (s *tlogStore) recycle(name string, data []byte) *os.File {
	n := len(s.spares)
	if n == 0 {
		return nil
	}
	sp := s.spares[n-1]
	s.spares, s.spared = s.spares[:n-1], s.spared-sp.size
	fd, err := os.OpenFile(sp.name, os.O_WRONLY, 0)
	if err == nil {
		_, err = fd.Write(data)
		if err == nil && sp.size > int64(len(data)) {
			err = fd.Truncate(int64(len(data)))
		}
		if err == nil {
			err = rename(sp.name, name)
		}
		if err == nil {
			return fd
		}
		fd.Close()
	}
	_ = os.Remove(sp.name)
	return nil
}

// writeFile writes a file, replacing any, and syncs its data and the
// metadata that reading it needs (its name needs its directory's fsync).
// An existing file is overwritten and cut to size, not truncated first:
// the checkpoint's temporary file, rewritten by every batch, keeps its
// block instead of freeing it and allocating another.
func writeFile(name string, data []byte) error {
	fd, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE, 0o644)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	_, err = fd.Write(data)
	if err == nil {
		var st os.FileInfo
		if st, err = fd.Stat(); err == nil && st.Size() > int64(len(data)) {
			err = fd.Truncate(int64(len(data)))
		}
	}
	if err == nil {
		err = datasync(fd)
	}
	if cerr := fd.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	return nil
}

// mkdirs creates dir and its missing parents, fsyncing each parent that
// gained one.
func (s *tlogStore) mkdirs(dir string) error {
	if s.dirs[dir] {
		return nil
	}
	st, err := os.Stat(dir)
	if err == nil {
		if !st.IsDir() {
			return fmt.Errorf("audit: %s is not a directory", dir)
		}
		s.dirs[dir] = true
		return nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("audit: %w", err)
	}
	parent := filepath.Dir(dir)
	if err := s.mkdirs(parent); err != nil {
		return err
	}
	if err := os.Mkdir(dir, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		return fmt.Errorf("audit: %w", err)
	}
	if err := s.syncDir(parent); err != nil {
		return err
	}
	s.dirs[dir] = true
	return nil
}

// publish signs the checkpoint of the tree of size n and root, and puts
// it in place atomically and durably: written to .checkpoint.tmp (not
// served: a dot name), which is then swapped with the checkpoint, so that
// the two files are rewritten, never created (a new file costs more than
// its writes on some file systems: README, audit figures), or renamed
// over it where the file system cannot swap.
func (s *tlogStore) publish(n uint64, root tlog.Hash) error {
	cp, err := note.Sign(&note.Note{Text: string(log.Checkpoint{Origin: s.signer.Name(), Size: n, Hash: root[:]}.Marshal())}, s.signer)
	if err != nil {
		return fmt.Errorf("audit: %w", err)
	}
	tmp, name := filepath.Join(s.dir, ".checkpoint.tmp"), filepath.Join(s.dir, layout.CheckpointPath)
	if err := writeFile(tmp, cp); err != nil {
		return err
	}
	if exchange(tmp, name) != nil {
		if err := os.Rename(tmp, name); err != nil {
			return fmt.Errorf("audit: %w", err)
		}
	}
	if err := s.syncDir(s.dir); err != nil {
		return fmt.Errorf("%w: %w", errPublished, err)
	}
	return nil
}

// errPublished marks a failure after the checkpoint was put in place.
var errPublished = errors.New("audit: the checkpoint is in place but not durable")

// collect reclaims the partial files of the tiles and bundles that filled
// at least gcDelay ago, and queues those that filled now.
func (s *tlogStore) collect(full []string) {
	now := time.Now()
	i := 0
	for ; i < len(s.gc) && now.Sub(s.gc[i].at) >= gcDelay; i++ {
		s.reclaim(filepath.Join(s.dir, filepath.FromSlash(s.gc[i].path)))
	}
	s.gc = s.gc[i:]
	for _, p := range full {
		s.gc = append(s.gc, gcDir{p, now})
	}
}
