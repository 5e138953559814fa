package server

import (
	"errors"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/sigil-ws/sigil/protocol"
)

type metrics struct {
	connections    prometheus.Gauge
	connTotal      prometheus.Counter
	accepted       prometheus.Counter
	rejected       *prometheus.CounterVec
	rejectedBy     map[protocol.Code]prometheus.Counter
	verifySeconds  prometheus.Histogram
	deliveries     prometheus.Counter
	slowDrops      prometheus.Counter
	closes         *prometheus.CounterVec
	logins         *prometheus.CounterVec
	backendErrors  *prometheus.CounterVec
	passwordChecks prometheus.Gauge
	memoryReturns  prometheus.Counter
	memoryReturned prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, node string) *metrics {
	m := &metrics{
		connections: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_connections", Help: "Open WebSocket connections."}),
		connTotal:   prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_connections_total", Help: "WebSocket connections accepted."}),
		accepted:    prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_frames_accepted_total", Help: "Client frames that passed verification."}),
		rejected:    prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_frames_rejected_total", Help: "Client frames rejected, by error code."}, []string{"code"}),
		verifySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "sigil_verify_seconds", Help: "Time to verify one client frame.",
			Buckets: []float64{25e-6, 50e-6, 100e-6, 200e-6, 500e-6, 1e-3, 5e-3, 25e-3},
		}),
		deliveries: prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_deliveries_total", Help: "Frames queued to sessions by fan-out (deliver, direct, join, leave)."}),
		slowDrops:  prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_slow_consumer_drops_total", Help: "Sessions closed because their send queue overflowed."}),
		closes:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_closes_total", Help: "Connections closed by the server, by close code."}, []string{"code"}),
		logins:     prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_token_requests_total", Help: "Token endpoint results."}, []string{"result"}),
		memoryReturns: prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_idle_memory_returns_total",
			Help: "Free heap returned to the system once the process was idle (Config.IdleMemoryReturn)."}),
		memoryReturned: prometheus.NewCounter(prometheus.CounterOpts{Name: "sigil_idle_memory_returned_bytes_total",
			Help: "Heap, in bytes, those returns expected to give back: free, and garbage since the last collection."}),
		rejectedBy: map[protocol.Code]prometheus.Counter{},
		backendErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_backend_errors_total",
			Help: "Failed calls to a shared store or the broker, by backend (store, broker) and operation."}, []string{"backend", "op"}),
		passwordChecks: prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_password_checks", Help: "Password checks in progress (at most PasswordHashMemory / 19 MiB)."}),
	}
	for _, c := range protocol.Codes {
		m.rejectedBy[c] = m.rejected.WithLabelValues(string(c))
	}
	reg.MustRegister(m.connections, m.connTotal, m.accepted, m.rejected, m.verifySeconds, m.deliveries, m.slowDrops, m.closes, m.logins, m.backendErrors, m.passwordChecks, m.memoryReturns, m.memoryReturned)
	if node != "" {
		info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "sigil_node_info", Help: "1, labelled with the node name (Config.Node).",
			ConstLabels: prometheus.Labels{"node": node}})
		info.Set(1)
		reg.MustRegister(info)
	}
	registerRuntime(reg)
	return m
}

// registerRuntime adds the standard Go runtime (go_goroutines,
// go_memstats_*, …) and process (process_resident_memory_bytes,
// process_open_fds, …) collectors that Go service dashboards expect. A
// registry that already has them (prometheus.DefaultRegisterer does) keeps
// its own.
func registerRuntime(reg prometheus.Registerer) {
	for _, c := range []prometheus.Collector{collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{})} {
		var are prometheus.AlreadyRegisteredError
		if err := reg.Register(c); err != nil && !errors.As(err, &are) {
			panic(err)
		}
	}
}

func (m *metrics) reject(code protocol.Code) {
	if c, ok := m.rejectedBy[code]; ok {
		c.Inc()
		return
	}
	m.rejected.WithLabelValues(string(code)).Inc()
}

// redisMetrics are a Redis connection's metrics (sigil_redis_*). Every
// Redis has them; a Server whose Config.Redis is set registers them.
type redisMetrics struct {
	seconds *prometheus.HistogramVec
	errors  *prometheus.CounterVec
}

func newRedisMetrics() *redisMetrics {
	return &redisMetrics{
		seconds: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "sigil_redis_seconds", Help: "Duration of Redis operations (one round trip each), by operation, failed ones included.",
			Buckets: []float64{100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 100e-3, 250e-3, 1},
		}, []string{"op"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "sigil_redis_errors_total",
			Help: "Failed Redis operations, and lost subscriptions, by operation."}, []string{"op"}),
	}
}

// report records one Redis operation (a round trip): its duration and,
// if it failed, its error. Observe sees it too.
func (r *Redis) report(op string, d time.Duration, err error) {
	r.metrics.seconds.WithLabelValues(op).Observe(d.Seconds())
	if err != nil {
		r.metrics.errors.WithLabelValues(op).Inc()
	}
	if r.observe != nil {
		r.observe(op, d, err)
	}
}

// reportEvent records what is not a round trip, such as the end of a
// subscription (d is how long it lasted): an error if err is not nil, and
// a call of Observe.
func (r *Redis) reportEvent(op string, d time.Duration, err error) {
	if err != nil {
		r.metrics.errors.WithLabelValues(op).Inc()
	}
	if r.observe != nil {
		r.observe(op, d, err)
	}
}

// Describe implements prometheus.Collector: a Redis exports its metrics,
// sigil_redis_seconds{op} and sigil_redis_errors_total{op}, through the
// Server whose Config.Redis it is, or a registry it is registered with.
func (r *Redis) Describe(ch chan<- *prometheus.Desc) {
	r.metrics.seconds.Describe(ch)
	r.metrics.errors.Describe(ch)
}

// Collect implements prometheus.Collector.
func (r *Redis) Collect(ch chan<- prometheus.Metric) {
	r.metrics.seconds.Collect(ch)
	r.metrics.errors.Collect(ch)
}
