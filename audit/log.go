package audit

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/mod/sumdb/note"
)

// Config configures a Log. Dir and Signer are required; the zero value of
// every other field is the documented default.
type Config struct {
	// Dir is the log's directory: the C2SP tlog-tiles layout (checkpoint,
	// tile/...), which can be served as static files, and the writer's
	// private files (names starting with a dot). Created if missing.
	Dir string
	// Signer signs checkpoints (a C2SP signed note, Ed25519). Its name is
	// the checkpoint's origin line. See GenerateKey.
	Signer note.Signer
	// BatchMaxAge is how long a batch waits for more entries before it is
	// written and fsynced (the batching window). Batches are also
	// committed as a group: the entries added while one batch is being
	// written form the next, so under load a batch grows with the write
	// time whatever the window. Default DefaultBatchMaxAge.
	BatchMaxAge time.Duration
	// BatchMaxSize writes a batch once it has this many entries. Default
	// DefaultBatchMaxSize: larger batches cost less CPU per entry (each
	// batch writes and fsyncs new partial tiles and entry bundle files),
	// down to a floor reached at a few hundred entries: the store's cost
	// per entry (hashing, bundle and tile encoding, a new file per full
	// bundle and tile), which no window changes (README, audit figures;
	// BenchmarkAppendBatch).
	BatchMaxSize uint
	// CheckpointInterval is, with StoreTessera, how often a checkpoint
	// is signed and published, if the log grew; at least
	// MinCheckpointInterval. Default DefaultCheckpointInterval. Tessera's
	// checkpoints are timed only: it publishes after a written batch once
	// the last checkpoint is this old, and has no call to publish on
	// demand, so there is no "every N entries"; at R entries/s, an
	// interval of N/R seconds bounds the entries a checkpoint leaves
	// uncovered to about N (spec.md §21.3). StoreTlog publishes a
	// checkpoint with every batch, as the batch's last write (one
	// signature), whatever the interval: an entry is provable as soon as
	// it is durable.
	CheckpointInterval time.Duration
	// Store selects the writer. Default StoreTlog, which costs about a
	// third of the CPU per entry of StoreTessera (README, audit figures).
	Store Store
}

// Store selects a Log's writer. Both write the same C2SP tlog-tiles
// layout, byte for byte; StoreTlog continues a log Tessera wrote, and
// Tessera refuses one StoreTlog extended (it would overwrite it from its
// own older state).
type Store int

const (
	// StoreTlog is Sigil's own append-only tile store (store_tlog.go):
	// every hash, tile and root from golang.org/x/mod/sumdb/tlog, one
	// batch per group of entries, a checkpoint signed after every batch.
	StoreTlog Store = iota
	// StoreTessera is Tessera's POSIX driver (github.com/transparency-dev/tessera).
	StoreTessera
)

// Defaults of Config.
const (
	// DefaultBatchMaxAge suits a writer that waits for its entries.
	DefaultBatchMaxAge = 2 * time.Millisecond
	// AsyncBatchMaxAge is the window for a writer that does not wait
	// (server.AuditConfig.Async, sigil serve --audit=async): it bounds
	// what a crash loses, and fewer batches cost less CPU.
	AsyncBatchMaxAge          = 100 * time.Millisecond
	DefaultBatchMaxSize       = 4096
	DefaultCheckpointInterval = time.Second
	// MinCheckpointInterval is the shortest CheckpointInterval, Tessera's
	// POSIX driver's minimum (checked whatever the store).
	MinCheckpointInterval = 100 * time.Millisecond
)

// Log is an append-only transparency log of entries, on a Store (see
// Config.Store). It is safe for concurrent use.
type Log struct {
	st        store
	dir       string
	origin    string
	closeOnce sync.Once
	closeErr  error

	// Group commit: entries wait here while a group is being written.
	mu      sync.Mutex
	queue   []*pending
	busy    bool          // a committer goroutine runs
	closed  bool          // Add fails from now on
	drained chan struct{} // closed when the committer ends after closed
	// The batching window, if the Log applies it (StoreTlog; Tessera
	// batches by itself): a group is taken once its first entry is window
	// old, or once it has maxSize entries (kick).
	window  time.Duration
	maxSize int
	first   time.Time // when the queue's first entry came
	kick    chan struct{}

	batches, entries atomic.Uint64 // Stats
}

// store is where a Log writes its groups and reads its log from.
type store interface {
	Source
	// write appends the group's entries, in order, durably, and sets
	// each one's index or error. Calls do not overlap.
	write(group []*pending)
	// size is the number of entries integrated and durable.
	size(ctx context.Context) (uint64, error)
	// close stops the store once the entries written are covered by a
	// published checkpoint (or ctx is done).
	close(ctx context.Context) error
}

