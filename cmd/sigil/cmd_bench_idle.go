package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The idle rows of sigil bench (5 and 6): the RSS per idle authenticated
// session and the CPU of idle sessions, each measured on sigil serve and,
// with as many connections, on a plain gorilla server with the same
// keepalive (sigil bench --idle-baseline, started by the bench on the
// server's core), in the same window (idleSessions). The baseline is the
// floor of the design sigil serve shares with it, one reader goroutine per
// connection over Go's netpoller: what sigil costs beyond it is its
// session state and its own work.

type idleResult struct {
	rssPerSession, cpuMsPerS float64 // sigil serve
	baseRSS, baseCPU         float64 // the plain gorilla server, per connection and in all
}

// addIdle adds the idle rows (5 and 6) for n sessions, each with its
// ratio to the plain gorilla server when that measured above zero.
func (r *benchReport) addIdle(n int, idle *idleResult) {
	ratio := func(v, base float64, of string) (float64, string) {
		if base <= 0 || v <= 0 {
			return 0, ""
		}
		return v / base, of
	}
	q, of := ratio(idle.rssPerSession, idle.baseRSS, "plain gorilla idle connection")
	r.add(fmt.Sprintf("RSS per idle authenticated session at %d sessions", n), idle.rssPerSession/1024, "KiB", q, of, "≤ 8 KiB")
	q, of = ratio(idle.cpuMsPerS, idle.baseCPU, "plain gorilla, same pings")
	r.add(fmt.Sprintf("idle CPU for %d sessions", n), idle.cpuMsPerS, "ms/s", q, of, "≤ 5 ms/s")
}

// idleSessions opens --idle sessions on sigil serve that then only answer
// pings, waits for the server's one-time return of the burst's memory
// (memorySettled), then has a holder process (sigil bench --idle-hold, on
// the load generator's CPUs) open as many connections on the plain
// gorilla server, and measures both servers' CPU over the same window:
// the machine's speed moves by a fifth between windows a minute apart,
// which measuring one after the other put in the ratio. (The holder is a
// process of its own because one process here may hold no more than
// 20,000 files.) RSS is read at the end of the window.
func (b *bench) idleSessions(ctx context.Context) (*idleResult, error) {
	returns, err := b.memoryReturns(ctx)
	if err != nil {
		return nil, err
	}
	sg, err := b.openIdle(ctx, b.srvPID, "idle sessions", b.session)
	if err != nil {
		return nil, err
	}
	defer sg.close()
	if err := b.memorySettled(ctx, returns); err != nil {
		return nil, err
	}
	base, pid, err := b.start("", b.pin, idleReady, "bench", "--idle-baseline")
	if err != nil {
		return nil, err
	}
	defer b.stopProc(pid) // its pings must not run beside the rows after
	gr := &idleSet{pid: pid, n: b.f.idle}
	time.Sleep(time.Second) // let the process settle after starting
	if gr.before, err = procRSS(pid); err != nil {
		return nil, err
	}
	b.say("idle: a holder process opens %d plain gorilla connections", b.f.idle)
	url := "ws" + strings.TrimPrefix(base, "http") + "/idle"
	_, holder, err := b.start("", "", holdReady, "bench", "--idle-hold", url, "--idle", strconv.Itoa(b.f.idle))
	if err != nil {
		return nil, err
	}
	defer b.stopProc(holder)
	time.Sleep(3 * time.Second) // let the baseline's collector run
	if err := b.idleWindow(ctx, sg, gr); err != nil {
		return nil, err
	}
	var res idleResult
	if res.rssPerSession, res.cpuMsPerS, err = sg.measure(); err != nil {
		return nil, err
	}
	if res.baseRSS, res.baseCPU, err = gr.measure(); err != nil {
		return nil, err
	}
	b.say("idle: sigil %.1f KiB and %.2f ms/s; plain gorilla %.1f KiB and %.2f ms/s",
		res.rssPerSession/1024, res.cpuMsPerS, res.baseRSS/1024, res.baseCPU)
	return &res, nil
}

// runIdleHold (sigil bench --idle-hold URL --idle N) opens N WebSocket
// connections to URL, 8 at a time, answers their pings, and prints its
// ready line once all are open; it holds them until it is stopped.
func runIdleHold(stdout io.Writer, url string, n int) error {
	conns := make([]*websocket.Conn, n)
	errs := make([]error, 8)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := w; i < n && errs[w] == nil; i += 8 {
				conns[i], _, errs[w] = idleDialer.Dial(url, nil)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		return err
	}
	for _, ws := range conns {
		go func() {
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	fmt.Fprintf(stdout, "%s%s\n", holdReady, url)
	select {}
}

// idleWindow starts the window of each set and waits --idle-duration.
func (b *bench) idleWindow(ctx context.Context, sets ...*idleSet) error {
	b.say("idle: measuring CPU for %v", b.f.idleFor)
	for _, s := range sets {
		if err := s.mark(); err != nil {
			return err
		}
	}
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(b.f.idleFor):
		return nil
	}
}

var idleDialer = websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}

// idleSet is --idle connections to one process, each answering its pings,
// and what the idle rows measure of that process.
type idleSet struct {
	pid    int
	n      int // connections opened
	ss     []*benchSession
	before float64       // RSS before the connections opened
	cpu0   time.Duration // CPU at the start of the window
	t0     time.Time
}

