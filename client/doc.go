// Package client is the Go client of Sigil (spec.md): it connects to a
// Sigil server over one WebSocket, signs every frame it sends with a
// per-session key, and verifies every frame it receives — the server's
// signature, typ, freshness, replay and session, and, for messages, the
// original sender's signature end to end.
//
//	c, err := client.Dial(ctx, "wss://chat.example/v1/ws", &client.Options{
//		Tokens: client.Password("alice", password),
//	})
//	sub, err := c.Subscribe(ctx, "rooms.lobby")
//	err = c.Publish(ctx, "rooms.lobby", map[string]string{"text": "hi"})
//	m, err := sub.Next(ctx) // m.From is the verified sender
//
// On a channel with history (spec.md §20) every message has a Position;
// after a reconnect the client resubscribes from its last one and yields
// what it missed first, each message once and in the stream's order, or
// reports a Gap (OnGap, else Options.OnError). Since resumes a position
// saved by an earlier process; History pages a channel's history. The
// Inbox is such a stream too when the server keeps direct messages
// (spec.md §20.11): each message has a Position, the client's hello
// resumes after its last one on every reconnect, Options.InboxSince
// resumes a position saved by an earlier process, a Gap is reported as a
// Subscription's, and InboxHistory pages the inbox. A
// Publish or Send whose connection dropped before the answer is settled by
// resending the same frame after the reconnect, to whichever node of a
// cluster it reaches: it returns nil exactly when the message was
// accepted once. A frame that the server certainly never accepted is
// sent again as a new one (ErrNotAccepted only if that keeps failing).
//
// # Safe by default
//
// Dial generates the session key (Ed25519 unless Options.Algorithm says
// ES256), obtains a session token bound to it from Options.Tokens, and
// checks the server's frames against the server's JWKS: pinned in
// Options.JWKS, or fetched over TLS from the server itself (plain http only
// to loopback). Keys are never fetched from a URL found in a message. An
// error frame in answer to a request is returned as an error carrying the
// protocol's code: errors.As(err, &pe) with pe a *protocol.Error, or
// protocol.CodeOf(err). Server frames that fail verification are dropped,
// counted in Stats and reported to Options.OnError; they change nothing.
//
// # Rights
//
// The welcome tells the client what the server's policy lets the session
// do (spec.md §8.3): Grants returns the announced grants, and Can(action,
// channel) says whether a frame would be allowed, so that a program or a
// user interface can avoid a request that would be refused with
// forbidden. They are advisory: the server decides every frame.
//
// # Concurrency
//
// A Client is safe for concurrent use by any number of goroutines. Frames
// are signed and written under one lock, so that seq numbers are strictly
// increasing on the wire however many goroutines publish at once. One
// goroutine per connection reads and verifies server frames; it never
// blocks on a slow consumer: each Subscription queues up to
// Options.SubscriptionBuffer messages and ends with ErrSlowConsumer beyond
// that. A Subscription is safe for concurrent use; its messages arrive in
// the order the server sent them. Callbacks (OnStateChange, OnError,
// OnRefresh) run on the client's goroutines, one at a time, and must not
// block for long or call Close.
//
// # Logins: many processes, one sign-in
//
// A session is used by one process at a time. Programs that run as many
// processes from one sign-in (the sigil command) keep a Login instead
// (LogIn, spec.md §4.5): a long-lived login token bound to a login key.
// LoginSessions mints a session of its own — sid, seq, session key and
// refresh tokens — for every client that dials with it.
//
// # Token refresh
//
// With a refresh token (Password, External, RefreshToken sources), the
// client refreshes its session token in-band a third of its remaining
// lifetime before it expires (at most a minute before), or when the server
// warns with expiring, without reconnecting. If the refresh fails, the
// client fails closed: it stops sending as the session, closes, and Err
// returns an error wrapping ErrRefreshFailed. A failure that refused
// nothing (the server answered unavailable because a store it needs did
// not answer, or the connection was lost before the answer) is an
// exception when every token of the source starts a session of its own
// (Password, External, LoginSessions): the client then stops sending as
// the session, never presents its refresh token again, and goes on with a
// new session from the source, as after a reconnect (OnError reports the
// failure); it closes if the source cannot give one. A Publish or Send
// sent after a refresh answered unavailable was not handled (the server
// closes the connection then) and is sent again, as a new frame, on the
// new session; one left unanswered otherwise returns ErrConnectionLost
// (whether it was accepted cannot be known: a new session cannot send the
// old one's frame again), here and whenever the client moves to a new
// session.
//
// # Reconnect semantics
//
// When the connection drops, the client follows the close-code table of
// spec.md §12.3, as protocol.CloseCode.Reconnect holds it:
//
//   - 1001 (going away), 4000, 4005, 4006, network failures (1006) and
//     other 1xxx codes: reconnect with exponential backoff and full jitter
//     (0.5 s doubling to 30 s by default, see ReconnectPolicy), with the
//     same token and session, and the seq sequence continuing;
//   - 4001 (hello rejected) and 4002 (token expired): reconnect only with a
//     new token — renewed over /v1/refresh if there is a refresh token,
//     otherwise from the token source (a new session); if the new token is
//     rejected too, the client closes;
//   - 4003 (revoked): never; the client closes with an error wrapping
//     ErrRevoked, and a person has to log in again;
//   - 1000, 1003, 1007, 1008, 1009, 4004 (kicked), and any 4xxx code the
//     table does not list (it may mean something this client does not
//     know): no reconnect; the client closes with a *CloseError carrying
//     the code and the server's reason.
//
// A server whose first frame on a connection is not the welcome answering
// the hello (or the error rejecting it) breaks spec.md §8.3: the client
// acts on nothing, closes with 1002, and the attempt fails with
// ErrProtocolViolation (Dial returns it; a reconnecting client backs off
// and tries again). A first frame signed by a key the client's JWKS does
// not hold makes it fetch the JWKS again, once for that attempt (unless
// Options.JWKS pins it), so that a key the server rotated meanwhile does
// not fail the reconnection (spec.md §13.3). A hello answered with unavailable or internal, a
// failure of the server's stores, closes with 4006: backoff.
//
// While reconnecting, Publish, Send, Call, Presence and Subscribe wait for
// the connection (or their ctx); a request whose frame was written before
// its connection dropped, and not answered, fails with ErrConnectionLost,
// because the server may or may not have acted on it. A refusal with the
// code unavailable (a store or broker of the server failed; the frame was
// not accepted) may be sent again, with backoff. After a reconnect the client resubscribes to every
// channel before it lets requests through; messages published while it was
// away are not replayed unless the channel (or, for direct messages, the
// inbox) keeps history: see above. The client remembers
// the server frame ids and the sender message ids it has received, so a
// message is delivered at most once, across reconnects too. State changes
// (Connecting, Connected, Reconnecting, Closed) are reported to
// Options.OnStateChange and by State; Done is closed, and Err set, once the
// client is closed for good.
//
// # Body encryption
//
// With Options.Encrypt, the client sends an agreement key in hello and
// seals every body with the content keys the server wraps to it (spec.md
// §11); deliveries are opened transparently. A channel's key arrives with
// the subscription, so a client publishes encrypted only to channels it has
// subscribed to (ErrNoChannelKey otherwise). This protects bodies from
// TLS-terminating intermediaries, not from the server.
//
// # Logging
//
// Options.Logger receives connection events. Tokens, keys and message
// bodies are never logged; Token's String and LogValue omit its secrets.
package client
