package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sigil-ws/sigil/protocol"
)

// HandlerFunc answers an application action (an act with a dot). The
// result is JSON-encoded as the body of the "reply" frame; an error becomes
// an "error" frame with code app_error, or the code of a *protocol.Error.
// It runs on the connection's reader goroutine: the session's next frame
// is read only after it returns.
type HandlerFunc func(ctx context.Context, m *Message) (any, error)

// Message is a verified application frame with its session.
type Message struct {
	*protocol.Message
	Session SessionInfo
}

// SessionInfo describes a live session.
type SessionInfo struct {
	ID          string    `json:"sid"`
	Subject     string    `json:"sub"`
	Roles       []string  `json:"roles"`
	TokenID     string    `json:"jti"`
	Remote      string    `json:"remote"`
	ConnectedAt time.Time `json:"connected_at"`
	ExpiresAt   time.Time `json:"expires_at"`
	Channels    []string  `json:"channels"`
	Encrypted   bool      `json:"encrypted"`
	// Node is the name of the node that serves the session, in a cluster
	// (ClusterConfig.Node); empty on a single node.
	Node string `json:"node,omitempty"`
}

// Stats are counters for tests and benchmarks (Prometheus has the rest).
type Stats struct {
	FramesAccepted uint64 // client frames that passed verification
	FramesRejected uint64 // client frames rejected
	Sessions       int    // live sessions
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	return Stats{FramesAccepted: s.accepted.Load(), FramesRejected: s.rejected.Load(), Sessions: len(s.hub.conns(nil))}
}

// Server is a Sigil server. Create it with New.
type Server struct {
	accepted, rejected atomic.Uint64
	connSeq            atomic.Uint64 // numbers connections for the presence's session list
	frames             atomic.Uint64 // frames read, for the idle memory return (memory.go)

	cfg      Config
	log      *slog.Logger
	m        *metrics
	hub      *hub
	upgrader websocket.Upgrader

	keysMu sync.Mutex
	ks     atomic.Pointer[keyState]

	handlersMu sync.RWMutex
	handlers   map[string]HandlerFunc

	acctLimit loginLimiter
	addrLimit loginLimiter
	hashSlots chan struct{} // one per concurrent password check (login.go)

	adminReplay   protocol.ReplayStore
	resentAnswers prometheus.Counter // sigil_resent_frames_total (resend.go)
	ready         *readiness
	control       *nodeControl // with Config.Redis: kicks reach every node

	mu       sync.Mutex
	conns    map[*conn]struct{}
	draining bool
	wg       sync.WaitGroup

	ctx       context.Context // canceled once Shutdown is done (or gives up)
	cancel    context.CancelFunc
	sweepStop chan struct{}
	memReturn *memReturn
	sweepEnd  chan struct{}
	sched     *schedule // the sweeper's duties per session
}

var writeBufferPool = &sync.Pool{}

