package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sigil-ws/sigil/client"
)

// The soak parts of "sigil load": --churn opens short sessions at a rate,
// each a new login (so a new refresh family), a connection, a few pings
// and a close; --watch samples the server's /metrics during the run and
// reports the trend of its resident memory. Together they show whether the
// server's memory stays flat under session churn (spec.md §12.4 bounds it).

// churnConcurrency bounds the short sessions in flight; a tick that finds
// them all busy is counted as skipped rather than queued.
const churnConcurrency = 16

// churnPings is how many frames each short session sends after hello.
const churnPings = 3

type churnReport struct {
	Rate     float64        `json:"rate"`     // sessions per second asked for
	Sessions int64          `json:"sessions"` // completed: login, connect, pings, close
	Errors   map[string]int `json:"errors,omitempty"`
	Skipped  int64          `json:"skipped,omitempty"` // ticks with churnConcurrency sessions in flight
}

// churn runs short sessions at f.churn per second until end or ctx.
func (l *loadRun) churn(ctx context.Context, end time.Time, r *churnReport) {
	var mu sync.Mutex
	var done, skipped atomic.Int64
	slots := make(chan struct{}, churnConcurrency)
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Duration(float64(time.Second) / l.f.churn))
	defer tick.Stop()
	for n := 0; ; n++ {
		var now time.Time
		select {
		case <-ctx.Done():
		case now = <-tick.C:
		}
		if ctx.Err() != nil || !now.Before(end) {
			break
		}
		select {
		case slots <- struct{}{}:
		default:
			skipped.Add(1)
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-slots }()
			if err := l.shortSession(ctx, n); err != nil {
				mu.Lock()
				r.Errors[errorKey(err)]++
				mu.Unlock()
				return
			}
			done.Add(1)
		}()
	}
	wg.Wait()
	r.Sessions, r.Skipped = done.Load(), skipped.Load()
}

// shortSession is the churn's session number n: user n mod the users, on
// server n mod the servers.
func (l *loadRun) shortSession(ctx context.Context, n int) error {
	u := n % len(l.users)
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	c, err := client.Dial(dctx, l.wsURLs[n%len(l.wsURLs)], &client.Options{
		Tokens:                 client.Password(l.users[u], l.passwords[u]),
		Algorithm:              l.alg,
		HTTPClient:             cliHTTPClient(),
		InsecureAllowPlaintext: l.f.insecure,
	})
	if err != nil {
		return err
	}
	defer c.Close()
	for range churnPings {
		if err := c.Ping(dctx); err != nil {
			return err
		}
	}
	return c.Close()
}

// serverSample is one reading of the server's /metrics.
type serverSample struct {
	T          float64 `json:"t_s"` // seconds since publishing began
	RSS        float64 `json:"rss_mib"`
	HeapInuse  float64 `json:"heap_inuse_mib"`
	Goroutines int     `json:"goroutines"`
	OpenFDs    int     `json:"open_fds"`
	Sessions   int     `json:"sessions"`
}

// serverTrend summarises the samples: least-squares slopes per minute over
// the samples after the first quarter of the run (the warm-up, while the
// load ramps up and the runtime sizes its heap). RSS and the heap in use
// also count garbage not yet collected (each argon2id login leaves 19 MiB
// of it), so they are noisy; their floors, the smallest value of each whole
// minute (the heap's is close to the live heap just after a collection),
// show what the server keeps.
type serverTrend struct {
	Samples         []serverSample `json:"samples"`
	RSSSlope        float64        `json:"rss_slope_mib_per_min"`
	HeapSlope       float64        `json:"heap_slope_mib_per_min"`
	RSSFloor        []float64      `json:"rss_floor_mib"` // per minute
	RSSFloorSlope   float64        `json:"rss_floor_slope_mib_per_min"`
	HeapFloor       []float64      `json:"heap_floor_mib"` // per minute
	HeapFloorSlope  float64        `json:"heap_floor_slope_mib_per_min"`
	GoroutinesSlope float64        `json:"goroutines_slope_per_min"`
	FDsSlope        float64        `json:"open_fds_slope_per_min"`
	Errors          int            `json:"errors,omitempty"` // samples that could not be read
}

// watch samples the first server's /metrics every f.watch from start until
// stop.
func (l *loadRun) watch(ctx context.Context, start time.Time, stop <-chan struct{}, tr *serverTrend) {
	hc := cliHTTPClient()
	t := time.NewTicker(l.f.watch)
	defer t.Stop()
	sample := func() {
		s, err := readServerSample(ctx, hc, l.httpBases[0]+"/metrics")
		if err != nil {
			tr.Errors++
			return
		}
		s.T = round3(time.Since(start).Seconds())
		tr.Samples = append(tr.Samples, s)
	}
	sample()
	for {
		select {
		case <-t.C:
			sample()
		case <-stop:
			sample()
			tr.summarise()
			return
		case <-ctx.Done():
			tr.summarise()
			return
		}
	}
}

func readServerSample(ctx context.Context, hc *http.Client, url string) (serverSample, error) {
	v, err := readMetrics(ctx, hc, url)
	if err != nil {
		return serverSample{}, err
	}
	const mib = 1 << 20
	return serverSample{RSS: round3(v["process_resident_memory_bytes"] / mib), HeapInuse: round3(v["go_memstats_heap_inuse_bytes"] / mib),
		Goroutines: int(v["go_goroutines"]), OpenFDs: int(v["process_open_fds"]), Sessions: int(v["sigil_connections"])}, nil
}