// openIdle opens --idle connections to the process pid with open, each
// with a reader that answers the process's pings.
func (b *bench) openIdle(ctx context.Context, pid int, what string, open func(context.Context) (*benchSession, error)) (*idleSet, error) {
	time.Sleep(time.Second) // let the process settle after what ran before
	before, err := procRSS(pid)
	if err != nil {
		return nil, err
	}
	ss, err := b.openAll(ctx, b.f.idle, what, open)
	if err != nil {
		return nil, err
	}
	for _, s := range ss {
		go func() {
			for {
				if _, _, err := s.ws.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	return &idleSet{pid: pid, n: len(ss), ss: ss, before: before}, nil
}

// close closes the connections; a second call does nothing.
func (s *idleSet) close() {
	for _, c := range s.ss {
		c.ws.Close()
	}
	s.ss = s.ss[:0]
}

// mark starts the window.
func (s *idleSet) mark() (err error) {
	s.cpu0, err = procCPU(s.pid)
	s.t0 = time.Now()
	return err
}

// measure ends the window: the RSS growth per connection since before
// they opened, and the CPU in the window in ms per second.
func (s *idleSet) measure() (rss, cpu float64, err error) {
	c1, err := procCPU(s.pid)
	if err != nil {
		return 0, 0, err
	}
	cpu = float64((c1 - s.cpu0).Nanoseconds()) / 1e6 / time.Since(s.t0).Seconds()
	after, err := procRSS(s.pid)
	if err != nil {
		return 0, 0, err
	}
	return (after - s.before) / float64(s.n), cpu, nil
}

// memorySettled waits, for up to 10 s (it came after 2–4 s in every run
// at 10,000 sessions), until sigil serve has given back
// the memory of the burst of connections (server/memory.go): its
// sigil_idle_memory_returns_total has passed before, the count before
// the burst. That return is a collection and a madvise once per burst,
// about 0.1 s of CPU at 10,000 sessions; in the window it would be a
// third of the idle CPU of 35 s. The progress line gives its CPU.
func (b *bench) memorySettled(ctx context.Context, before float64) error {
	c0, err := procCPU(b.srvPID)
	if err != nil {
		return err
	}
	t0 := time.Now()
	for time.Since(t0) < 10*time.Second {
		n, err := b.memoryReturns(ctx)
		if err != nil {
			return err
		}
		if n > before {
			c1, err := procCPU(b.srvPID)
			if err != nil {
				return err
			}
			b.say("idle: the server gave back the burst's memory %.1f s after the last session opened (CPU since then %.0f ms)",
				time.Since(t0).Seconds(), float64((c1-c0).Microseconds())/1e3)
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
	b.say("idle: no memory return within 10 s of the last session (none due)")
	return nil
}

// memoryReturns reads sigil serve's sigil_idle_memory_returns_total.
func (b *bench) memoryReturns(ctx context.Context) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, b.base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	const name = "sigil_idle_memory_returns_total "
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), name); ok {
			return strconv.ParseFloat(strings.TrimSpace(v), 64)
		}
	}
	if err := sc.Err(); err != nil {
		return 0, err
	}
	return 0, fmt.Errorf("%s/metrics has no %s", b.base, strings.TrimSpace(name))
}

// Keepalive of the plain gorilla server: sigil serve's defaults.
const (
	idlePing = 30 * time.Second
	idlePong = 30 * time.Second
)

// runIdleBaseline serves /idle (sigil bench --idle-baseline): plain
// gorilla WebSocket connections kept alive as sigil serve keeps its
// sessions (a ping every 30 s, spread evenly over the interval; a
// connection silent for a ping interval and a pong timeout is closed),
// and nothing else, as cheaply as gorilla allows: one reader goroutine per
// connection, a 512-byte read buffer, pooled write buffers, and one pinger
// goroutine that writes each second's pings itself.
func runIdleBaseline(stdout io.Writer) error {
	up := websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 4096, WriteBufferPool: &sync.Pool{}}
	const slots = int(idlePing / time.Second)
	var (
		mu    sync.Mutex
		seq   int
		wheel [slots]map[*websocket.Conn]struct{}
	)
	for i := range wheel {
		wheel[i] = map[*websocket.Conn]struct{}{}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/idle", func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		live := func() error { return ws.SetReadDeadline(time.Now().Add(idlePing + idlePong)) }
		ws.SetPongHandler(func(string) error { return live() })
		_ = live()
		mu.Lock()
		slot := wheel[seq%slots]
		seq++
		slot[ws] = struct{}{}
		mu.Unlock()
		go func() {
			defer func() {
				mu.Lock()
				delete(slot, ws)
				mu.Unlock()
				_ = ws.Close()
			}()
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
			}
		}()
	})
	go func() {
		var due []*websocket.Conn
		for tick := 0; ; tick++ {
			time.Sleep(time.Second)
			mu.Lock()
			due = due[:0]
			for ws := range wheel[tick%slots] {
				due = append(due, ws)
			}
			mu.Unlock()
			for _, ws := range due {
				_ = ws.SetWriteDeadline(time.Now().Add(10 * time.Second))
				_ = ws.WriteMessage(websocket.PingMessage, nil)
			}
		}
	}()
	return serveHelper(stdout, idleReady, mux)
}
