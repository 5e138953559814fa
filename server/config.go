package server

import (
	"log/slog"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/sigil-ws/sigil/protocol"
)

// Config configures a Server. The zero value of every field means the
// documented default, so Config{} is a working single-node server.
type Config struct {
	// Issuer is the iss of session tokens. Default "sigil".
	Issuer string
	// Audience is the aud of session tokens. Default "sigil.v1".
	Audience string
	// Keys are the server's signing keys, oldest first. The last one signs
	// tokens and server frames; all of them verify and are published in the
	// JWKS until retired with RetireKey. Default: one EdDSA key generated in
	// memory (tokens then do not survive a restart).
	Keys []*protocol.PrivateKey

	// Authenticator checks /v1/token credentials. Default: none, every grant
	// is answered with unsupported_grant_type.
	Authenticator Authenticator
	// Policy authorises actions. Default protocol.DefaultPolicy().
	Policy *protocol.Policy

	// Replay is the replay store. Default protocol.NewMemoryReplayStore.
	Replay protocol.ReplayStore
	// Revocations stores revoked token ids and subjects. Default an
	// in-memory store on the clock Now.
	Revocations RevocationStore
	// Refresh stores refresh tokens. Default NewMemoryRefreshStore(Now)
	// with MaxRefreshFamilies.
	Refresh RefreshStore
	// Broker fans frames out to subscribers. Default NewMemoryBroker().
	Broker Broker
	// History stores the streams of the channels whose policy gives them
	// history (protocol.Policy.History, spec.md §20). Default: a
	// NewMemoryHistory when Broker is the in-memory broker; none
	// otherwise (a cluster sets its own), and then no channel has history.
	History History
	// MaxRecovery bounds the frames a sub with since recovers; a longer
	// gap is answered recovered:false (the client pages with the history
	// action). Default DefaultMaxRecovery (10,000).
	MaxRecovery int
	// Outcomes keeps the answers of accepted pub and dm frames for the
	// copies that clients send again after a lost connection (spec.md
	// §20.10). Default NewMemoryOutcomes(Now); a cluster shares one
	// (Cluster.Configure).
	Outcomes OutcomeStore
	// Presence holds channel members, channel content keys and the
	// session list. Default NewMemoryPresence(Now). A cluster sets Broker,
	// Presence and the three stores above together: see
	// Cluster.Configure.
	Presence Presence

	// TokenTTL is the lifetime of session tokens. Default 15 minutes.
	TokenTTL time.Duration
	// RefreshTTL is the lifetime of a refresh-token family. Default 24 hours.
	RefreshTTL time.Duration
	// MaxRefreshFamilies is the number of live refresh-token families
	// (logins) a subject may hold in the default refresh store; a login
	// beyond it evicts the subject's oldest family (RefreshStore). Default
	// DefaultMaxFamilies (32). A Refresh store given in Config has its own
	// setting.
	MaxRefreshFamilies int
	// MaxFrame is the size limit of a client frame. Default 64 KiB.
	MaxFrame int
	// ReadLimit is the WebSocket read limit; a larger frame closes the
	// connection with 1009. Default 4×MaxFrame.
	ReadLimit int64
	// Skew is the freshness tolerance of frame timestamps. Default 30s.
	Skew time.Duration

	// HandshakeTimeout bounds the WebSocket upgrade. Default 10s.
	HandshakeTimeout time.Duration
	// HelloTimeout bounds the wait for hello; then close 4000. Default 10s.
	HelloTimeout time.Duration
	// PingInterval is how often the server pings a connection. Default 30s.
	PingInterval time.Duration
	// PongTimeout is how long a connection may stay silent (no frame, no
	// pong) after a ping. Default 30s.
	PongTimeout time.Duration
	// WriteTimeout is the write deadline of every frame (a write may be
	// given up to a quarter more, so that a busy connection does not
	// re-arm its timer per frame). Default 10s.
	WriteTimeout time.Duration
	// SendQueue is the per-session send queue length; a session whose queue
	// overflows is closed with 4005. Default 256 frames.
	SendQueue int
	// MaxViolations is the number of rejected frames tolerated within
	// ViolationWindow; one more closes the connection with 1008. Default 20.
	MaxViolations int
	// ViolationWindow: default one minute.
	ViolationWindow time.Duration
	// ExpiryWarning is how long before token expiry "expiring" is sent.
	// Default 60s. It is capped at half of TokenTTL, so that a token fresh
	// from a refresh is not warned about at once (clients refresh on the
	// warning: a warning inside a new token's life would loop).
	ExpiryWarning time.Duration
	// ChannelKeyRotation is the maximum age of a channel content key.
	// Default 24 hours.
	ChannelKeyRotation time.Duration
	// KeyGrace is how long a rotated content key stays valid. Default 60s.
	KeyGrace time.Duration
	// IdleMemoryReturn is how long the server must read no frame, accept
	// no connection and see no garbage collection before it returns its
	// free heap to the system (debug.FreeOSMemory), if that and its
	// garbage come to at least 8 MiB and a quarter of the heap: the
	// headroom a burst of connections leaves (memory.go). Default 2s;
	// negative: never.
	IdleMemoryReturn time.Duration
	// SweepInterval is the period of the expiry/keepalive sweeper, and so
	// the precision of expiry warnings, expiries and pings. Default 1s.
	SweepInterval time.Duration

	// AllowedOrigins lists the browser origins ("https://chat.example")
	// allowed to open /v1/ws besides the server's own origin. Requests
	// without an Origin header (non-browser clients) are allowed. "*" allows
	// every origin: do not use it in production. Default: same origin only.
	AllowedOrigins []string
	// Compression enables permessage-deflate negotiation. Default off.
	Compression bool
	// WSURL is the ws_url returned by /v1/token. Default: derived from the
	// request's Host, wss when the request came over TLS.
	WSURL string

	// LoginFailuresPerAccount is how many failed logins an account may have
	// per LoginWindow before it is rate-limited. Default 10.
	LoginFailuresPerAccount int
	// LoginFailuresPerAddress is the same per client address. Default 50.
	LoginFailuresPerAddress int
	// LoginWindow: default one minute.
	LoginWindow time.Duration
	// TrustForwardedFor uses the first X-Forwarded-For address as the client
	// address for rate limiting. Default false (RemoteAddr).
	TrustForwardedFor bool
	// PasswordHashMemory bounds the memory of the password checks of
	// /v1/token that run at once: each is counted at PasswordCheckMemory
	// (19 MiB, an argon2id check with HashPassword's parameters), so the
	// default, DefaultPasswordHashMemory (256 MiB), allows 13 at once (at
	// least 1 always). A login that
	// finds them all busy is answered 503 unavailable with Retry-After at
	// once, before its password is hashed. Users files with costlier
	// argon2id parameters need a larger budget.
	PasswordHashMemory int64

	// Redis is the node's connection to Redis when it shares its state
	// with other nodes (a Cluster's Configure sets it). New then counts
	// failed logins there, across the nodes (a login is refused with 503
	// while Redis does not answer); checks the replay of admin proofs there
	// (AdminHandler); sends admin kicks to every node (Kick); and serves
	// the connection's metrics (sigil_redis_seconds,
	// sigil_redis_errors_total). Add a ReadyCheck for it as well
	// (Redis.Ping, or Cluster.Ready, which Cluster.Configure adds). Default
	// nil: none of these.
	Redis *Redis

	// ReadyChecks are the dependencies /readyz reports on (ReadyCheck): the
	// server answers 503 while one of them fails. Default none.
	ReadyChecks []ReadyCheck
	// ReadyInterval is how often the ReadyChecks run. Default
	// DefaultReadyInterval (1s).
	ReadyInterval time.Duration

	// HTTP holds the timeouts and limits of the http.Server that
	// Server.HTTPServer builds.
	HTTP HTTPConfig

	// Audit turns on the audit log (spec.md §21). With it, MaxFrame
	// defaults to, and may not exceed, MaxAuditFrame. Default: off.
	Audit AuditConfig

	// Node names this node when several act as one server (cluster mode):
	// the server's log lines carry it as the attribute "node", and the
	// metric sigil_node_info{node} is 1. Default empty: neither.
	Node string
	// Logger receives structured logs. Default slog.Default().
	Logger *slog.Logger
	// Registerer receives the Prometheus metrics, including the standard Go
	// runtime and process collectors (go_*, process_*) unless it already
	// has them; /metrics serves Gatherer. Default: a new registry private
	// to the server.
	Registerer prometheus.Registerer
	// Gatherer is what /metrics serves. Default: the private registry, or
	// prometheus.DefaultGatherer when Registerer is
	// prometheus.DefaultRegisterer.
	Gatherer prometheus.Gatherer
	// Now is the clock. Default time.Now.
	Now func() time.Time
}

