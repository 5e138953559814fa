package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"math/bits"
	mrand "math/rand/v2"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/sigil-ws/sigil/client"
	"github.com/sigil-ws/sigil/protocol"
)

// loadDialConcurrency bounds the logins in flight while the load tool
// connects: every client is a password grant, and the server hashes the
// password (argon2id by default) for each one.
const loadDialConcurrency = 8

type loadFlags struct {
	server, users, passwordFile, alg, channel string
	insecure, encrypt, asJSON, stats          bool
	conns, subs, size, count                  int
	rate, churn                               float64
	duration, drain, watch                    time.Duration
}

// runLoad implements "sigil load": N publisher clients and M subscriber
// clients on one channel, each a real client.Dial with its own session key.
// Publishers publish bodies that carry their send time; subscribers measure
// the end-to-end latency (receive time − send time, both read from this
// process's monotonic clock) and count the deliveries. It prints a summary,
// or one JSON object with --json.
func runLoad(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	var f loadFlags
	fs := flag.NewFlagSet("load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.server, "server", os.Getenv("SIGIL_SERVER"), "server URL (wss://host/v1/ws or https://host), or comma-separated URLs of the nodes of a cluster, which client i connects to in turn (i mod n); env SIGIL_SERVER")
	fs.StringVar(&f.users, "user", "", "user name, or comma-separated names the clients rotate through")
	fs.StringVar(&f.passwordFile, "password-file", "", "file with the password: one line for every user, or one line per user in --user order (default: stdin)")
	fs.StringVar(&f.alg, "alg", "EdDSA", "session key algorithm: EdDSA or ES256")
	fs.BoolVar(&f.insecure, "insecure-plaintext", false, "allow ws:// or http:// to a non-loopback host")
	fs.IntVar(&f.conns, "conns", 4, "publisher clients (connections)")
	fs.IntVar(&f.subs, "subs", 4, "subscriber clients (connections)")
	fs.StringVar(&f.channel, "channel", "rooms.load", "channel to publish to and subscribe to")
	fs.Float64Var(&f.rate, "rate", 0, "publishes per second per publisher (0: as fast as acknowledgements allow)")
	fs.DurationVar(&f.duration, "duration", 10*time.Second, "how long to publish")
	fs.IntVar(&f.count, "count", 0, "publishes per publisher (0: no limit); the run ends when every publisher is done or --duration has passed")
	fs.IntVar(&f.size, "size", 256, "JSON body size in bytes (at least the timestamp record, about 70 bytes)")
	fs.BoolVar(&f.encrypt, "encrypt", false, "body encryption (spec.md §11); publishers then subscribe too, for the channel key")
	fs.BoolVar(&f.asJSON, "json", false, "print the summary as one JSON object")
	fs.BoolVar(&f.stats, "stats", false, "read every server's /metrics before the first publish and after the drain, and report their CPU time and Redis round trips per publish")
	fs.DurationVar(&f.drain, "drain", 5*time.Second, "after publishing, how long to wait for outstanding deliveries")
	fs.Float64Var(&f.churn, "churn", 0, "soak: short sessions per second during the run, each a new login, a connection, 3 pings and a close")
	fs.DurationVar(&f.watch, "watch", 0, "soak: sample the (first) server's /metrics this often and report its memory, goroutine and fd trends (0: off)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	users := splitList(f.users)
	switch {
	case f.server == "" || len(users) == 0 || fs.NArg() != 0:
		return errors.New("usage: sigil load --server URL --user NAME[,NAME...] [flags]   (passwords on stdin or --password-file)")
	case f.conns < 1 || f.subs < 0:
		return errors.New("--conns must be at least 1 and --subs at least 0")
	case f.rate < 0 || math.IsNaN(f.rate) || math.IsInf(f.rate, 0):
		return errors.New("--rate must be a number ≥ 0")
	case f.churn < 0 || math.IsNaN(f.churn) || math.IsInf(f.churn, 0) || f.watch < 0:
		return errors.New("--churn and --watch must not be negative")
	case f.duration <= 0 || f.drain < 0 || f.count < 0 || f.size < 0:
		return errors.New("--duration must be positive; --drain, --count and --size not negative")
	case !protocol.ValidChannel(f.channel):
		return fmt.Errorf("--channel %q is not a valid channel name", f.channel)
	}
	var alg jose.SignatureAlgorithm
	switch f.alg {
	case "EdDSA":
		alg = protocol.EdDSA
	case "ES256":
		alg = protocol.ES256
	default:
		return fmt.Errorf("--alg %q: want EdDSA or ES256", f.alg)
	}
	var wsURLs, httpBases []string
	for _, srv := range splitList(f.server) {
		wsURL, base, err := clientEndpoints(srv, f.insecure)
		if err != nil {
			return err
		}
		wsURLs, httpBases = append(wsURLs, wsURL), append(httpBases, base)
	}
	passwords, err := readLoadPasswords(f.passwordFile, stdin, len(users))
	if err != nil {
		return err
	}

	ctx, stop := signal.NotifyContext(ctx, os.Interrupt)
	defer stop()
	l := &loadRun{f: f, base: time.Now(), disconnects: map[string]int{},
		wsURLs: wsURLs, httpBases: httpBases, alg: alg, users: users, passwords: passwords}
	l.runID = newRunID()
	defer l.closeAll()
	if err := l.dialAll(ctx, alg, users, passwords); err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted while connecting")
		}
		return err
	}
	rep, err := l.run(ctx)
	if err != nil {
		return err
	}
	stop() // a second interrupt now kills the process
	if f.asJSON {
		enc := json.NewEncoder(stdout)
		return enc.Encode(rep)
	}
	rep.print(stdout)
	return nil
}

// readLoadPasswords reads one password line for every user or one per user.
func readLoadPasswords(path string, stdin io.Reader, users int) ([]string, error) {
	src, name := stdin, "stdin"
	if path != "" {
		fh, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer fh.Close()
		src, name = fh, path
	}
	if src == nil {
		return nil, errors.New("no password: give --password-file or the password on stdin")
	}
	var lines []string
	sc := bufio.NewScanner(src)
	for sc.Scan() {
		lines = append(lines, strings.TrimRight(sc.Text(), "\r"))
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("reading passwords from %s: %w", name, err)
	}
	for len(lines) > 0 && lines[len(lines)-1] == "" {
		lines = lines[:len(lines)-1]
	}
	switch {
	case len(lines) == 1:
		pws := make([]string, users)
		for i := range pws {
			pws[i] = lines[0]
		}
		return pws, nil
	case len(lines) == users:
		return lines, nil
	}
	return nil, fmt.Errorf("%s: %d password lines for %d users: give one for all or one per user", name, len(lines), users)
}

func newRunID() string {
	var b [8]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// loadBody is what publishers send; T is the send time in nanoseconds
// since loadRun.base, on this process's monotonic clock.
type loadBody struct {
	Run string `json:"run"`
	P   int    `json:"p"`
	K   int    `json:"k"`
	T   int64  `json:"t"`
	Pad string `json:"pad,omitempty"`
}

// appendLoadBody appends the JSON body, padded to size bytes if it is
// shorter.
func appendLoadBody(b []byte, run string, p, k int, t int64, size int) []byte {
	b = append(b, `{"run":"`...)
	b = append(b, run...)
	b = append(b, `","p":`...)
	b = strconv.AppendInt(b, int64(p), 10)
	b = append(b, `,"k":`...)
	b = strconv.AppendInt(b, int64(k), 10)
	b = append(b, `,"t":`...)
	b = strconv.AppendInt(b, t, 10)
	if pad := size - len(b) - len(`,"pad":""}`); pad >= 0 {
		b = append(b, `,"pad":"`...)
		for range pad {
			b = append(b, 'x')
		}
		b = append(b, '"')
	}
	return append(b, '}')
}

type loadClient struct {
	c    *client.Client
	user string
}

type loadRun struct {
	f     loadFlags
	base  time.Time // the clock origin of the timestamps in bodies
	runID string

	wsURLs           []string // client i connects to wsURLs[i mod n]
	httpBases        []string // the same servers' HTTP bases
	alg              jose.SignatureAlgorithm
	users, passwords []string

	pubs, subs []*loadClient
	all        []*loadClient
	closeOnce  sync.Once

	published atomic.Int64 // acknowledged publishes
	delivered atomic.Int64 // deliveries of this run's messages
	lastRecv  atomic.Int64 // ns since base of the last delivery

	mu          sync.Mutex
	disconnects map[string]int // by close code, from OnStateChange
}

// dialAll connects the publishers and the subscribers, a few at a time.
func (l *loadRun) dialAll(ctx context.Context, alg jose.SignatureAlgorithm, users, passwords []string) error {
	n := l.f.conns + l.f.subs
	clients := make([]*loadClient, n)
	errs := make([]error, n)
	sem := make(chan struct{}, loadDialConcurrency)
	var wg sync.WaitGroup
	for i := range n {
		u := i % len(users)
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			if ctx.Err() != nil {
				errs[i] = ctx.Err()
				return
			}
			dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			c, err := client.Dial(dctx, l.wsURLs[i%len(l.wsURLs)], &client.Options{
				Tokens:                 client.Password(users[u], passwords[u]),
				Algorithm:              alg,
				Encrypt:                l.f.encrypt,
				HTTPClient:             cliHTTPClient(),
				InsecureAllowPlaintext: l.f.insecure,
				// Subscribers only count and timestamp: a deep buffer keeps
				// a scheduling hiccup from ending a subscription.
				SubscriptionBuffer: 1 << 16,
				OnStateChange:      l.onStateChange,
			})
			if err != nil {
				errs[i] = fmt.Errorf("connecting client %d as %s: %w", i+1, users[u], err)
				return
			}
			clients[i] = &loadClient{c: c, user: users[u]}
		}()
	}
	wg.Wait()
	for _, lc := range clients {
		if lc != nil {
			l.all = append(l.all, lc)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	l.pubs, l.subs = clients[:l.f.conns], clients[l.f.conns:]
	return nil
}

func (l *loadRun) onStateChange(s client.State, err error) {
	if s != client.StateReconnecting && s != client.StateClosed {
		return
	}
	var ce *client.CloseError
	if !errors.As(err, &ce) {
		return // a Close of ours, or a network failure without a code
	}
	l.mu.Lock()
	l.disconnects[strconv.Itoa(int(ce.Code))]++
	l.mu.Unlock()
}

func (l *loadRun) closeAll() {
	l.closeOnce.Do(func() {
		var wg sync.WaitGroup
		for _, lc := range l.all {
			wg.Add(1)
			go func() { defer wg.Done(); lc.c.Close() }()
		}
		wg.Wait()
	})
}

type pubResult struct {
	ok, aborted int64
	errs        map[string]int
	ack         *histogram
}

type subResult struct {
	lat     *histogram
	foreign int64
	err     error // why the subscription ended early
}

// run subscribes, publishes for the duration (or count), waits for the
// outstanding deliveries and returns the report.
func (l *loadRun) run(ctx context.Context) (*loadReport, error) {
	f := l.f
	// Bodies are padded to --size; a smaller --size gets the bare record.
	size := max(f.size, len(appendLoadBody(nil, l.runID, f.conns-1, 0, int64(f.duration), 0)))
	rep := &loadReport{Publishers: f.conns, Subscribers: f.subs, Channel: f.channel, RatePerPublisher: f.rate,
		Size: size, Encrypt: f.encrypt, PublishErrors: map[string]int{}, SubscriptionErrors: map[string]int{}}

	// Subscribe everyone before anyone publishes.
	subs := make([]*client.Subscription, len(l.subs))
	var extra []*client.Subscription // publishers' (with --encrypt, for the channel key)
	for i, lc := range l.subs {
		s, err := lc.c.Subscribe(ctx, f.channel)
		if err != nil {
			return nil, fmt.Errorf("subscriber %d (%s): %w", i+1, lc.user, err)
		}
		subs[i] = s
	}
	if f.encrypt {
		for i, lc := range l.pubs {
			s, err := lc.c.Subscribe(ctx, f.channel)
			if err != nil {
				return nil, fmt.Errorf("publisher %d (%s): subscribing for the channel key: %w", i+1, lc.user, err)
			}
			extra = append(extra, s)
		}
	}
	stopSubs := make(chan struct{})
	var swg sync.WaitGroup
	sres := make([]subResult, len(subs))
	for i, s := range subs {
		sres[i].lat = newHistogram()
		swg.Add(1)
		go func() { defer swg.Done(); l.subscriber(s, &sres[i], stopSubs) }()
	}
	for _, s := range extra {
		swg.Add(1)
		go func() {
			defer swg.Done()
			for {
				select {
				case _, ok := <-s.C():
					if !ok {
						return
					}
				case <-stopSubs:
					return
				}
			}
		}()
	}

	var statsBefore []map[string]float64
	if f.stats {
		var err error
		if statsBefore, err = l.sampleStats(ctx); err != nil {
			return nil, err
		}
	}
	start := time.Now()
	end := start.Add(f.duration)
	stopWatch, watched := make(chan struct{}), make(chan struct{})
	if f.watch > 0 {
		rep.Server = &serverTrend{}
		go func() { defer close(watched); l.watch(ctx, start, stopWatch, rep.Server) }()
	} else {
		close(watched)
	}
	var cwg sync.WaitGroup
	if f.churn > 0 {
		rep.Churn = &churnReport{Rate: f.churn, Errors: map[string]int{}}
		cwg.Add(1)
		go func() { defer cwg.Done(); l.churn(ctx, end, rep.Churn) }()
	}
	pres := make([]pubResult, len(l.pubs))
	var pwg sync.WaitGroup
	for i, lc := range l.pubs {
		pres[i] = pubResult{errs: map[string]int{}, ack: newHistogram()}
		pwg.Add(1)
		go func() { defer pwg.Done(); l.publisher(ctx, lc.c, i, end, &pres[i]) }()
	}
	pwg.Wait()
	cwg.Wait()
	pubEnd := time.Now()
	close(stopWatch)
	<-watched

	// Wait for the deliveries of acknowledged publishes still in flight.
	drain := f.drain
	if ctx.Err() != nil {
		rep.Interrupted = true
		drain = min(drain, time.Second)
	}
	want := l.published.Load() * int64(len(subs))
	for deadline := time.Now().Add(drain); l.delivered.Load() < want && time.Now().Before(deadline); {
		time.Sleep(5 * time.Millisecond)
	}
	close(stopSubs)
	swg.Wait()
	if f.stats {
		after, err := l.sampleStats(context.WithoutCancel(ctx))
		if err != nil {
			return nil, err
		}
		rep.Stats = l.diffStats(statsBefore, after, l.published.Load())
	}
	for _, lc := range l.all {
		st := lc.c.Stats()
		rep.Reconnects += st.Reconnects
		rep.RejectedFrames += st.Rejected
	}
	l.closeAll()

	// Merge.
	ack, lat := newHistogram(), newHistogram()
	for _, p := range pres {
		rep.Publishes += p.ok
		rep.Aborted += p.aborted
		for k, v := range p.errs {
			rep.PublishErrors[k] += v
			rep.PublishErrorsTotal += int64(v)
		}
		ack.merge(p.ack)
	}
	for _, s := range sres {
		lat.merge(s.lat)
		rep.Foreign += s.foreign
		if s.err != nil {
			rep.SubscriptionErrors[errorKey(s.err)]++
		}
	}
	l.mu.Lock()
	if len(l.disconnects) > 0 {
		rep.Disconnects = l.disconnects
	}
	l.mu.Unlock()
	rep.Deliveries = int64(lat.n)
	rep.ExpectedDeliveries = rep.Publishes * int64(len(subs))
	rep.Loss = rep.ExpectedDeliveries - rep.Deliveries
	if rep.ExpectedDeliveries > 0 {
		rep.LossRatio = float64(rep.Loss) / float64(rep.ExpectedDeliveries)
	}
	pubSecs := pubEnd.Sub(start).Seconds()
	rep.DurationS = round3(pubSecs)
	if pubSecs > 0 {
		rep.PublishesPerS = round3(float64(rep.Publishes) / pubSecs)
	}
	if last := time.Duration(l.lastRecv.Load()); rep.Deliveries > 0 && last > start.Sub(l.base) {
		rep.DeliveriesPerS = round3(float64(rep.Deliveries) / (last - start.Sub(l.base)).Seconds())
	}
	rep.Latency = lat.summary()
	rep.AckLatency = ack.summary()
	return rep, nil
}

// publisher publishes until end, its count, or ctx. Publish waits for the
// server's acknowledgement, so each publisher has one publish in flight; a
// publish in flight at end is completed, not canceled, so that its
// deliveries are expected.
func (l *loadRun) publisher(ctx context.Context, c *client.Client, id int, end time.Time, r *pubResult) {
	f := l.f
	var interval time.Duration
	next := time.Now()
	if f.rate > 0 {
		interval = time.Duration(float64(time.Second) / f.rate)
		next = next.Add(mrand.N(interval + 1)) // spread the publishers over the interval
	}
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var buf []byte
	for k := 0; f.count == 0 || k < f.count; k++ {
		if interval > 0 {
			if !next.Before(end) {
				return
			}
			if d := time.Until(next); d > 0 {
				timer.Reset(d)
				select {
				case <-timer.C:
				case <-ctx.Done():
					return
				}
			}
			next = next.Add(interval)
		}
		if ctx.Err() != nil || !time.Now().Before(end) {
			return
		}
		sent := time.Now()
		buf = appendLoadBody(buf[:0], l.runID, id, k, int64(sent.Sub(l.base)), f.size)
		err := c.Publish(ctx, f.channel, json.RawMessage(buf))
		switch {
		case err == nil:
			r.ok++
			l.published.Add(1)
			r.ack.record(time.Since(sent))
		case ctx.Err() != nil:
			r.aborted++ // interrupted: the server may or may not have it
			return
		default:
			r.errs[errorKey(err)]++
			select {
			case <-c.Done():
				return // closed for good: every further publish fails the same way
			default:
			}
		}
	}
}

// subscriber records the latency of every delivery of this run until stop.
func (l *loadRun) subscriber(s *client.Subscription, r *subResult, stop <-chan struct{}) {
	var b loadBody
	for {
		select {
		case m, ok := <-s.C():
			if !ok {
				r.err = s.Err()
				return
			}
			now := time.Since(l.base)
			b = loadBody{}
			if m.Body == nil || json.Unmarshal(m.Body, &b) != nil || b.Run != l.runID {
				r.foreign++
				continue
			}
			r.lat.record(now - time.Duration(b.T))
			l.delivered.Add(1)
			for {
				last := l.lastRecv.Load()
				if int64(now) <= last || l.lastRecv.CompareAndSwap(last, int64(now)) {
					break
				}
			}
		case <-stop:
			return
		}
	}
}

// errorKey names an error for the summary: its protocol code if it has
// one, otherwise the client's sentinel or a short description.
func errorKey(err error) string {
	if code := protocol.CodeOf(err); code != "" {
		return string(code)
	}
	var ce *client.CloseError
	switch {
	case errors.As(err, &ce):
		return "closed_" + strconv.Itoa(int(ce.Code))
	case errors.Is(err, client.ErrConnectionLost):
		return "connection_lost"
	case errors.Is(err, client.ErrNotAccepted):
		return "not_accepted"
	case errors.Is(err, client.ErrSlowConsumer):
		return "slow_consumer"
	case errors.Is(err, client.ErrNoChannelKey):
		return "no_channel_key"
	case errors.Is(err, client.ErrClosed):
		return "client_closed"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	}
	s := err.Error()
	if len(s) > 60 {
		s = s[:60]
	}
	return s
}

// loadReport is the summary; with --json it is printed as it is.
type loadReport struct {
	Publishers         int            `json:"publishers"`
	Subscribers        int            `json:"subscribers"`
	Channel            string         `json:"channel"`
	RatePerPublisher   float64        `json:"rate_per_publisher"` // 0: as fast as possible
	Size               int            `json:"size"`               // body bytes
	Encrypt            bool           `json:"encrypt"`
	DurationS          float64        `json:"duration_s"` // publishing phase
	Publishes          int64          `json:"publishes"`  // acknowledged by the server
	PublishErrors      map[string]int `json:"publish_errors"`
	PublishErrorsTotal int64          `json:"publish_errors_total"`
	Aborted            int64          `json:"aborted,omitempty"` // in flight when interrupted
	Deliveries         int64          `json:"deliveries"`
	ExpectedDeliveries int64          `json:"expected_deliveries"` // publishes × subscribers
	Loss               int64          `json:"loss"`
	LossRatio          float64        `json:"loss_ratio"`
	PublishesPerS      float64        `json:"publishes_per_s"`
	DeliveriesPerS     float64        `json:"deliveries_per_s"`
	Latency            latencySummary `json:"latency_ms"`     // publish call → delivery to a subscriber
	AckLatency         latencySummary `json:"ack_latency_ms"` // publish call → server's acknowledgement
	Reconnects         uint64         `json:"reconnects"`
	Disconnects        map[string]int `json:"disconnects,omitempty"` // by close code
	RejectedFrames     uint64         `json:"rejected_frames"`
	SubscriptionErrors map[string]int `json:"subscription_errors"`
	Foreign            int64          `json:"foreign,omitempty"` // other messages on the channel, not counted
	Interrupted        bool           `json:"interrupted,omitempty"`
	Churn              *churnReport   `json:"churn,omitempty"`  // --churn
	Server             *serverTrend   `json:"server,omitempty"` // --watch
	Stats              *loadStats     `json:"stats,omitempty"`  // --stats
}

type latencySummary struct {
	N    uint64  `json:"n"`
	Min  float64 `json:"min"`
	Mean float64 `json:"mean"`
	P50  float64 `json:"p50"`
	P90  float64 `json:"p90"`
	P99  float64 `json:"p99"`
	Max  float64 `json:"max"`
}

func (r *loadReport) print(w io.Writer) {
	rate := "as fast as acknowledged"
	if r.RatePerPublisher > 0 {
		rate = strconv.FormatFloat(r.RatePerPublisher, 'g', -1, 64) + "/s per publisher"
	}
	enc := "off"
	if r.Encrypt {
		enc = "on"
	}
	fmt.Fprintf(w, "sigil load: %d publishers, %d subscribers, channel %s, rate %s, body %d B, encryption %s\n",
		r.Publishers, r.Subscribers, r.Channel, rate, r.Size, enc)
	if r.Interrupted {
		fmt.Fprintf(w, "interrupted (%d publishes in flight not counted)\n", r.Aborted)
	}
	fmt.Fprintf(w, "publishing     %.2f s\n", r.DurationS)
	target := ""
	if r.RatePerPublisher > 0 {
		target = fmt.Sprintf(" (target %.1f/s)", r.RatePerPublisher*float64(r.Publishers))
	}
	fmt.Fprintf(w, "publishes      %d acknowledged, %.1f/s%s\n", r.Publishes, r.PublishesPerS, target)
	fmt.Fprintf(w, "publish errors %d%s\n", r.PublishErrorsTotal, countsString(r.PublishErrors))
	fmt.Fprintf(w, "deliveries     %d of %d expected (publishes × subscribers), %.1f/s\n", r.Deliveries, r.ExpectedDeliveries, r.DeliveriesPerS)
	fmt.Fprintf(w, "loss           %d (%.4f%%)\n", r.Loss, 100*r.LossRatio)
	fmt.Fprintf(w, "latency        %s   (publish → delivery)\n", r.Latency)
	fmt.Fprintf(w, "ack latency    %s   (publish → acknowledgement)\n", r.AckLatency)
	fmt.Fprintf(w, "reconnects     %d%s; rejected server frames %d\n", r.Reconnects, countsString(r.Disconnects), r.RejectedFrames)
	if len(r.SubscriptionErrors) > 0 {
		fmt.Fprintf(w, "subscriptions ended early:%s\n", countsString(r.SubscriptionErrors))
	}
	if r.Foreign > 0 {
		fmt.Fprintf(w, "foreign        %d messages of other publishers on the channel, not counted\n", r.Foreign)
	}
	if r.Churn != nil {
		fmt.Fprintf(w, "churn          %d short sessions at %g/s asked, %d skipped (all %d slots busy)%s\n",
			r.Churn.Sessions, r.Churn.Rate, r.Churn.Skipped, churnConcurrency, countsString(r.Churn.Errors))
	}
	if r.Server != nil {
		r.Server.print(w)
	}
	if r.Stats != nil {
		r.Stats.print(w)
	}
}

func (s latencySummary) String() string {
	if s.N == 0 {
		return "no samples"
	}
	return fmt.Sprintf("p50 %.3f ms  p90 %.3f ms  p99 %.3f ms  max %.3f ms  (min %.3f, mean %.3f, n %d)",
		s.P50, s.P90, s.P99, s.Max, s.Min, s.Mean, s.N)
}

func countsString(m map[string]int) string {
	if len(m) == 0 {
		return ""
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(" (")
	for i, k := range keys {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s: %d", k, m[k])
	}
	b.WriteString(")")
	return b.String()
}

func round3(x float64) float64 { return math.Round(x*1000) / 1000 }

// histogram records durations in log-linear buckets (like HDR histograms):
// exact below 128 ns, then 64 buckets per power of two, so a percentile is
// reported with at most 1/64 (1.6%) relative error, in fixed memory
// (about 30 KB) whatever the number of samples. Not safe for concurrent
// use: each goroutine has its own, merged at the end.
type histogram struct {
	counts   [histBuckets]uint64
	n        uint64
	sum      float64 // ns
	min, max int64   // ns
}

const (
	histLinear  = 128 // exact buckets 0..127 ns
	histSub     = 64  // buckets per power of two above
	histBuckets = histLinear + 56*histSub
)

func newHistogram() *histogram { return &histogram{min: math.MaxInt64} }

func histBucket(v int64) int {
	if v < histLinear {
		return int(max(v, 0))
	}
	u := uint64(v)
	shift := bits.Len64(u) - 7 // ≥ 1: u ≥ 128
	return histLinear + (shift-1)*histSub + int(u>>shift) - histSub
}

// histUpper is the largest value of bucket i.
func histUpper(i int) int64 {
	if i < histLinear {
		return int64(i)
	}
	j := i - histLinear
	shift := j/histSub + 1
	top := uint64(j%histSub + histSub)
	return int64((top+1)<<shift - 1)
}

func (h *histogram) record(d time.Duration) {
	v := max(int64(d), 0)
	h.counts[histBucket(v)]++
	h.n++
	h.sum += float64(v)
	h.min = min(h.min, v)
	h.max = max(h.max, v)
}

func (h *histogram) merge(o *histogram) {
	for i, c := range o.counts {
		h.counts[i] += c
	}
	h.n += o.n
	h.sum += o.sum
	h.min = min(h.min, o.min)
	h.max = max(h.max, o.max)
}

// quantile returns the upper bound of the bucket holding the q-quantile,
// clamped to the recorded range.
func (h *histogram) quantile(q float64) int64 {
	if h.n == 0 {
		return 0
	}
	rank := uint64(math.Ceil(q * float64(h.n)))
	rank = min(max(rank, 1), h.n)
	var seen uint64
	for i, c := range h.counts {
		seen += c
		if seen >= rank {
			return min(max(histUpper(i), h.min), h.max)
		}
	}
	return h.max
}

func (h *histogram) summary() latencySummary {
	if h.n == 0 {
		return latencySummary{}
	}
	ms := func(ns int64) float64 { return round3(float64(ns) / 1e6) }
	return latencySummary{N: h.n, Min: ms(h.min), Mean: round3(h.sum / float64(h.n) / 1e6),
		P50: ms(h.quantile(0.50)), P90: ms(h.quantile(0.90)), P99: ms(h.quantile(0.99)), Max: ms(h.max)}
}
