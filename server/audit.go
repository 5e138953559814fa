package server

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"golang.org/x/mod/sumdb/note"
)

// AuditConfig turns on the audit log (spec.md §21): every accepted client
// frame of a logged action, every message the application publishes, the
// session tokens and the server's keys, in a transparency log.
type AuditConfig struct {
	// Log is the log written to; the caller opens it (audit.Open) and
	// closes it after Shutdown. Default nil: no audit log.
	Log *audit.Log
	// Verifier is the log's checkpoint key, with which /v1/audit/proof
	// checks the checkpoint it proves against. Required with Log.
	Verifier note.Verifier
	// Async answers and delivers a frame without waiting for its entry to
	// be durable: lower latency, but a crash loses the entries of the
	// last batch window (audit.Config.BatchMaxAge) and of the batch being
	// written, and the reply carries no log_index. Default false (sync):
	// the reply and the deliveries wait until the entry has an index and
	// is fsynced, and the reply to pub and dm carries log_index.
	Async bool
	// Actions lists the actions whose accepted frames are logged. Default
	// pub, dm and every application action (a name with a dot; "*.*"
	// here stands for all of them). sub, unsub, presence, ping and refresh
	// change no message record and are not logged (tokens from a refresh
	// are).
	Actions []string
	// Public serves the log's entries (tile/entries/...) and proofs to
	// anyone. They hold every logged message, bodies included unless
	// encrypted, so by default they are served only to an admin
	// (AdminHandler's authentication, act "admin.audit"); the checkpoint,
	// the hash tiles and the key, which reveal no message, are always
	// public. Default false.
	Public bool

	backlog chan struct{} // async: one per entry added and not yet written
}

// MaxAuditBacklog bounds the entries of an asynchronous audit log that
// were accepted and not yet written: beyond it, a frame waits for a slot
// (its connection reads its next frame after that), so that a crash loses
// at most this many.
const MaxAuditBacklog = 4096

// MaxAuditFrame is the largest MaxFrame with the audit log on: an entry
// holds the frame and at most 1 KiB besides, within audit.MaxEntry.
const MaxAuditFrame = audit.MaxEntry + 1 - 1<<10

// LoggedReply is the body of the reply to a logged pub or dm when the
// audit log is on and synchronous (spec.md §21.3).
type LoggedReply struct {
	LogIndex uint64 `json:"log_index"`
}

func (a *AuditConfig) logs(act string) bool {
	if a.Log == nil {
		return false
	}
	if a.Actions == nil {
		return act == protocol.ActPub || act == protocol.ActDM || protocol.IsAppAction(act)
	}
	return slices.Contains(a.Actions, act) || protocol.IsAppAction(act) && slices.Contains(a.Actions, "*.*")
}

func (s *Server) auditOn() bool { return s.cfg.Audit.Log != nil }

func (s *Server) auditEntry(kind string) *audit.Entry {
	return &audit.Entry{V: audit.Version, Kind: kind, Time: s.cfg.Now().UnixMilli(), Node: s.cfg.Node}
}

// auditAdd adds e, and in sync mode (or when wait) waits for its index.
// ok is false when the index is not known (async).
func (s *Server) auditAdd(e *audit.Entry, wait bool) (index uint64, ok bool, err error) {
	if s.cfg.Audit.Async && !wait {
		select {
		case s.cfg.Audit.backlog <- struct{}{}:
		case <-s.ctx.Done():
			return 0, false, s.ctx.Err()
		}
		s.cfg.Audit.Log.AddFunc(e, func(_ uint64, err error) {
			<-s.cfg.Audit.backlog
			if err != nil {
				s.auditFailed(e.Kind, err)
			}
		})
		return 0, false, nil
	}
	f := s.cfg.Audit.Log.Add(s.ctx, e)
	index, err = f()
	if err != nil {
		s.auditFailed(e.Kind, err)
		return 0, false, err
	}
	return index, true, nil
}

func (s *Server) auditFailed(kind string, err error) {
	s.m.backendErrors.WithLabelValues("audit", kind).Inc()
	s.log.Error("audit log append failed", "kind", kind, "err", err)
}

// auditKeys logs the server's public keys (at start and on rotation).
func (s *Server) auditKeys(jwks []byte) error {
	if !s.auditOn() {
		return nil
	}
	e := s.auditEntry(audit.KindKeys)
	e.JWKS = jwks
	_, _, err := s.auditAdd(e, true)
	return err
}

// auditToken logs the session's current token with its key: at hello and
// after an in-band refresh. It is queued before any frame of the session
// that names it, so it gets a smaller index; it is not waited for.
func (c *conn) auditToken(token string) {
	s := c.srv
	if !s.auditOn() {
		return
	}
	e := s.auditEntry(audit.KindToken)
	e.Token, e.JWK = token, c.senderJWK()
	s.cfg.Audit.Log.AddFunc(e, func(_ uint64, err error) {
		if err != nil {
			s.auditFailed(e.Kind, err)
		}
	})
}

