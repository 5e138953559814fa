package server

import (
	"log/slog"
	"net/http"
	"time"
)

// HTTPConfig is what bounds the work a client can make the server do
// before it authenticates, at the HTTP layer: how long it may take to send
// a request and how large its headers may be, and how long an idle
// keep-alive connection is kept. The zero value of every field means its
// default (DefaultHTTPConfig).
//
// WebSocket connections are not affected by ReadTimeout, WriteTimeout or
// IdleTimeout: the upgrade hijacks the connection from the http.Server and
// clears its deadlines, and the session then has its own
// (Config.HelloTimeout, PongTimeout and WriteTimeout).
type HTTPConfig struct {
	// ReadHeaderTimeout bounds reading a request's headers. Default 10s.
	ReadHeaderTimeout time.Duration
	// ReadTimeout bounds reading a whole request, its body included
	// (/v1/token, /v1/refresh and the admin API): a body trickled more
	// slowly is cut off and the connection closed. Default 30s.
	ReadTimeout time.Duration
	// WriteTimeout bounds handling a request and writing its response,
	// from the end of its headers. Default 30s.
	WriteTimeout time.Duration
	// IdleTimeout is how long a keep-alive connection may wait for its next
	// request before it is closed. Default 120s.
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds the size of a request's headers. Default
	// MaxFrame + 16 KiB: the admin API's Sigil-Proof header carries a whole
	// client frame.
	MaxHeaderBytes int
}

// DefaultHTTPConfig returns the default timeouts; MaxHeaderBytes is 0,
// which New fills in from MaxFrame.
func DefaultHTTPConfig() HTTPConfig {
	return HTTPConfig{ReadHeaderTimeout: 10 * time.Second, ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second, IdleTimeout: 120 * time.Second}
}

func (h *HTTPConfig) setDefaults(maxFrame int) {
	d := DefaultHTTPConfig()
	for _, f := range []struct{ v, def *time.Duration }{
		{&h.ReadHeaderTimeout, &d.ReadHeaderTimeout}, {&h.ReadTimeout, &d.ReadTimeout},
		{&h.WriteTimeout, &d.WriteTimeout}, {&h.IdleTimeout, &d.IdleTimeout},
	} {
		if *f.v <= 0 {
			*f.v = *f.def
		}
	}
	if h.MaxHeaderBytes <= 0 {
		h.MaxHeaderBytes = maxFrame + 16<<10
	}
}

// HTTPServer returns an http.Server for h (nil means s.Handler()) with the
// timeouts and limits of Config.HTTP. Serve it with Serve or ServeTLS, and
// stop it with Shutdown after s.Shutdown.
func (s *Server) HTTPServer(h http.Handler) *http.Server {
	if h == nil {
		h = s.Handler()
	}
	c := s.cfg.HTTP
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: c.ReadHeaderTimeout,
		ReadTimeout:       c.ReadTimeout,
		WriteTimeout:      c.WriteTimeout,
		IdleTimeout:       c.IdleTimeout,
		MaxHeaderBytes:    c.MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
}