func (c *Config) setDefaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	defInt := func(d *int, v int) {
		if *d <= 0 {
			*d = v
		}
	}
	if c.Issuer == "" {
		c.Issuer = "sigil"
	}
	if c.Audience == "" {
		c.Audience = "sigil.v1"
	}
	if c.Policy == nil {
		c.Policy = protocol.DefaultPolicy()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Replay == nil {
		c.Replay = protocol.NewMemoryReplayStore(0, c.Now)
	}
	if c.Revocations == nil {
		c.Revocations = &MemoryRevocationStore{list: protocol.NewMemoryRevocationsWithClock(c.Now)}
	}
	if c.Refresh == nil {
		rs := NewMemoryRefreshStore(c.Now)
		rs.MaxFamilies = c.MaxRefreshFamilies
		c.Refresh = rs
	}
	if c.Broker == nil {
		c.Broker = NewMemoryBroker()
	}
	if c.Presence == nil {
		c.Presence = NewMemoryPresence(c.Now)
	}
	if c.Outcomes == nil {
		c.Outcomes = NewMemoryOutcomes(c.Now)
	}
	if _, mem := c.Broker.(*MemoryBroker); c.History == nil && mem {
		c.History = NewMemoryHistory(c.Now)
	}
	defInt(&c.MaxRecovery, DefaultMaxRecovery)
	def(&c.TokenTTL, 15*time.Minute)
	def(&c.RefreshTTL, 24*time.Hour)
	if c.Audit.Log != nil {
		defInt(&c.MaxFrame, MaxAuditFrame)
	}
	defInt(&c.MaxFrame, protocol.DefaultMaxFrame)
	if c.ReadLimit <= 0 {
		c.ReadLimit = 4 * int64(c.MaxFrame)
	}
	def(&c.Skew, protocol.DefaultSkew)
	def(&c.HandshakeTimeout, 10*time.Second)
	def(&c.HelloTimeout, 10*time.Second)
	def(&c.PingInterval, 30*time.Second)
	def(&c.PongTimeout, 30*time.Second)
	def(&c.WriteTimeout, 10*time.Second)
	defInt(&c.SendQueue, 256)
	defInt(&c.MaxViolations, 20)
	def(&c.ViolationWindow, time.Minute)
	def(&c.ExpiryWarning, 60*time.Second)
	c.ExpiryWarning = min(c.ExpiryWarning, c.TokenTTL/2)
	def(&c.ChannelKeyRotation, 24*time.Hour)
	def(&c.KeyGrace, 60*time.Second)
	def(&c.SweepInterval, time.Second)
	if c.IdleMemoryReturn == 0 {
		c.IdleMemoryReturn = 2 * time.Second // negative: never
	}
	def(&c.ReadyInterval, DefaultReadyInterval)
	defInt(&c.LoginFailuresPerAccount, 10)
	defInt(&c.LoginFailuresPerAddress, 50)
	def(&c.LoginWindow, time.Minute)
	if c.PasswordHashMemory <= 0 {
		c.PasswordHashMemory = DefaultPasswordHashMemory
	}
	c.HTTP.setDefaults(c.MaxFrame)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Registerer == nil {
		reg := prometheus.NewRegistry()
		c.Registerer = reg
		if c.Gatherer == nil {
			c.Gatherer = reg
		}
	}
	if c.Gatherer == nil {
		if g, ok := c.Registerer.(prometheus.Gatherer); ok {
			c.Gatherer = g
		} else {
			c.Gatherer = prometheus.DefaultGatherer
		}
	}
}
