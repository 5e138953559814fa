// Package server is the Sigil server: a set of http.Handlers that issue
// session tokens (/v1/token, /v1/refresh), publish the server's keys
// (/.well-known/jwks.json), run the WebSocket endpoint (/v1/ws) with its hub
// of channels, presence, direct messages and request/reply, and expose the
// admin API, health and Prometheus metrics.
//
// Build one with New(Config); every Config field has a documented
// zero-value default, so New(Config{}) runs on in-memory stores with a
// freshly generated signing key. Mount Server.Handler() or the individual
// handlers in an existing mux, and serve them with Server.HTTPServer, whose
// timeouts and header limit (Config.HTTP) bound what a client can hold
// before it authenticates; /v1/token also bounds concurrent password checks
// (Config.PasswordHashMemory) and reserves each attempt against the login
// rate limits before the password is checked.
//
// # Verification
//
// Every client frame goes through protocol.Verifier (spec.md §7): size,
// form, header, signature under the session key, strict claims, session
// binding, freshness, replay, token expiry and revocation, policy and body
// decryption. A rejected frame is answered with a signed error frame and
// the connection stays up, until more than Config.MaxViolations rejections
// within Config.ViolationWindow close it with 1008.
//
// # Close codes
//
//	1000 normal                 1001 server going away (reconnect with backoff)
//	1003 binary frame (no)      1008 too many rejected frames (no)
//	1009 over read limit (no)   4000 hello timeout (yes)
//	4001 hello rejected (only with a new token)
//	4002 token expired (after refresh or with a new token)
//	4003 revoked (never)        4004 kicked by an admin (no)
//	4005 slow consumer (yes, backoff)
//	4006 server error (yes, backoff)
//
// # Seams
//
// The replay store (protocol.ReplayStore), the revocation store
// (RevocationStore), the refresh-token store (RefreshStore), the broker
// that fans frames out (Broker) and the authenticator (Authenticator) are
// interfaces with in-memory implementations. A cluster broker plugs in
// through Config.Broker without changes to the hub.
//
// # Concurrency
//
// A Server is safe for concurrent use. Each connection has exactly one
// reader goroutine, which runs the verification pipeline and the action
// handlers (including application handlers registered with Handle) in
// order; a slow handler delays only its own connection. Writes go through a
// bounded per-connection queue drained by a writer goroutine that exists
// only while the queue is not empty, so idle sessions cost one goroutine.
// Lock order: Server.mu (sessions) → hub.mu → conn.mu; no lock is held
// while writing to a socket or calling a store, broker or handler.
//
// Tokens, keys, passwords and message bodies are never logged.
package server
