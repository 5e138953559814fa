// Package protocol is the transport-free core of Sigil v1 (spec.md): the
// signed envelope, session keys and tokens, the verification pipeline, the
// replay window, the authorization policy, body encryption and the stable
// error codes. It has no network code; server/ and client/ put it on a
// WebSocket.
//
// # Sending and receiving
//
// A client signs every frame with a [ClientSigner], which fills the id,
// timestamp, sequence number, session and subject. The server checks the
// first frame with [Verifier.VerifyHello], which resolves the session key
// through the session token and returns the [Session]; every later frame
// goes through [Verifier.Verify], which runs the verification order of
// spec.md §7 and returns a [Message] or an [*Error] with a stable [Code].
// The server signs its frames with a [ServerSigner]; a client checks them
// with a [FrameVerifier] and opens deliveries end to end with
// [OpenDelivery].
//
// # Sessions and proofs
//
// A [Session] comes from a verified frame, never from a literal: from a
// hello ([Verifier.VerifyHello]), from a proof next to a session token, as
// in the administration API ([Verifier.VerifyTokenProof]), or from a proof
// of a session the server stored with a refresh token
// ([Verifier.VerifyRecordProof], /v1/refresh). All three run the whole of
// spec.md §7 and name the session key by its thumbprint. Its fields are
// unexported and read through methods; a Session made elsewhere (the zero
// value) verifies nothing.
//
// # Wire vocabulary
//
// One place for what both ends of the wire must agree on: error codes
// ([Code]), close codes and whether a client reconnects after each
// ([CloseCode], [CloseCode.Reconnect], [RejectionClose]), frame bodies
// ([HelloBody], [WelcomeBody], ...), the HTTP API's bodies
// ([TokenRequest], [RefreshRequest], [TokenResponse], [ErrorResponse],
// [AdminProofBody]), and strict decoding: [DecodeBody] for any body, frame
// or HTTP, and [UnsafeEnvelope] to read a client frame's claims before (or
// after) its signature is verified.
//
// # Evidence
//
// [VerifyEvidence] (session token, session key, client frame) and
// [VerifyDeliveryEvidence] (a stored deliver or direct frame) check who
// said what offline, with the server's JWKS alone and no clock (spec.md
// §14). They are pure functions, safe for concurrent use.
//
// # Rights
//
// [Policy.Allow] decides every frame (spec.md §9.3). [Policy.Grants] is the
// same policy seen from one session, as the welcome announces it (§8.3):
// [Grants.Allows] matches a frame exactly as the policy would for those
// roles, so a client can tell in advance what will be refused.
//
// # Algorithms and keys
//
// Only EdDSA (Ed25519) and ES256 (P-256) exist here. Every key is bound to
// one algorithm by its type, and verifiers take the algorithm from the key,
// never from a frame's header. JSON is read under the strict rules of
// spec.md §6.3 (internal/strictjson).
//
// A compact JWS is split, checked and decoded once, strictly (spec.md §5.1,
// §7 steps 1–3); the signature is then checked over the signing input as
// received, with what go-jose runs for the two algorithms (ed25519.Verify;
// ecdsa.Verify of SHA-256 with R || S), because go-jose v4 cannot verify a
// JWS from parts already split without decoding, parsing and re-encoding
// it again (1.35× a raw verify on its own). go-jose stays the reference:
// tests and a fuzz target require both to accept exactly the same frames
// with the same payload. Ed25519 frames are signed the same way, with one
// ed25519.Sign after the cached header segment, byte for byte what go-jose
// would produce; ES256 signing, JWE and JWKs are go-jose's.
//
// # Concurrency
//
//   - [Verifier], [TokenVerifier], [TokenIssuer], [ServerSigner],
//     [FrameVerifier], [KeySet], [Policy], [KeyRing], [MemoryReplayStore]
//     and [MemoryRevocations] are safe for concurrent use.
//   - [ClientSigner] is safe for concurrent use; Sign assigns seq and signs
//     under one lock, and SignWith runs a hook under that lock so that a
//     caller can queue frames in seq order.
//   - A [Session] belongs to the goroutine that reads its connection:
//     Verify and Refresh read and update it without locking, so call them
//     from that goroutine only (the server's read loop does).
//   - A [ReplayStore] must make Check atomic; the pipeline relies on it to
//     accept each id and seq at most once even across connections.
//
// # Determinism
//
// Clocks (Now) and randomness (Rand) are injectable everywhere, so that the
// test vectors in testdata/vectors are reproducible: go generate ./protocol
// regenerates them, and the tests check that the files match.
package protocol

//go:generate go test -run ^TestVectorsGolden$ -update .