// New returns a server with cfg's defaults filled in, and starts its
// sweeper (token expiry, keepalive, key rotation). Stop it with Shutdown.
func New(cfg Config) (*Server, error) {
	cfg.setDefaults()
	s := &Server{
		cfg:         cfg,
		log:         cfg.Logger,
		m:           newMetrics(cfg.Registerer, cfg.Node),
		handlers:    map[string]HandlerFunc{},
		conns:       map[*conn]struct{}{},
		hashSlots:   make(chan struct{}, cfg.passwordChecks()),
		adminReplay: protocol.NewMemoryReplayStore(0, cfg.Now),
		sweepStop:   make(chan struct{}),
		memReturn:   newMemReturn(),
		sweepEnd:    make(chan struct{}),
		sched:       newSchedule(cfg.SweepInterval, cfg.PingInterval),
	}
	if cfg.Node != "" {
		s.log = s.log.With("node", cfg.Node)
	}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	if r := cfg.Redis; r != nil {
		s.acctLimit = newRedisLimiter(r, "acct", cfg.LoginFailuresPerAccount, cfg.LoginWindow)
		s.addrLimit = newRedisLimiter(r, "addr", cfg.LoginFailuresPerAddress, cfg.LoginWindow)
		if err := cfg.Registerer.Register(r); err != nil && !errors.As(err, new(prometheus.AlreadyRegisteredError)) {
			s.cancel()
			return nil, err
		}
		// Admin proofs have their own seqs (AdminHandler), shared too: a
		// proof accepted by one node is a replay on every other.
		s.adminReplay = &RedisReplayStore{r: r, name: "admin-replay"}
		s.control = newNodeControl(r)
	} else {
		s.acctLimit = newFailureLimiter(cfg.LoginFailuresPerAccount, cfg.LoginWindow, cfg.Now)
		s.addrLimit = newFailureLimiter(cfg.LoginFailuresPerAddress, cfg.LoginWindow, cfg.Now)
	}
	if err := checkAudit(&s.cfg); err != nil {
		s.cancel()
		return nil, err
	}
	if err := checkReadyChecks(cfg.ReadyChecks); err != nil {
		s.cancel()
		return nil, err
	}
	s.ready = newReadiness(cfg.ReadyChecks, cfg.ReadyInterval, cfg.Registerer)
	keys := cfg.Keys
	if len(keys) == 0 {
		k, err := protocol.GenerateKey(protocol.EdDSA, nil)
		if err != nil {
			return nil, err
		}
		keys = []*protocol.PrivateKey{k}
	}
	if err := s.setKeys(keys); err != nil {
		return nil, err
	}
	s.hub = newHub(s)
	if err := cfg.Broker.Start(s.hub); err != nil {
		return nil, fmt.Errorf("broker: %w", err)
	}
	var err error
	if s.resentAnswers, err = newResentCounter(cfg.Registerer); err != nil {
		s.cancel()
		return nil, err
	}
	if cfg.History != nil {
		if err := cfg.History.Start(cfg.Broker); err != nil {
			s.cancel()
			return nil, fmt.Errorf("history: %w", err)
		}
		if err := registerHistoryMetrics(cfg.Registerer, cfg.History); err != nil {
			s.cancel()
			return nil, err
		}
	}
	if err := cfg.Presence.Start(cfg.Broker, s.hub.presenceEvent); err != nil {
		s.cancel()
		return nil, fmt.Errorf("presence: %w", err)
	}
	if err := s.watchRevocations(); err != nil {
		s.cancel()
		return nil, fmt.Errorf("revocations: %w", err)
	}
	s.upgrader = websocket.Upgrader{
		HandshakeTimeout:  cfg.HandshakeTimeout,
		ReadBufferSize:    0, // gorilla reads from the hijacker's reader (readBufferSize)
		WriteBufferSize:   4096,
		WriteBufferPool:   writeBufferPool,
		Subprotocols:      []string{protocol.Subprotocol},
		EnableCompression: cfg.Compression,
		CheckOrigin:       func(*http.Request) bool { return true }, // checked before Upgrade
		Error: func(w http.ResponseWriter, _ *http.Request, status int, reason error) {
			writeError(w, newAPIError(status, ErrCodeInvalidRequest, reason.Error()))
		},
	}
	if s.control != nil {
		if err := s.control.watch(s.ctx, s.onKick); err != nil {
			s.cancel()
			return nil, fmt.Errorf("kicks: %w", err)
		}
	}
	// The checks run once before New returns, so that a server whose
	// dependency is down starts not ready; then every ReadyInterval.
	s.ready.runOnce(s.ctx, s)
	go s.ready.run(s.ctx, s)
	go s.sweep()
	return s, nil
}

// Handle registers h for the application action act (a name with a dot,
// for example "orders.create"). The policy still applies to act.
func (s *Server) Handle(act string, h HandlerFunc) {
	if !protocol.IsAppAction(act) {
		panic("sigil: Handle: " + act + " is not an application action name (it needs a dot)")
	}
	s.handlersMu.Lock()
	s.handlers[act] = h
	s.handlersMu.Unlock()
}