// auditFrame logs an accepted frame m of a logged action, before it is
// dispatched (spec.md §21.3). It returns the index for the reply (-1:
// none), or the error that answers the frame instead: unavailable (the
// log failed; nothing was delivered), too_large.
func (c *conn) auditFrame(m *protocol.Message) (int64, *protocol.Error) {
	e := c.frameEntry(m)
	if e == nil {
		return -1, nil
	}
	index, ok, err := c.srv.auditAdd(e, false)
	return auditOutcome(index, ok, err)
}

// frameEntry is the entry of m, or nil if m is not logged.
func (c *conn) frameEntry(m *protocol.Message) *audit.Entry {
	s := c.srv
	if !s.cfg.Audit.logs(m.Action) || protocol.CheckAction(&m.Envelope) != nil {
		return nil
	}
	e := s.auditEntry(audit.KindFrame)
	e.Frame, e.JTI, e.JKT, e.JWK = string(m.Frame), c.tokenID(), c.sess.Key().Thumbprint(), c.senderJWK()
	return e
}

// auditOutcome is auditFrame's answer for an entry's outcome.
func auditOutcome(index uint64, ok bool, err error) (int64, *protocol.Error) {
	switch {
	case errors.Is(err, audit.ErrTooLarge):
		return -1, &protocol.Error{Code: protocol.CodeTooLarge, Message: "the frame is too large for the audit log"}
	case err != nil:
		return -1, &protocol.Error{Code: protocol.CodeUnavailable, Message: "the audit log is unavailable"}
	case !ok:
		return -1, nil
	}
	return int64(index), nil
}

// maxPiped bounds the frames of one connection whose entries are being
// written (auditPipe); beyond, the connection reads its next frame once
// one is answered.
const maxPiped = 64

// auditPipe holds, in sync mode, a connection's accepted pub and dm
// frames whose entries are being written, in order. Their connection
// reads and verifies its next frames meanwhile, so that the entries of
// one connection's pipelined frames share a batch (one batch's writes
// and fsyncs cost milliseconds of CPU, whatever its size); one goroutine
// per busy connection waits for each entry in turn and dispatches its
// frame, so that replies and deliveries keep the order of the frames. Any
// other frame, and the end of the connection, waits until the pipe is
// empty (auditWait): what a session observes is as if each frame waited.
type auditPipe struct {
	mu   sync.Mutex
	cond *sync.Cond // on mu: the pipe shrank
	q    []pipedFrame
	busy bool // a goroutine runs the pipe
}

type pipedFrame struct {
	ctx context.Context // the outcome store's (resend.go)
	m   *protocol.Message
	f   audit.Future
	end func(*protocol.Error) // the outcome, for a resent copy
}

func (p *auditPipe) wait() *sync.Cond {
	if p.cond == nil {
		p.cond = sync.NewCond(&p.mu)
	}
	return p.cond
}

// auditPiped takes m into the pipe if it is a logged pub or dm of a
// synchronous log: it is then answered (end included) once its entry is
// durable.
func (c *conn) auditPiped(ctx context.Context, m *protocol.Message, end func(*protocol.Error)) bool {
	s := c.srv
	if s.cfg.Audit.Async || m.Action != protocol.ActPub && m.Action != protocol.ActDM {
		return false
	}
	e := c.frameEntry(m)
	if e == nil {
		return false
	}
	m.Frame = []byte(e.Frame) // the read buffer is reused for the next frame
	if c.pipe == nil {
		c.pipe = &auditPipe{}
	}
	p := c.pipe
	p.mu.Lock()
	for len(p.q) >= maxPiped {
		p.wait().Wait()
	}
	// Added under p.mu: the pipe's order is the log's.
	p.q = append(p.q, pipedFrame{ctx: ctx, m: m, f: s.cfg.Audit.Log.Add(s.ctx, e), end: end})
	if !p.busy {
		p.busy = true
		go c.runPipe()
	}
	p.mu.Unlock()
	return true
}

// runPipe answers the piped frames in order until the pipe is empty.
func (c *conn) runPipe() {
	p := c.pipe
	for {
		p.mu.Lock()
		if len(p.q) == 0 {
			p.busy = false
			p.wait().Broadcast()
			p.mu.Unlock()
			return
		}
		pf := p.q[0]
		p.mu.Unlock()
		index, err := pf.f()
		if err != nil {
			c.srv.auditFailed(audit.KindFrame, err)
		}
		var perr *protocol.Error
		if c.logIndex, perr = auditOutcome(index, err == nil, err); perr == nil {
			perr = c.dispatch(pf.ctx, pf.m)
		}
		c.answered(pf.m, pf.end, perr)
		p.mu.Lock()
		p.q[0] = pipedFrame{}
		p.q = p.q[1:]
		p.wait().Broadcast()
		p.mu.Unlock()
	}
}

