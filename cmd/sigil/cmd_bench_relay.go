package main

import (
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// The baseline process of "sigil bench" (sigil bench --relay, started by
// the bench itself on the server's core): a plain gorilla relay, and the
// raw Ed25519 timings.
//
//   - /pub and /sub are WebSockets: every text message read on a /pub
//     connection is sent to every /sub connection as one PreparedMessage,
//     the cheapest fan-out gorilla has.
//   - POST /calibrate {"input": ..., "sig": ..., "pub": ..., "sign": ...}
//     times ed25519.Verify of sig over input and ed25519.Sign of a message
//     of the given size, on this process's core, and answers their ns/op.

type relay struct {
	mu   sync.Mutex
	subs map[*websocket.Conn]struct{}
}

var relayUpgrader = websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096, WriteBufferPool: &sync.Pool{}}

func runRelay(stdout io.Writer) error {
	r := &relay{subs: map[*websocket.Conn]struct{}{}}
	mux := http.NewServeMux()
	mux.HandleFunc("/sub", func(w http.ResponseWriter, req *http.Request) {
		ws, err := relayUpgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		r.mu.Lock()
		r.subs[ws] = struct{}{}
		r.mu.Unlock()
		go func() {
			defer func() {
				r.mu.Lock()
				delete(r.subs, ws)
				r.mu.Unlock()
				ws.Close()
			}()
			for {
				if _, _, err := ws.NextReader(); err != nil {
					return
				}
			}
		}()
	})
	mux.HandleFunc("/pub", func(w http.ResponseWriter, req *http.Request) {
		ws, err := relayUpgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		go func() {
			defer ws.Close()
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				pm, err := websocket.NewPreparedMessage(websocket.TextMessage, data)
				if err != nil {
					return
				}
				r.mu.Lock()
				for s := range r.subs {
					_ = s.SetWriteDeadline(time.Now().Add(10 * time.Second))
					_ = s.WritePreparedMessage(pm)
				}
				r.mu.Unlock()
			}
		}()
	})
	mux.HandleFunc("/calibrate", func(w http.ResponseWriter, req *http.Request) {
		var c calibration
		if err := json.NewDecoder(req.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.measure()
		_ = json.NewEncoder(w).Encode(c)
	})
	return serveHelper(stdout, relayReady, mux)
}

// The ready lines of the bench's helper processes: b.start waits for one.
const (
	relayReady = "RELAY_READY url="
	probeReady = "PROBE_READY url="
	idleReady  = "IDLE_READY url="
)

// serveHelper serves mux on a loopback port of its own and prints ready
// followed by its URL, the line the bench waits for (b.start).
func serveHelper(stdout io.Writer, ready string, mux http.Handler) error {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%shttp://%s\n", ready, ln.Addr())
	return http.Serve(ln, mux)
}

// calibration is a /calibrate request and its answer.
type calibration struct {
	Input    []byte        `json:"input"`     // a signing input of the size of the frames under test
	Sig      []byte        `json:"sig"`       // its Ed25519 signature
	Pub      []byte        `json:"pub"`       // the public key
	SignSize int           `json:"sign_size"` // the size of the signing input of a deliver frame
	For      time.Duration `json:"for"`       // how long to time each
	VerifyNs float64       `json:"verify_ns"` // answer: ed25519.Verify, ns/op
	SignNs   float64       `json:"sign_ns"`   // answer: ed25519.Sign, ns/op
}

// measure times each operation by the CPU time of this thread
// (threadCPU), not by the wall clock, so that it is comparable with
// the server's CPU time from /proc even when other processes share the
// core.
func (c *calibration) measure() {
	if c.For <= 0 {
		c.For = time.Second
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	c.VerifyNs = timeCPU(c.For, func() bool { return ed25519.Verify(ed25519.PublicKey(c.Pub), c.Input, c.Sig) })
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	msg := []byte(strings.Repeat("A", max(c.SignSize, 1)))
	c.SignNs = timeCPU(c.For, func() bool { ed25519.Sign(priv, msg); return true })
}

// timeCPU runs op until it has used d of this thread's CPU time and
// returns the CPU ns per call, or -1 if op failed.
func timeCPU(d time.Duration, op func() bool) float64 {
	start := threadCPU()
	n := 0
	for threadCPU()-start < d {
		for range 16 {
			if !op() {
				return -1
			}
		}
		n += 16
	}
	return float64((threadCPU() - start).Nanoseconds()) / float64(n)
}