func (s *Server) handler(act string) HandlerFunc {
	s.handlersMu.RLock()
	defer s.handlersMu.RUnlock()
	return s.handlers[act]
}

// Handler returns a mux with every route:
//
//	POST /v1/token              TokenHandler
//	POST /v1/refresh            RefreshHandler
//	GET  /.well-known/jwks.json JWKSHandler
//	GET  /v1/ws                 WebSocketHandler
//	     /v1/admin/...          AdminHandler
//	GET  /healthz, /readyz      HealthHandler, ReadyHandler
//	GET  /metrics               MetricsHandler
//	GET  /v1/audit/...          AuditHandler (with Config.Audit)
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	s.Mount(mux)
	return mux
}

// Mount registers every route of Handler on mux.
func (s *Server) Mount(mux *http.ServeMux) {
	mux.Handle("/v1/token", s.TokenHandler())
	mux.Handle("/v1/refresh", s.RefreshHandler())
	mux.Handle("/.well-known/jwks.json", s.JWKSHandler())
	mux.Handle("/v1/ws", s.WebSocketHandler())
	mux.Handle("/v1/admin/", s.AdminHandler())
	mux.Handle("/healthz", s.HealthHandler())
	mux.Handle("/readyz", s.ReadyHandler())
	mux.Handle("/metrics", s.MetricsHandler())
	mux.Handle("/v1/audit/", s.AuditHandler())
}

// HealthHandler answers 200 while the process runs.
func (s *Server) HealthHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
}

// MetricsHandler serves the Prometheus metrics.
func (s *Server) MetricsHandler() http.Handler {
	return promhttp.HandlerFor(s.cfg.Gatherer, promhttp.HandlerOpts{})
}

func (s *Server) isDraining() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.draining
}

