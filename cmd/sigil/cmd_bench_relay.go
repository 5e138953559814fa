package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"strconv"
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
//     the cheapest fan-out gorilla has. /pub?verify=KEY&sign=N first
//     verifies each frame and signs a deliver's worth of bytes
//     (relayWork): the signing relay.
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
		work, err := relayWork(req.URL.Query())
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		ws, err := relayUpgrader.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		go func() {
			defer ws.Close()
			for {
				_, data, err := ws.ReadMessage()
				if err != nil || !work(data) {
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
	holdReady  = "HOLD_READY url="
)

// relayWork is what the relay does with each frame of a /pub connection
// before relaying it: by default nothing; with ?verify=KEY&sign=N (the
// signing relay, the floor of a server that verifies and signs each
// message) ed25519.Verify of the compact JWS frame's signature with the
// Ed25519 public key KEY (base64url), then ed25519.Sign of N bytes that
// begin with the frame, as a deliver's signing input does. A frame that
// does not verify ends the connection.
func relayWork(q url.Values) (func([]byte) bool, error) {
	if !q.Has("verify") {
		return func([]byte) bool { return true }, nil
	}
	pub, err := base64.RawURLEncoding.DecodeString(q.Get("verify"))
	if err != nil || len(pub) != ed25519.PublicKeySize {
		return nil, errors.New("verify: not a base64url Ed25519 public key")
	}
	n, err := strconv.Atoi(q.Get("sign"))
	if err != nil || n < 0 || n > 1<<20 {
		return nil, errors.New("sign: not a size")
	}
	_, key, err := ed25519.GenerateKey(nil)
	if err != nil {
		return nil, err
	}
	input := make([]byte, n)
	var sig [ed25519.SignatureSize]byte
	return func(frame []byte) bool {
		i := bytes.LastIndexByte(frame, '.')
		if i < 0 || len(frame)-i-1 != base64.RawURLEncoding.EncodedLen(len(sig)) {
			return false
		}
		if k, err := base64.RawURLEncoding.Decode(sig[:], frame[i+1:]); err != nil || k != len(sig) {
			return false
		}
		if !ed25519.Verify(pub, frame[:i], sig[:]) {
			return false
		}
		copy(input, frame)
		_ = ed25519.Sign(key, input)
		return true
	}, nil
}

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