// readMetrics reads a server's /metrics (url) into a map from each
// sample's name with its labels, as printed, to its value.
func readMetrics(ctx context.Context, hc *http.Client, url string) (map[string]float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: HTTP %d", resp.StatusCode)
	}
	v := map[string]float64{}
	sc := bufio.NewScanner(io.LimitReader(resp.Body, 4<<20))
	sc.Buffer(make([]byte, 64<<10), 64<<10)
	for sc.Scan() {
		name, val, ok := strings.Cut(sc.Text(), " ")
		if !ok || strings.HasPrefix(name, "#") {
			continue
		}
		if x, err := strconv.ParseFloat(strings.TrimSpace(val), 64); err == nil {
			v[name] = x
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if _, ok := v["process_resident_memory_bytes"]; !ok {
		return nil, fmt.Errorf("/metrics has no process_resident_memory_bytes")
	}
	return v, nil
}

func (tr *serverTrend) summarise() {
	s := tr.Samples[len(tr.Samples)/4:]
	trend := func(y func(serverSample) float64) float64 {
		xs, ys := make([]float64, len(s)), make([]float64, len(s))
		for i, p := range s {
			xs[i], ys[i] = p.T/60, y(p)
		}
		return slope(xs, ys)
	}
	tr.RSSSlope = trend(func(p serverSample) float64 { return p.RSS })
	tr.HeapSlope = trend(func(p serverSample) float64 { return p.HeapInuse })
	tr.GoroutinesSlope = trend(func(p serverSample) float64 { return float64(p.Goroutines) })
	tr.FDsSlope = trend(func(p serverSample) float64 { return float64(p.OpenFDs) })
	tr.RSSFloor, tr.RSSFloorSlope = tr.floor(func(p serverSample) float64 { return p.RSS })
	tr.HeapFloor, tr.HeapFloorSlope = tr.floor(func(p serverSample) float64 { return p.HeapInuse })
}

// floor returns the smallest y of each whole minute of samples and their
// slope after the first quarter.
func (tr *serverTrend) floor(y func(serverSample) float64) ([]float64, float64) {
	var fl, xs []float64
	for _, p := range tr.Samples {
		m := int(p.T / 60)
		for len(fl) <= m {
			fl = append(fl, -1)
			xs = append(xs, float64(len(xs)))
		}
		if f := fl[m]; f < 0 || y(p) < f {
			fl[m] = y(p)
		}
	}
	if n := len(tr.Samples); n > 0 && tr.Samples[n-1].T < 60*float64(len(fl)) {
		fl, xs = fl[:len(fl)-1], xs[:len(xs)-1] // a partial last minute
	}
	q := len(xs) / 4
	return fl, slope(xs[q:], fl[q:])
}

// slope is the least-squares slope of ys over xs (0 with fewer than two
// distinct xs).
func slope(xs, ys []float64) float64 {
	n := float64(len(xs))
	if len(xs) < 2 {
		return 0
	}
	var mx, my float64
	for i := range xs {
		mx += xs[i]
		my += ys[i]
	}
	mx /= n
	my /= n
	var sxy, sxx float64
	for i := range xs {
		sxy += (xs[i] - mx) * (ys[i] - my)
		sxx += (xs[i] - mx) * (xs[i] - mx)
	}
	if sxx == 0 {
		return 0
	}
	return round3(sxy / sxx)
}

func (tr *serverTrend) print(w io.Writer) {
	if len(tr.Samples) == 0 {
		fmt.Fprintf(w, "server         no /metrics samples (%d errors)\n", tr.Errors)
		return
	}
	first, last := tr.Samples[0], tr.Samples[len(tr.Samples)-1]
	maxRSS := 0.0
	for _, s := range tr.Samples {
		maxRSS = max(maxRSS, s.RSS)
	}
	fmt.Fprintf(w, "server         RSS %.1f → %.1f MiB (max %.1f), heap in use %.1f → %.1f MiB, goroutines %d → %d, open fds %d → %d; %d samples\n",
		first.RSS, last.RSS, maxRSS, first.HeapInuse, last.HeapInuse, first.Goroutines, last.Goroutines, first.OpenFDs, last.OpenFDs, len(tr.Samples))
	if len(tr.HeapFloor) < 2 {
		fmt.Fprintf(w, "server trend   (a run of at least two minutes shows trends)\n")
		return
	}
	fmt.Fprintf(w, "server trend   per minute after the first quarter: RSS %+.3f MiB, heap %+.3f MiB, goroutines %+.2f, open fds %+.2f\n",
		tr.RSSSlope, tr.HeapSlope, tr.GoroutinesSlope, tr.FDsSlope)
	fmt.Fprintf(w, "server floor   smallest of each minute: RSS %.1f → %.1f MiB (%+.3f MiB/min), heap %.1f → %.1f MiB (%+.3f MiB/min)\n",
		tr.RSSFloor[0], tr.RSSFloor[len(tr.RSSFloor)-1], tr.RSSFloorSlope, tr.HeapFloor[0], tr.HeapFloor[len(tr.HeapFloor)-1], tr.HeapFloorSlope)
}