// Shutdown drains the server (spec.md §12.4). It stops accepting
// connections (503) and reports not ready, then, on every connection:
// stops reading (frames not yet read are not accepted), lets the frame
// being handled finish, so that every frame read has its answer queued,
// writes the send queue (with the fan-out queued to it meanwhile), and
// closes with 1001. It waits for the connections to end or ctx to be done;
// then it drops what is left and returns ctx.Err().
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	already := s.draining
	s.draining = true
	conns := make([]*conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	if !already {
		close(s.sweepStop)
		<-s.sweepEnd
	}
	for _, c := range conns {
		c.stopReading()
	}
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		s.cancel()
		return nil
	case <-ctx.Done():
		s.cancel() // ends the waits for queues to be written
		s.mu.Lock()
		for c := range s.conns {
			_ = c.ws.NetConn().Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// Sessions lists the live sessions.
func (s *Server) Sessions() []SessionInfo {
	return s.hub.sessions()
}

// Kick closes every connection of session sid with 4004 and reports how
// many it closed. With Config.Redis it closes them on every node: it
// records the kick in Redis and tells every node, and counts the
// connections in the session list of every node (Config.Presence); an
// error means that the other nodes were not told.
func (s *Server) Kick(ctx context.Context, sid string) (int, error) {
	if s.control == nil {
		return s.kickLocal(sid), nil
	}
	n, err := s.clusterCount(ctx, func(si SessionInfo) bool { return si.ID == sid })
	if err != nil {
		return 0, err
	}
	if err := s.control.kick(ctx, sid, s.cfg.TokenTTL+s.cfg.Skew); err != nil {
		return 0, err
	}
	// This node's own connections may be too new for the list.
	return max(n, s.kickLocal(sid)), nil
}

// clusterCount counts the live connections of every node that match.
func (s *Server) clusterCount(ctx context.Context, match func(SessionInfo) bool) (int, error) {
	list, err := s.ClusterSessions(ctx)
	n := 0
	for _, si := range list {
		if match(si) {
			n++
		}
	}
	return n, err
}

// kickLocal closes this node's connections of session sid with 4004.
func (s *Server) kickLocal(sid string) int {
	n := 0
	for _, c := range s.hub.conns(func(c *conn) bool { return c.sid == sid }) {
		c.close(protocol.CloseKicked, "kicked by an admin", false)
		n++
	}
	return n
}

// RevokeToken revokes a session token by jti and closes its live sessions
// with 4003.
func (s *Server) RevokeToken(ctx context.Context, jti string) (int, error) {
	if err := s.cfg.Revocations.RevokeToken(ctx, jti, s.cfg.Now().Add(s.cfg.TokenTTL+s.cfg.Skew)); err != nil {
		return 0, err
	}
	return s.closeWhere(func(c *conn) bool { return c.tokenID() == jti }), nil
}

// RevokeSubject revokes every token of sub issued until now and closes its
// live sessions with 4003.
func (s *Server) RevokeSubject(ctx context.Context, sub string) (int, error) {
	if err := s.cfg.Revocations.RevokeSubject(ctx, sub, s.cfg.Now()); err != nil {
		return 0, err
	}
	return s.closeWhere(func(c *conn) bool { return c.sub == sub }), nil
}

func (s *Server) closeWhere(pred func(*conn) bool) int {
	n := 0
	for _, c := range s.hub.conns(pred) {
		c.close(protocol.CloseRevoked, "revoked", false)
		n++
	}
	return n
}

// Publish sends body to every subscriber of channel from Go code. The
// delivery's DeliverBody.frame is a server-signed frame (act "pub", typ
// sigil-server+jws), its jwk is the server's signing key and its sub is
// "server": clients check it against the JWKS rather than with
// protocol.OpenDelivery.
func (s *Server) Publish(ctx context.Context, channel string, body any) error {
	if !protocol.ValidChannel(channel) {
		return &protocol.Error{Code: protocol.CodeBadRequest, Message: "invalid channel name"}
	}
	ks := s.keys()
	inner, err := ks.signer.SignBody(&protocol.Envelope{Action: protocol.ActPub, Channel: channel}, body)
	if err != nil {
		return err
	}
	logIndex, err := s.auditPublished(inner)
	if err != nil {
		return err
	}
	return s.hub.publish(ctx, channel, inner, ks.serverJWK, protocol.ServerSubject, logIndex)
}

func (s *Server) addConn(c *conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.draining {
		return false
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	return true
}

func (s *Server) removeConn(c *conn) {
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// sweep runs the periodic duties until Shutdown. It touches only the
// sessions with a duty due (schedule): an expiry warning or expiry, or a
// keepalive ping, after which the next ping is PingInterval later.
func (s *Server) sweep() {
	defer close(s.sweepEnd)
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	lastPing := time.Now() // keepalive runs on real time; expiry and rotation on the clock
	var due []*conn        // reused: the sweep allocates nothing per session
	for {
		select {
		case <-s.sweepStop:
			return
		case <-t.C:
		}
		now, real := s.cfg.Now(), time.Now()
		due = s.sched.popDue(dutyExpiry, now.UnixMilli(), due[:0])
		for i, c := range due {
			if c.tick(now) {
				s.sched.planExpiry(c, now, s.cfg.ExpiryWarning)
			}
			due[i] = nil
		}
		due = s.pingDue(real, due)
		due = s.idleDue(real, due)
		s.hub.rotateOld(now)
		maint := time.Since(lastPing) >= s.cfg.PingInterval
		if maint {
			lastPing = time.Now()
			s.hub.retryUnsubscribes()
			s.hub.retryRotations()
		}
		if m, ok := s.cfg.Replay.(*protocol.MemoryReplayStore); ok && maint {
			m.Sweep()
		}
		s.maybeReturnMemory(real)
	}
}
