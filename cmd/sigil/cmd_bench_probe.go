package main

import (
	"bytes"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"
)

// The probe process of "sigil bench" (sigil bench --probe, started by the
// bench on the server's core): while a row is measured, it times raw
// ed25519.Verify and ed25519.Sign on that core in short bursts, about one
// millisecond of each in every probeEvery, so at about a tenth of the
// core. The row's ratio is then against the machine's speed during the
// row itself.
//
// Why: this kind of machine (a 2-core VM) changes speed by 20–30% from
// one half-second to the next (raw verify timed in 0.5 s windows on an
// idle core ran 65–86 µs), so a baseline timed before and after a row,
// even a second away, leaves that swing in the row's ratio; with one
// subscriber, three runs' ratios spread from 1.11× to 1.61×.
//
//   - POST /start with a calibration (the signing input, signature and
//     key of a publish frame, and the size of a deliver's signing input)
//     starts the bursts;
//   - POST /stop ends them and answers the probeSample.
//
// A burst runs a fixed number of operations and is timed by this thread's
// CPU clock (CLOCK_THREAD_CPUTIME_ID, exact to the nanosecond, unlike
// getrusage's, which lags by up to a scheduler tick), so the time the
// core spent on the server between two reads is not counted.

// probeSample is the answer of /stop: the probe's raw timings over the
// row, ns/op.
type probeSample struct {
	VerifyNs float64 `json:"verify_ns"`
	SignNs   float64 `json:"sign_ns"`
	Verifies int     `json:"verifies"`
	Signs    int     `json:"signs"`
}

const (
	probeEvery     = 10 * time.Millisecond // from the start of a burst to the next
	probeVerifyOps = 12                    // ~1 ms on a 2020s x86 core
	probeSignOps   = 24
)

func runProbe(stdout io.Writer) error {
	var mu sync.Mutex
	var stop chan struct{}
	var done chan probeSample
	mux := http.NewServeMux()
	mux.HandleFunc("POST /start", func(w http.ResponseWriter, req *http.Request) {
		var c calibration
		if err := json.NewDecoder(req.Body).Decode(&c); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if !ed25519.Verify(ed25519.PublicKey(c.Pub), c.Input, c.Sig) {
			http.Error(w, "the sample does not verify", http.StatusBadRequest)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if stop != nil {
			http.Error(w, "already probing", http.StatusConflict)
			return
		}
		stop, done = make(chan struct{}), make(chan probeSample, 1)
		go probeLoop(&c, stop, done)
	})
	mux.HandleFunc("POST /stop", func(w http.ResponseWriter, req *http.Request) {
		mu.Lock()
		defer mu.Unlock()
		if stop == nil {
			http.Error(w, "not probing", http.StatusConflict)
			return
		}
		close(stop)
		s := <-done
		stop, done = nil, nil
		_ = json.NewEncoder(w).Encode(s)
	})
	return serveHelper(stdout, probeReady, mux)
}

// probeLoop alternates verify and sign bursts, probeEvery apart, until
// stop is closed, then sends what it timed on done.
func probeLoop(c *calibration, stop <-chan struct{}, done chan<- probeSample) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	pub := ed25519.PublicKey(c.Pub)
	priv := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	msg := []byte(strings.Repeat("A", max(c.SignSize, 1)))
	var vCPU, sCPU time.Duration
	var s probeSample
	t := time.NewTimer(time.Hour)
	defer t.Stop()
	for i := 0; ; i++ {
		start := time.Now()
		// One untimed operation first: after the server has had the
		// core, the first runs with cold caches, and the baseline is a
		// warm loop's speed.
		if i%2 == 0 {
			ed25519.Verify(pub, c.Input, c.Sig)
		} else {
			ed25519.Sign(priv, msg)
		}
		c0 := threadCPU()
		if i%2 == 0 {
			for range probeVerifyOps {
				ed25519.Verify(pub, c.Input, c.Sig)
			}
			vCPU += threadCPU() - c0
			s.Verifies += probeVerifyOps
		} else {
			for range probeSignOps {
				ed25519.Sign(priv, msg)
			}
			sCPU += threadCPU() - c0
			s.Signs += probeSignOps
		}
		t.Reset(probeEvery - time.Since(start))
		select {
		case <-stop:
			if s.Signs == 0 { // a short row: one burst of each at least
				c0 := threadCPU()
				for range probeSignOps {
					ed25519.Sign(priv, msg)
				}
				sCPU += threadCPU() - c0
				s.Signs += probeSignOps
			}
			if s.Verifies > 0 {
				s.VerifyNs = float64(vCPU.Nanoseconds()) / float64(s.Verifies)
			}
			if s.Signs > 0 {
				s.SignNs = float64(sCPU.Nanoseconds()) / float64(s.Signs)
			}
			done <- s
			return
		case <-t.C:
		}
	}
}

// threadCPU is the CPU time of the calling thread, exact
// (CLOCK_THREAD_CPUTIME_ID).
func threadCPU() time.Duration {
	var ts unix.Timespec
	_ = unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}

// probeStart starts the probe on the server's core with the bench's
// sample frame (b.probeReq); probeStop ends it and returns its timings.
func (b *bench) probeStart() error {
	_, err := b.probePost("/start", b.probeReq)
	return err
}

func (b *bench) probeStop() (probeSample, error) {
	var s probeSample
	body, err := b.probePost("/stop", nil)
	if err != nil {
		return s, err
	}
	if err := json.Unmarshal(body, &s); err != nil {
		return s, err
	}
	if s.VerifyNs <= 0 || s.SignNs <= 0 {
		return s, errors.New("probe: no timings")
	}
	return s, nil
}

// probePost posts body to the probe's path and returns its answer; an
// answer other than 200 is an error with the probe's message.
func (b *bench) probePost(path string, body []byte) ([]byte, error) {
	resp, err := http.Post(b.probeURL+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	msg, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("probe: %s", bytes.TrimSpace(msg))
	}
	return msg, nil
}
