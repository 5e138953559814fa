package audit

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/transparency-dev/tessera"
	"github.com/transparency-dev/tessera/api/layout"
	"github.com/transparency-dev/tessera/storage/posix"
)

// tesseraStore writes the log with Tessera's POSIX driver (StoreTessera).
type tesseraStore struct {
	tessera.LogReader
	add      tessera.AddFn
	shutdown func(context.Context) error
	bg       context.Context
	cancel   context.CancelFunc
}

func openTessera(ctx context.Context, cfg Config) (*tesseraStore, error) {
	// Tessera continues from its private tree state, not the checkpoint:
	// a log another writer (StoreTlog) extended would be overwritten.
	if raw, err := os.ReadFile(filepath.Join(cfg.Dir, layout.CheckpointPath)); err == nil {
		cp, err := checkpointBody(raw)
		if err != nil {
			return nil, fmt.Errorf("audit: %s: %w", filepath.Join(cfg.Dir, layout.CheckpointPath), err)
		}
		size, _, ok, err := tesseraState(cfg.Dir)
		if err != nil {
			return nil, err
		}
		if !ok || size < cp.Size {
			return nil, fmt.Errorf("audit: %s was last written by the tlog store (checkpoint of %d entries, Tessera's state of %d): open it with StoreTlog", cfg.Dir, cp.Size, size)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("audit: %w", err)
	}
	// The appender's background work lives until close.
	bg, cancel := context.WithCancel(context.WithoutCancel(ctx))
	drv, err := posix.New(bg, posix.Config{Path: cfg.Dir})
	if err != nil {
		cancel()
		return nil, fmt.Errorf("audit: %w", err)
	}
	opts := tessera.NewAppendOptions().
		WithCheckpointSigner(cfg.Signer).
		WithBatching(cfg.BatchMaxSize, cfg.BatchMaxAge).
		WithCheckpointInterval(cfg.CheckpointInterval)
	app, shutdown, reader, err := tessera.NewAppender(bg, drv, opts)
	if err != nil {
		cancel()
		return nil, fmt.Errorf("audit: %w", err)
	}
	return &tesseraStore{LogReader: reader, add: app.Add, shutdown: shutdown, bg: bg, cancel: cancel}, nil
}

// write hands the group to Tessera, which batches it (BatchMaxAge,
// BatchMaxSize), and waits until every entry is integrated.
func (s *tesseraStore) write(group []*pending) {
	futures := make([]tessera.IndexFuture, len(group))
	for i, p := range group {
		futures[i] = s.add(s.bg, tessera.NewEntry(p.data))
	}
	for i, p := range group {
		idx, err := futures[i]()
		p.index, p.err = idx.Index, err
	}
}

// tesseraState reads the tree state Tessera's POSIX driver (v1.0.4)
// keeps in dir/.state/treeState: the size and root it integrated, which
// its timed checkpoint may not cover yet. ok is false without one.
func tesseraState(dir string) (size uint64, root []byte, ok bool, err error) {
	raw, err := os.ReadFile(filepath.Join(dir, ".state", "treeState"))
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil, false, nil
	}
	if err != nil {
		return 0, nil, false, fmt.Errorf("audit: %w", err)
	}
	var ts struct {
		Size uint64 `json:"size"`
		Root []byte `json:"root"`
	}
	if err := json.Unmarshal(raw, &ts); err != nil {
		return 0, nil, false, fmt.Errorf("audit: Tessera's tree state in %s: %w", dir, err)
	}
	return ts.Size, ts.Root, true, nil
}

func (s *tesseraStore) size(ctx context.Context) (uint64, error) { return s.IntegratedSize(ctx) }

func (s *tesseraStore) close(ctx context.Context) error {
	err := s.shutdown(ctx)
	s.cancel()
	return err
}