// pending is an entry waiting for its group to be written.
type pending struct {
	data  []byte
	index uint64
	err   error
	done  chan struct{}       // closed once index or err is set (nil with then)
	then  func(uint64, error) // called instead, on the committer goroutine
}

// ErrClosed is the error of an entry added after Close.
var ErrClosed = errors.New("audit: the log is closed")

// Open opens (or creates) the log in cfg.Dir. Close it with Close.
func Open(ctx context.Context, cfg Config) (*Log, error) {
	if cfg.Dir == "" || cfg.Signer == nil {
		return nil, errors.New("audit: Config.Dir and Config.Signer are required")
	}
	if cfg.BatchMaxAge <= 0 {
		cfg.BatchMaxAge = DefaultBatchMaxAge
	}
	if cfg.BatchMaxSize == 0 {
		cfg.BatchMaxSize = DefaultBatchMaxSize
	}
	if cfg.CheckpointInterval <= 0 {
		cfg.CheckpointInterval = DefaultCheckpointInterval
	}
	if cfg.CheckpointInterval < MinCheckpointInterval {
		return nil, fmt.Errorf("audit: Config.CheckpointInterval must be at least %v (it is %v)", MinCheckpointInterval, cfg.CheckpointInterval)
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	var st store
	var err error
	switch cfg.Store {
	case StoreTessera:
		st, err = openTessera(ctx, cfg)
	case StoreTlog:
		st, err = openTlog(cfg)
	default:
		err = fmt.Errorf("audit: unknown Config.Store %d", cfg.Store)
	}
	if err != nil {
		return nil, err
	}
	l := &Log{st: st, dir: cfg.Dir, origin: cfg.Signer.Name()}
	if cfg.Store == StoreTlog {
		l.window, l.maxSize, l.kick = cfg.BatchMaxAge, int(cfg.BatchMaxSize), make(chan struct{}, 1)
	}
	return l, nil
}

// Future resolves to an entry's index once the entry is sequenced,
// integrated into the tree and written durably (fsynced), or to an error.
type Future func() (uint64, error)

// Add queues e; the returned Future waits for it. An entry that does not
// fit its kind or exceeds MaxEntry fails at once (ErrTooLarge).
func (l *Log) Add(ctx context.Context, e *Entry) Future {
	data, err := e.Marshal()
	if err != nil {
		return func() (uint64, error) { return 0, err }
	}
	return l.AddRaw(ctx, data)
}

// AddRaw queues data as an entry unchecked. It exists for tests and the
// vectors, which need logs with bad entries; use Add. Entries get their
// indexes in the order they are added.
func (l *Log) AddRaw(ctx context.Context, data []byte) Future {
	p := &pending{data: data, done: make(chan struct{})}
	if !l.queued(p) {
		return func() (uint64, error) { return 0, ErrClosed }
	}
	return func() (uint64, error) {
		select {
		case <-p.done:
			return p.index, p.err
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// AddFunc queues e, as Add, and calls then with its index (or the error)
// once it is durable, on the goroutine that writes the log: then must be
// quick and must not call the Log. It costs no goroutine per entry, for a
// caller that does not wait.
func (l *Log) AddFunc(e *Entry, then func(uint64, error)) {
	data, err := e.Marshal()
	if err != nil {
		then(0, err)
		return
	}
	if !l.queued(&pending{data: data, then: then}) {
		then(0, ErrClosed)
	}
}

// queued adds p to the queue, unless the log is closed.
func (l *Log) queued(p *pending) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return false
	}
	if len(l.queue) == 0 {
		l.first = time.Now()
	}
	l.queue = append(l.queue, p)
	if l.kick != nil && len(l.queue) == l.maxSize {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	if !l.busy {
		l.busy = true
		go l.commit()
	}
	return true
}

// commit hands the queued entries to the store as one group and waits
// until they are written, then the next group, until none is left.
func (l *Log) commit() {
	for {
		l.mu.Lock()
		if wait := l.wait(); wait > 0 {
			l.mu.Unlock()
			t := time.NewTimer(wait)
			select {
			case <-t.C:
			case <-l.kick:
				t.Stop()
			}
			continue
		}
		group := l.queue
		l.queue = nil
		if l.maxSize > 0 && len(group) > l.maxSize {
			// The rest is overdue: the next group goes at once.
			group, l.queue = group[:l.maxSize:l.maxSize], group[l.maxSize:]
			l.first = time.Time{}
		}
		if len(group) == 0 {
			l.busy = false
			if l.closed && l.drained != nil {
				close(l.drained)
				l.drained = nil
			}
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		l.batches.Add(1)
		l.entries.Add(uint64(len(group)))
		l.st.write(group)
		for _, p := range group {
			if p.then != nil {
				p.then(p.index, p.err)
			} else {
				close(p.done)
			}
		}
	}
}

// wait is how long the queue's group waits for more entries: the rest of
// the window, unless the group is full or the log closing. l.mu is held.
func (l *Log) wait() time.Duration {
	if l.window <= 0 || len(l.queue) == 0 || len(l.queue) >= l.maxSize || l.closed {
		return 0
	}
	return l.window - time.Since(l.first)
}

// Stats counts what a Log wrote since it was opened.
type Stats struct {
	// Batches is the number of batches written (groups handed to the
	// store; Tessera may cut one in several): each costs the writes and
	// fsyncs of the entry bundle, a hash tile per tree level and the tree
	// state or checkpoint, whatever its size.
	Batches uint64
	// Entries is the number of entries in those batches.
	Entries uint64
}

// Stats returns what l wrote so far.
func (l *Log) Stats() Stats { return Stats{Batches: l.batches.Load(), Entries: l.entries.Load()} }

// Append adds e and waits until it is durable: its index.
func (l *Log) Append(ctx context.Context, e *Entry) (uint64, error) { return l.Add(ctx, e)() }

// Size is the number of entries integrated into the tree and durable;
// a checkpoint may not cover them yet.
func (l *Log) Size(ctx context.Context) (uint64, error) { return l.st.size(ctx) }

// Origin is the checkpoint's origin line, the name of the signing key.
func (l *Log) Origin() string { return l.origin }

// Dir is the log's directory.
func (l *Log) Dir() string { return l.dir }

// Checkpoint returns the latest published checkpoint (a signed note), or
// an error wrapping os.ErrNotExist before the first.
func (l *Log) Checkpoint(ctx context.Context) ([]byte, error) { return l.st.ReadCheckpoint(ctx) }

// Source reads the log, as a verifier or prover would.
func (l *Log) Source() Source { return l.st }

// Close waits until every entry whose Future resolved to an index is
// covered by a published checkpoint (or ctx is done; StoreTlog's are once
// they resolve), then stops the log:
// Add fails from then on. Only the first call does anything.
func (l *Log) Close(ctx context.Context) error {
	l.closeOnce.Do(func() {
		l.mu.Lock()
		l.closed = true
		if l.kick != nil {
			select {
			case l.kick <- struct{}{}:
			default:
			}
		}
		var drained chan struct{}
		if l.busy {
			drained = make(chan struct{})
			l.drained = drained
		}
		l.mu.Unlock()
		if drained != nil {
			select {
			case <-drained:
			case <-ctx.Done():
			}
		}
		l.closeErr = l.st.close(ctx)
	})
	return l.closeErr
}

// Handler serves the log read-only at the C2SP tlog-tiles paths relative
// to the request path it is mounted at (strip the prefix with
// http.StripPrefix): checkpoint, tile/<L>/<N>[.p/<W>], tile/entries/<N>[.p/<W>],
// and the checkpoint key as log.vkey. Nothing else is served: no
// directory listings and not .state/.
func Handler(dir string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		p := strings.TrimPrefix(r.URL.Path, "/")
		if !servable(p) {
			http.NotFound(w, r)
			return
		}
		f, err := os.Open(filepath.Join(dir, filepath.FromSlash(p)))
		if err != nil {
			http.NotFound(w, r)
			return
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil || st.IsDir() {
			http.NotFound(w, r)
			return
		}
		switch {
		case p == "checkpoint" || p == VKeyFile:
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.Header().Set("Cache-Control", "no-cache")
		default:
			w.Header().Set("Content-Type", "application/octet-stream")
			if !strings.Contains(p, ".p/") {
				// A full tile or bundle never changes.
				w.Header().Set("Cache-Control", "public, max-age=31536000, immutable")
			}
		}
		http.ServeContent(w, r, "", st.ModTime(), f)
	})
}

// servable: the checkpoint, the key, or a clean path under tile/.
func servable(p string) bool {
	if p == "checkpoint" || p == VKeyFile {
		return true
	}
	if !strings.HasPrefix(p, "tile/") || path.Clean(p) != p {
		return false
	}
	for _, seg := range strings.Split(p, "/") {
		if seg == "" || strings.HasPrefix(seg, ".") && seg != ".p" && !strings.HasPrefix(seg, ".p") {
			return false
		}
	}
	return true
}