// auditWait waits until the connection's piped frames are answered.
func (c *conn) auditWait() {
	if c.srv.cfg.Audit.Async || !c.srv.auditOn() {
		return // nothing is piped
	}
	p := c.pipe
	if p == nil {
		return // nothing was ever piped
	}
	p.mu.Lock()
	for p.busy {
		p.wait().Wait()
	}
	p.mu.Unlock()
}

// auditPublished logs a frame the server application publishes: its
// index for the delivery (-1: none).
func (s *Server) auditPublished(frame []byte) (int64, error) {
	if !s.auditOn() {
		return -1, nil
	}
	e := s.auditEntry(audit.KindServer)
	e.Frame = string(frame)
	index, ok, err := s.auditAdd(e, false)
	if err != nil {
		return -1, &protocol.Error{Code: protocol.CodeUnavailable, Message: "the audit log is unavailable"}
	}
	if !ok {
		return -1, nil
	}
	return int64(index), nil
}

// bodyLogIndex is the log_index of a reply or delivery body (spec.md
// §21.3): nil for none (-1).
func bodyLogIndex(index int64) *uint64 {
	if index < 0 {
		return nil
	}
	u := uint64(index)
	return &u
}

// AuditHandler serves the audit log read-only (spec.md §21.4): the
// checkpoint, the tiles and entry bundles at the C2SP tlog-tiles paths
// and the checkpoint key (log.vkey) under /v1/audit/, and
// GET /v1/audit/proof?index=N, an inclusion proof (audit.Proof) against
// the latest checkpoint: 404 not_found before that checkpoint covers N.
// Entry bundles and proofs need an admin's bearer token and Sigil-Proof
// (act "admin.audit", body {}) unless AuditConfig.Public. Without an
// audit log it answers 404.
func (s *Server) AuditHandler() http.Handler {
	if !s.auditOn() {
		return http.NotFoundHandler()
	}
	files := http.StripPrefix("/v1/audit", audit.Handler(s.cfg.Audit.Log.Dir()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		entries := r.URL.Path == "/v1/audit/proof" || strings.HasPrefix(r.URL.Path, "/v1/audit/tile/entries/")
		if entries && !s.cfg.Audit.Public {
			if aerr := s.adminAuth(r, "admin.audit", []byte("{}")); aerr != nil {
				writeError(w, aerr)
				return
			}
		}
		if r.URL.Path != "/v1/audit/proof" {
			files.ServeHTTP(w, r)
			return
		}
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", "GET")
			writeError(w, newAPIError(http.StatusMethodNotAllowed, ErrCodeInvalidRequest, "GET only"))
			return
		}
		q := r.URL.Query()
		index, err := strconv.ParseUint(q.Get("index"), 10, 64)
		if err != nil || len(q) != 1 {
			writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "want ?index=N"))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), s.cfg.HTTP.WriteTimeout)
		defer cancel()
		p, err := audit.Prove(ctx, s.cfg.Audit.Log.Source(), s.cfg.Audit.Verifier, index)
		switch {
		case errors.Is(err, audit.ErrNotPublished):
			writeError(w, newAPIError(http.StatusNotFound, ErrCodeNotFound, err.Error()))
		case err != nil:
			s.log.Error("audit proof failed", "index", index, "err", err)
			writeError(w, newAPIError(http.StatusInternalServerError, ErrCodeInternal, "could not build the proof"))
		default:
			writeJSON(w, http.StatusOK, p)
		}
	})
}

// auditHello logs the token of a hello that verified.
func (c *conn) auditHello(m *protocol.Message) {
	if !c.srv.auditOn() {
		return
	}
	var hb protocol.HelloBody
	if err := protocol.DecodeBody(m.Body, &hb); err != nil {
		c.srv.auditFailed(audit.KindToken, err) // VerifyHello decoded it: cannot happen
		return
	}
	c.auditToken(hb.Token)
}

// checkAudit checks the audit settings of a Config with defaults set.
func checkAudit(cfg *Config) error {
	a := &cfg.Audit
	if a.Log == nil {
		return nil
	}
	if a.Verifier == nil || a.Verifier.Name() != a.Log.Origin() {
		return errors.New("sigil: Config.Audit.Verifier must be the key of the audit log's checkpoints")
	}
	if cfg.MaxFrame > MaxAuditFrame {
		return fmt.Errorf("sigil: with the audit log on, MaxFrame may be at most %d bytes (it is %d)", MaxAuditFrame, cfg.MaxFrame)
	}
	a.backlog = make(chan struct{}, MaxAuditBacklog)
	return nil
}
