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
// The server closes with the protocol.CloseCode values of spec.md §12.3;
// protocol holds the one table of what each means and whether a client
// reconnects after it (CloseCode.Reconnect). The code that follows a
// rejected hello or frame is protocol.RejectionClose: 4001 for a rejected
// hello, 4002 or 4003 for an expired or revoked token, 4006 when the
// server could not check a hello (a store failed).
//
// # Seams
//
// The replay store (protocol.ReplayStore), the revocation store
// (RevocationStore), the refresh-token store (RefreshStore), the broker
// that fans frames out (Broker), the presence (Presence: channel members,
// channel content keys, the session list) and the authenticator
// (Authenticator) are interfaces with in-memory implementations, the
// defaults of a single node. So is the history of channels (History,
// spec.md §20): MemoryHistory keeps a ring per channel, RedisHistory a
// Redis Stream; the policy says which channels keep what
// (protocol.Policy.History). Each deliver frame of such a channel carries
// its position, a sub with since recovers what a subscriber missed
// (subscribed to the live frames first, then merged with the stored ones
// by offset), and the history action pages a stream. Direct messages get
// the same treatment on a per-user stream, the inbox (spec.md §20.11):
// with a history rule for the pattern "@", a dm is signed once with its
// position in the recipient's stream "@"+subject, stored by the same
// engine (published as a DirectMessage with Signed and Offset to the
// user's topic), accepted while the recipient is away if its inbox
// exists, and recovered by the hello's inbox_since right after the
// welcome. A copy of an accepted
// pub or dm, resent after a lost connection, is answered as its first
// copy was and not delivered again (spec.md §20.10), from the answers an
// OutcomeStore keeps: MemoryOutcomes on one node, RedisOutcomes in a
// cluster, where the script that publishes a frame records its answer.
//
// The broker contract is typed (broker.go). The hub publishes each fan-out
// as a Publication to a Topic (a channel, or a user for direct messages)
// and receives, as the BrokerEventHandler given to Broker.Start, the
// publications of the topics it subscribed to, its own included. A channel
// publication carries the deliver, join or leave frame signed once on the
// publishing node; every node forwards those bytes as they are. A
// DirectMessage carries what each node needs to sign a direct frame per
// recipient session, re-sealing an encrypted body (its Plain member is a
// message body in the clear, which must never cross a network
// unencrypted). A Key publication carries a channel's new content key to
// every node. Publication.MarshalBinary is the encoding between nodes.
//
// The hub counts its own sessions per channel and subject, and calls the
// presence at a subject's first session in a channel on the node (Join)
// and its last (Leave): the presence decides whether the subject joined or
// left the whole server's membership, and publishes the event.
//
// # Cluster
//
// Nodes that act as one server share all of it through Redis: NewCluster
// connects a node and builds its RedisBroker (sharded pub/sub), its
// RedisPresence (heartbeats, membership scripts that publish their own
// events, sealed content keys, the session list), its RedisHistory, its
// RedisOutcomes and the Redis replay, revocation and refresh stores;
// Cluster.Configure puts them into a
// Config, and New then watches the revocations of every node
// (RevocationWatcher). Configure also sets Config.Redis, with which the
// login rate limits, the replay state of admin proofs and admin kicks are
// shared too, and the connection's metrics are served; and it makes
// Cluster.Ready the ReadyCheck "redis", so that /readyz answers 503 while
// Redis is away. Direct messages and content keys cross Redis sealed under
// ClusterConfig.Secret. spec.md §19 states what is shared and the
// guarantees.
//
// # Audit log
//
// With Config.Audit (an audit.Log the caller opens), every accepted frame
// of a logged action (pub, dm, application actions), every Publish, every
// session token (at hello and refresh) and the server's keys are entries
// of a transparency log (package audit, spec.md §21). The frame is logged
// after it was accepted and before it is dispatched: in sync mode (the
// default) the reply and deliveries wait until the entry is durable, and
// the reply to pub and dm and their deliveries carry its index
// (LoggedReply, protocol.DeliverBody.LogIndex); in async mode they do not
// wait. In sync mode a connection's pub and dm frames are pipelined: the
// reader verifies the next frames while the entries of earlier ones are
// written, and one goroutine per busy connection dispatches them in order
// once durable (up to 64 in flight), so that they share batches; any other
// frame waits until they are answered. A log that fails
// fails the frame closed (unavailable). AuditHandler serves the log
// read-only under /v1/audit/, with inclusion proofs. In a cluster each
// node keeps its own log.
//
// # Memory
//
// An idle session holds no goroutine (see Concurrency) and no buffer but
// gorilla's 288-byte read buffer. Once the server has read no frame,
// accepted no connection and seen no garbage collection for
// Config.IdleMemoryReturn (default 2s), it returns the free heap a burst
// of connections left to the system (debug.FreeOSMemory, memory.go),
// when that comes to at least 8 MiB and a quarter of the heap; each
// return is counted in sigil_idle_memory_returns_total.
//
// # Failures
//
// A failing store (replay state, revocations, refresh tokens, presence)
// or broker fails closed: no frame is accepted unchecked. A frame that needs it is
// answered with an error frame whose code is unavailable (the frame was
// not accepted; the client may send it again with backoff); a hello, or a
// session that cannot be checked after its welcome or during an in-band
// refresh, is then closed with 4006. Every such failure is logged and
// counted in sigil_backend_errors_total{backend,op}, and refused frames in
// sigil_frames_rejected_total{code="unavailable"}; they do not count
// toward the 1008 threshold, as the fault is the server's.
//
// # Concurrency
//
// A Server is safe for concurrent use. Each connection has exactly one
// reader goroutine at a time, which runs the verification pipeline and the
// action handlers (including application handlers registered with Handle)
// in order; a slow handler delays only its own connection. Between frames
// an idle session holds no goroutine at all: its reader parks
// (conn_park.go), handing the socket to the process's parker (one epoll
// set, in the runtime's poller, and one goroutine for all parked
// sessions), which takes the client's empty keepalive pongs itself and
// starts a new reader when anything else arrives, when the socket is
// closed or its read deadline set by another goroutine (a close,
// Shutdown), or when the idle deadline passes (the sweeper finds it on a
// timing wheel, within a SweepInterval; schedule.go).
// Only the parker reads a parked session's socket, and only one reader
// runs once it is woken. Fields marked "reader goroutine only" pass from
// one reader to the next through the parker's lock, and the go statement
// or the channel that starts it (a reader goroutine whose session parked
// waits a second to be handed another, so that a busy server reads on
// goroutines whose stacks have grown). Writes go through a
// bounded per-connection queue drained by a writer goroutine that is busy
// only while the queue is not empty, so idle sessions cost no goroutine;
// a writer that drained its queue waits a second to be handed another
// session before it exits, so that a fan-out reuses goroutines. The writer
// takes the whole queue at a time and, under gorilla, the frames of one
// batch reach the socket in one write, with the socket's write deadline
// re-armed about once per WriteTimeout/4 rather than per frame. A channel's
// fan-out frame for a session whose writer is idle is written by the
// delivering goroutine itself, as its bytes on the wire (made once per
// fan-out), with one write that does not block and without gorilla's
// lock and deadline; what the socket does not take goes to the writer,
// ahead of anything else, so a slow subscriber never holds up a fan-out,
// and once a close frame has gone out through gorilla nothing is written
// so (conn_write.go). A session that receives a stream (deliveries less
// than a millisecond apart) has its deliveries queued instead, and its
// writer first yields (runtime.Gosched), so that the frames the other
// ready goroutines deliver meanwhile join its batch: one write for many;
// a writer that gathered nothing makes the session's deliveries go out at
// once again for 20 ms, twice as long after each such writer in a row, up
// to a second. The system calls of these writes that do not block,
// and of the recv calls that read a parked or waiting session's socket,
// are raw ones (sys_linux.go): the goroutine keeps its P, and a server
// going from idle to busy does not wake the runtime's monitor thread.
// The sweeper
// touches only the sessions with a duty due (an expiry warning or an
// expiry, from a heap; a keepalive ping, and a parked session's idle
// deadline, from timing wheels with a slot per SweepInterval, O(1) each;
// schedule.go); pings are spread over
// PingInterval instead of sent to every session at once. The sweeper
// writes a due ping as a fan-out frame is written (at once, without
// blocking, when the session's writer is idle; otherwise queued), so a
// peer that does not read holds up only its own ping.
// Lock order: Server.mu (sessions) → a hub topic lock → hub.mu → conn.mu
// → the parker's lock (a read deadline set under conn.mu wakes a parked
// session); conn.mu → flushConn.mu is only ever tried (TryLock), never
// waited for.
// No lock is held while writing to a socket or calling a store or handler,
// but for a topic lock: the broker and the presence are called under one
// (Subscribe, Unsubscribe, Join and Leave, so that a topic's first-in and
// last-out transitions reach them in order), never under hub.mu or
// conn.mu; the broker calls the hub's handler, which takes hub.mu and
// conn.mu, from any goroutine (the Redis broker: from one goroutine per
// partition, in the order Redis delivered the publications). While a
// session's sub is being handled, the channel's frames that reach it are
// held on the session, and queued after the sub's reply.
//
// The Redis presence runs two goroutines per node: the heartbeat (which
// also retries failed membership changes and removes dead nodes) and the
// writer of the session list. The Redis broker runs one watcher per
// partition, which re-subscribes after a lost connection.
//
// Tokens, keys, passwords and message bodies are never logged.
package server
