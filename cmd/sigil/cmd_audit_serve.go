package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
	"k8s.io/klog/v2"
)

// auditFlags are the audit-log flags of sigil serve (spec.md §21).
type auditFlags struct {
	dir, mode, key string
	store          string
	batch, every   time.Duration
	public         bool
}

func (f *auditFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "audit-dir", "", "audit log: the directory of this node's transparency log (C2SP tlog-tiles, served at /v1/audit/); empty: no audit log")
	fs.StringVar(&f.mode, "audit", "sync", "audit log: sync (the reply and the deliveries wait until the entry is fsynced; the reply carries log_index) or async (a crash loses at most the last --audit-batch window)")
	fs.StringVar(&f.key, "audit-key", "", "audit log: the checkpoint signing key file, created on first start (default <audit-dir>.key; keep it out of the served directory)")
	fs.DurationVar(&f.batch, "audit-batch", 0, "audit log: the fsync batching window, how long an entry waits for others before a batch is written (0: 2ms with --audit=sync, 100ms with async, the crash-loss bound; the entries that arrive while a batch is written form the next one); longer batches cost less CPU per entry")
	fs.BoolVar(&f.public, "audit-public", false, "audit log: serve its entries and proofs to anyone (they hold every logged message, bodies included unless encrypted); default: to admins only, the checkpoint and hash tiles to anyone")
	fs.DurationVar(&f.every, "audit-checkpoint", audit.DefaultCheckpointInterval, "audit log, --audit-store=tessera: how often a checkpoint is signed and published, if the log grew (at least 100ms; timed only: at R entries/s, N/R bounds the entries a checkpoint leaves unprovable to about N); the tlog store publishes one with every batch")
	fs.StringVar(&f.store, "audit-store", "tlog", "audit log: its writer, tlog (Sigil's tile store on golang.org/x/mod/sumdb/tlog, a checkpoint per batch) or tessera (Tessera's POSIX driver); the same files either way, and tlog continues a log tessera wrote")
}

// useAudit opens the audit log, if --audit-dir is set, and configures cfg
// to write to it. cluster names the node in the checkpoint's origin line:
// every node of a cluster keeps its own log, with its own key. The
// returned function closes the log (after the server's Shutdown).
func useAudit(cfg *server.Config, f *auditFlags, cluster bool) (func(), error) {
	if f.dir == "" {
		return func() {}, nil
	}
	if f.mode != "sync" && f.mode != "async" {
		return nil, errors.New("--audit must be sync or async")
	}
	store := audit.StoreTlog
	switch f.store {
	case "tlog":
	case "tessera":
		store = audit.StoreTessera
	default:
		return nil, errors.New("--audit-store must be tlog or tessera")
	}
	node := ""
	if cluster {
		node = cfg.Node
	}
	keyFile := f.key
	if keyFile == "" {
		keyFile = f.dir + ".key"
	}
	// Tessera logs through klog: into the server's structured log.
	klog.SetSlogLogger(cfg.Logger.With("component", "tessera"))
	issuer := cfg.Issuer
	if issuer == "" {
		issuer = "sigil" // server.Config's default
	}
	signer, verifier, err := audit.LoadOrCreateKey(keyFile, audit.Origin(issuer, node), f.dir)
	if err != nil {
		return nil, err
	}
	batch := f.batch
	if batch <= 0 {
		batch = audit.DefaultBatchMaxAge // sync: the reply waits for it
		if f.mode == "async" {
			batch = audit.AsyncBatchMaxAge // the crash-loss bound, spec.md §21.3
		}
	}
	l, err := audit.Open(context.Background(), audit.Config{Dir: f.dir, Signer: signer, BatchMaxAge: batch, CheckpointInterval: f.every, Store: store})
	if err != nil {
		return nil, err
	}
	cfg.Audit = server.AuditConfig{Log: l, Verifier: verifier, Async: f.mode == "async", Public: f.public}
	if cfg.MaxFrame == protocol.DefaultMaxFrame {
		cfg.MaxFrame = server.MaxAuditFrame // the default --max-frame: an entry must fit in 64 KiB
	}
	cfg.Logger.Info("audit log on", "dir", f.dir, "mode", f.mode, "origin", l.Origin(), "batch", batch, "store", f.store)
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := l.Close(ctx); err != nil {
			cfg.Logger.Error("closing the audit log", "err", fmt.Sprint(err))
		}
	}, nil
}
