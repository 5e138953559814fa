package client

import (
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/sigil-ws/sigil/protocol"
)

// Options configures a Client. Dial accepts nil only if no token source is
// needed, which is never the case: Tokens is required. Every other field's
// zero value means the documented default.
type Options struct {
	// Tokens obtains the session token and its session key: Password,
	// External, RefreshToken or SessionToken. Required.
	Tokens TokenSource

	// Algorithm is the algorithm of the session key that Password and
	// External generate: protocol.EdDSA (the default) or protocol.ES256.
	Algorithm jose.SignatureAlgorithm

	// JWKS pins the server's public keys. A pinned key set is the only one
	// trusted: the client never fetches keys, from the server or from any
	// URL found in a message. If nil, the key set is fetched from the
	// server's /.well-known/jwks.json over TLS (plain http only to a
	// loopback address), and fetched again when a server frame names an
	// unknown kid: at most once a minute, or once per connection attempt
	// for the first frame of a connection (spec.md §13.3).
	JWKS *protocol.KeySet

	// Encrypt asks the server for body encryption (spec.md §11): bodies are
	// sealed with content keys the server wraps to a per-connection P-256
	// key, transparently to the API. Publishing to a channel needs its key,
	// which the client gets by subscribing. Default false.
	Encrypt bool

	// Reconnect is the reconnect policy. Nil means DefaultReconnect.
	Reconnect *ReconnectPolicy

	// OnStateChange is called after every change of the connection state,
	// one call at a time, from the client's goroutines: it must not block
	// for long. err is why the connection was lost or the client closed.
	OnStateChange func(s State, err error)

	// OnError is called for asynchronous errors: server frames that fail
	// verification (their *protocol.Error code says why), error frames that
	// answer no pending request, failed resubscriptions. The client ignores
	// the offending frame and stays consistent. Called one at a time; must
	// not block for long.
	OnError func(err error)

	// OnPresence is called for every presence change in a channel the
	// client is subscribed to (spec.md §9.5): a subject's first session
	// joined, or its last one left. The frames are verified like every
	// server frame. Called one at a time, from the client's goroutines;
	// must not block for long. Presence gives the current members.
	OnPresence func(e PresenceEvent)

	// OnRefresh is called with the new token after every refresh (in-band
	// or over HTTP). Refresh tokens are single-use and rotate: a program
	// that stores one (sigil login) must store the new one here.
	OnRefresh func(t Token)

	// HTTPClient makes the token, refresh and JWKS requests. Default: a
	// client with a 15 s timeout.
	HTTPClient *http.Client

	// Logger receives structured logs of connection events. Tokens, keys
	// and message bodies are never logged. Default: no logging.
	Logger *slog.Logger

	// InboxSince, if set, is the last position of the user's inbox that
	// an earlier process received (Message.Position of a direct message,
	// saved by the application): on a server that keeps direct messages
	// (spec.md §20.11), the first connection asks for the ones after it,
	// and Dial opens the Inbox so that none is dropped. Later connections
	// resume from the client's own position. Default: none (the inbox
	// starts at the server's current position).
	InboxSince *Position

	// SubscriptionBuffer is how many delivered messages a subscription
	// queues for a slow reader; one more ends the subscription with
	// ErrSlowConsumer. Default 1024.
	SubscriptionBuffer int

	// WriteTimeout bounds writing one frame. Default 10 s.
	WriteTimeout time.Duration

	// HandshakeTimeout bounds the WebSocket upgrade plus hello/welcome.
	// Default 10 s.
	HandshakeTimeout time.Duration

	// Now is the clock of protocol times: the ts of frames sent, the
	// freshness of frames received, token expiry and when to refresh.
	// Socket deadlines and reconnect backoff use real time. Default
	// time.Now; tests set a fake clock shared with the server.
	Now func() time.Time

	// InsecureAllowPlaintext allows ws:// and http:// to hosts that are not
	// loopback addresses. spec.md §2.3 forbids it: use it only behind a
	// TLS-terminating sidecar you trust.
	InsecureAllowPlaintext bool
}

// ReconnectPolicy is how the client reconnects after the connection drops
// with a close code that allows it (spec.md §12.3): exponential backoff with
// full jitter, from Min doubling up to Max.
type ReconnectPolicy struct {
	// Disable turns automatic reconnection off: a lost connection closes
	// the client.
	Disable bool
	// Min is the first backoff ceiling. Default 500 ms.
	Min time.Duration
	// Max is the largest backoff ceiling. Default 30 s.
	Max time.Duration
	// MaxAttempts limits consecutive failed attempts; 0 means no limit.
	MaxAttempts int
}

// DefaultReconnect is the policy of spec.md §12.3: 0.5 s doubling to 30 s,
// full jitter, no attempt limit.
var DefaultReconnect = ReconnectPolicy{Min: 500 * time.Millisecond, Max: 30 * time.Second}

// backoff returns the wait before attempt n (0-based): a uniform random
// duration in [0, min(Max, Min·2^n)] ("full jitter").
func (p *ReconnectPolicy) backoff(n int) time.Duration {
	ceil := p.Min
	for i := 0; i < n && ceil < p.Max; i++ {
		ceil *= 2
	}
	if ceil > p.Max {
		ceil = p.Max
	}
	if ceil <= 0 {
		return 0
	}
	return rand.N(ceil + 1)
}

// State is the state of a client's connection.
type State int

// Connection states. A client starts Connecting; Dial returns it Connected.
// It moves between Connected and Reconnecting until it is Closed, for good.
const (
	StateConnecting   State = iota // dialing for the first time
	StateConnected                 // welcome received, subscriptions restored
	StateReconnecting              // the connection dropped; backing off or redialing
	StateClosed                    // closed by Close or for good; see Client.Err
)

func (s State) String() string {
	switch s {
	case StateConnecting:
		return "connecting"
	case StateConnected:
		return "connected"
	case StateReconnecting:
		return "reconnecting"
	case StateClosed:
		return "closed"
	}
	return "unknown"
}

// withDefaults returns a copy of o with defaults filled in.
func (o *Options) withDefaults() Options {
	var c Options
	if o != nil {
		c = *o
	}
	if c.Algorithm == "" {
		c.Algorithm = protocol.EdDSA
	}
	rp := DefaultReconnect
	if c.Reconnect != nil {
		rp = *c.Reconnect
		if rp.Min <= 0 {
			rp.Min = DefaultReconnect.Min
		}
		if rp.Max <= 0 {
			rp.Max = DefaultReconnect.Max
		}
		if rp.Max < rp.Min {
			rp.Max = rp.Min
		}
	}
	c.Reconnect = &rp
	if c.HTTPClient == nil {
		c.HTTPClient = &http.Client{Timeout: 15 * time.Second}
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	if c.SubscriptionBuffer <= 0 {
		c.SubscriptionBuffer = 1024
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 10 * time.Second
	}
	if c.HandshakeTimeout <= 0 {
		c.HandshakeTimeout = 10 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// PresenceEvent is a verified join or leave in a subscribed channel.
type PresenceEvent struct {
	Channel string    // the channel
	Subject string    // who joined or left
	Joined  bool      // true for a join, false for a leave
	Time    time.Time // the server's timestamp of the event
}
