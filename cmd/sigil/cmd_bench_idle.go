package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The idle rows of sigil bench (5 and 6): the RSS per idle authenticated
// session and the CPU of idle sessions, each measured on sigil serve and,
// with as many connections, on a plain gorilla server with the same
// keepalive (sigil bench --idle-baseline, started by the bench on the
// server's core). The baseline is the floor of the design sigil serve
// shares with it, one reader goroutine per connection over Go's netpoller:
// what sigil costs beyond it is its session state and its own work.

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
// pings and measures the server; then as many connections on the plain
// gorilla server, measured the same way.
func (b *bench) idleSessions(ctx context.Context) (*idleResult, error) {
	var res idleResult
	var err error
	res.rssPerSession, res.cpuMsPerS, err = b.measureIdle(ctx, b.srvPID, "idle sessions", b.session)
	if err != nil {
		return nil, err
	}
	base, pid, err := b.start("", b.pin, idleReady, "bench", "--idle-baseline")
	if err != nil {
		return nil, err
	}
	url := "ws" + strings.TrimPrefix(base, "http") + "/idle"
	res.baseRSS, res.baseCPU, err = b.measureIdle(ctx, pid, "plain gorilla connections", func(ctx context.Context) (*benchSession, error) {
		ws, _, err := idleDialer.DialContext(ctx, url, nil)
		return &benchSession{ws: ws}, err
	})
	if err != nil {
		return nil, err
	}
	b.say("idle: sigil %.1f KiB and %.2f ms/s; plain gorilla %.1f KiB and %.2f ms/s",
		res.rssPerSession/1024, res.cpuMsPerS, res.baseRSS/1024, res.baseCPU)
	return &res, nil
}

var idleDialer = websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}

// measureIdle opens --idle connections to the process pid with open, lets
// each answer the server's pings, and returns the process's RSS growth
// per connection and its CPU while they idle (ms per second). The RSS is
// read at the end of the idle window, when the connections have been idle
// a while and most have answered a ping; the figure 3 s after the last one
// opened is in the progress output beside it.
func (b *bench) measureIdle(ctx context.Context, pid int, what string, open func(context.Context) (*benchSession, error)) (rss, cpu float64, err error) {
	time.Sleep(time.Second) // let the process settle after what ran before
	before, err := procRSS(pid)
	if err != nil {
		return 0, 0, err
	}
	ss, err := b.openAll(ctx, b.f.idle, what, open)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		for _, s := range ss {
			s.ws.Close()
		}
	}()
	for _, s := range ss {
		go func() {
			for {
				if _, _, err := s.ws.NextReader(); err != nil {
					return
				}
			}
		}()
	}
	time.Sleep(3 * time.Second) // let the process's garbage collector run
	early, err := procRSS(pid)
	if err != nil {
		return 0, 0, err
	}
	b.say("idle: %d %s, %.1f KiB each 3 s after opening; measuring CPU for %v", b.f.idle, what, (early-before)/1024/float64(b.f.idle), b.f.idleFor)
	c0, err := procCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	t0 := time.Now()
	select {
	case <-ctx.Done():
		return 0, 0, ctx.Err()
	case <-time.After(b.f.idleFor):
	}
	c1, err := procCPU(pid)
	if err != nil {
		return 0, 0, err
	}
	cpu = float64((c1 - c0).Nanoseconds()) / 1e6 / time.Since(t0).Seconds()
	after, err := procRSS(pid)
	if err != nil {
		return 0, 0, err
	}
	return (after - before) / float64(b.f.idle), cpu, nil
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
