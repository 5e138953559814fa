package server

import (
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
)

// WebSocketHandler serves /v1/ws: it checks the subprotocol and the Origin,
// upgrades, and returns at once; the connection runs on its own goroutine.
func (s *Server) WebSocketHandler() http.Handler {
	return http.HandlerFunc(s.serveWS)
}

func (s *Server) serveWS(w http.ResponseWriter, r *http.Request) {
	if s.isDraining() {
		writeError(w, newAPIError(http.StatusServiceUnavailable, ErrCodeUnavailable, "shutting down"))
		return
	}
	if !websocket.IsWebSocketUpgrade(r) {
		writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "a WebSocket upgrade is required"))
		return
	}
	if !slices.Contains(websocket.Subprotocols(r), protocol.Subprotocol) {
		writeError(w, newAPIError(http.StatusBadRequest, ErrCodeInvalidRequest, "the "+protocol.Subprotocol+" subprotocol is required"))
		return
	}
	if !s.originAllowed(r) {
		writeError(w, newAPIError(http.StatusForbidden, ErrCodeForbidden, "origin not allowed"))
		return
	}
	ws, err := s.upgrader.Upgrade(hijacker{w, s.cfg.WriteTimeout / 4}, r, nil)
	if err != nil {
		return // the upgrader answered
	}
	ws.SetReadLimit(s.cfg.ReadLimit)
	c := newConn(s, ws, clientAddr(r, false))
	if !s.addConn(c) {
		_ = ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(int(protocol.CloseGoingAway), "server shutting down"), time.Now().Add(s.cfg.WriteTimeout))
		_ = ws.Close()
		return
	}
	s.m.connections.Inc()
	s.m.connTotal.Inc()
	go c.run()
}

// originAllowed: no Origin (non-browser), the same origin, or a listed one.
func (s *Server) originAllowed(r *http.Request) bool {
	origin := r.Header.Get("Origin")
	if origin == "" {
		return true
	}
	for _, o := range s.cfg.AllowedOrigins {
		if o == "*" || strings.EqualFold(o, origin) {
			return true
		}
	}
	// The server's own origin: same host (with port), and a web scheme.
	// Over TLS the scheme must be https; without TLS it may be either, as
	// a TLS-terminating proxy in front of the server is common.
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" {
		return false
	}
	switch {
	case strings.EqualFold(u.Scheme, "https"):
	case strings.EqualFold(u.Scheme, "http") && r.TLS == nil:
	default:
		return false
	}
	return strings.EqualFold(u.Host, r.Host)
}

func clientAddr(r *http.Request, trustXFF bool) string {
	if trustXFF {
		if xff := r.Header.Get("X-Forwarded-For"); xff != "" {
			first, _, _ := strings.Cut(xff, ",")
			return strings.TrimSpace(first)
		}
	}
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}
