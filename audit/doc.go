// Package audit is Sigil's tamper-evident audit log (spec.md §21): every
// accepted message, every message the server application publishes, the
// session tokens and the server's keys, as entries of a transparency log.
//
// The log is a Merkle tree hashed as in RFC 6962, stored as static tiles
// (C2SP tlog-tiles), with checkpoints signed as C2SP signed notes
// (golang.org/x/mod/sumdb/note, Ed25519). Two writers store it, the same
// files byte for byte (Config.Store): by default Sigil's own append-only
// tile store, whose hashes, tiles and roots all come from
// golang.org/x/mod/sumdb/tlog and which publishes a checkpoint with every
// batch (store_tlog.go); or Tessera's POSIX driver, which costs about
// three times the CPU per entry (README, audit figures). Anyone with the
// checkpoint key can check, offline and streaming:
//
//   - that the checkpoint is signed, and extends any checkpoint seen before
//     (a consistency proof: nothing removed, edited or reordered);
//   - that every entry and every tile hashes to the checkpoint;
//   - that every entry is strict, and that its evidence verifies
//     (spec.md §14): server key → session token → session key → message.
//
// Open writes a log (the server does, with server.AuditConfig); Verify
// checks one; Prove and Proof.Check give and check the inclusion proof of
// one entry. Entry is the record format. The package trusts nothing it
// reads but the checkpoint key it is given (and, if pinned, the server's
// keys).
package audit

//go:generate go test -run ^TestAuditVectorsGolden$ -update .
