package server

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// ReadyCheck is a dependency that the server needs to serve: while its
// Check fails, /readyz answers 503, so that a load balancer sends new
// clients to other nodes. /healthz does not look at it (the process is
// alive; restarting it would not bring the dependency back).
type ReadyCheck struct {
	// Name names the check in /readyz's answer, in logs and in the
	// sigil_ready_check{check} metric, for example "redis".
	Name string
	// Check returns nil while the dependency works. It is called every
	// Config.ReadyInterval, one call at a time, and must return within a
	// bounded time of its own (Redis.Ping returns within
	// RedisConfig.OpTimeout); until it returns, the check keeps its last
	// result.
	Check func(ctx context.Context) error
}

// DefaultReadyInterval is the default Config.ReadyInterval.
const DefaultReadyInterval = time.Second

// readiness runs the ready checks and keeps their last results.
type readiness struct {
	checks   []ReadyCheck
	interval time.Duration
	gauge    *prometheus.GaugeVec

	mu      sync.Mutex
	failing map[string]error // by check name; absent: passing
}

func newReadiness(checks []ReadyCheck, interval time.Duration, reg prometheus.Registerer) *readiness {
	r := &readiness{checks: checks, interval: interval, failing: map[string]error{}}
	r.gauge = prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "sigil_ready_check",
		Help: "1 while a readiness check (Config.ReadyChecks) passes, 0 while it fails."}, []string{"check"})
	reg.MustRegister(r.gauge)
	return r
}

// runOnce runs every check once, in order, and records the results;
// changes are logged by s.
func (r *readiness) runOnce(ctx context.Context, s *Server) {
	for _, c := range r.checks {
		err := c.Check(ctx)
		r.mu.Lock()
		prev, wasFailing := r.failing[c.Name]
		if err != nil {
			r.failing[c.Name] = err
		} else {
			delete(r.failing, c.Name)
		}
		r.mu.Unlock()
		switch {
		case err != nil && (!wasFailing || prev.Error() != err.Error()):
			s.log.Warn("not ready: a readiness check fails", "check", c.Name, "err", err)
		case err == nil && wasFailing:
			s.log.Info("ready again: the readiness check passes", "check", c.Name)
		}
		v := 1.0
		if err != nil {
			v = 0
		}
		r.gauge.WithLabelValues(c.Name).Set(v)
	}
}

// run repeats the checks every interval until ctx is done.
func (r *readiness) run(ctx context.Context, s *Server) {
	t := time.NewTicker(r.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			r.runOnce(ctx, s)
		}
	}
}

// err returns nil when every check passed last time, and otherwise an
// error naming the failing checks (not their errors, which /readyz does not
// show to the network).
func (r *readiness) err() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.failing) == 0 {
		return nil
	}
	var names []string
	for _, c := range r.checks {
		if _, ok := r.failing[c.Name]; ok {
			names = append(names, c.Name)
		}
	}
	return errors.New("not ready: " + strings.Join(names, ", "))
}

// Ready reports whether the server is ready: nil while it accepts
// connections and every ReadyCheck passed at its last run; otherwise why
// not. ReadyHandler serves it.
func (s *Server) Ready() error {
	if s.isDraining() {
		return errors.New("shutting down")
	}
	return s.ready.err()
}

// ReadyHandler answers 200 while Ready returns nil, and 503 unavailable
// otherwise: once Shutdown has begun, and while a ReadyCheck fails (a
// node whose Redis does not answer, say). It turns 200 again by itself
// when the check passes again.
func (s *Server) ReadyHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if err := s.Ready(); err != nil {
			writeError(w, newAPIError(http.StatusServiceUnavailable, ErrCodeUnavailable, err.Error()))
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	})
}

func checkReadyChecks(checks []ReadyCheck) error {
	seen := map[string]bool{}
	for _, c := range checks {
		if c.Name == "" || c.Check == nil || seen[c.Name] {
			return errors.New("sigil: every ReadyCheck needs a Check and a unique, non-empty Name")
		}
		seen[c.Name] = true
	}
	return nil
}
