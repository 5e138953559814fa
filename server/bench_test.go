package server_test

// Benchmarks of the server over real loopback sockets.
//
// Method. The clients run in a child process (this test binary re-executed
// with SIGIL_BENCH_CHILD set), so the process CPU time of the benchmark
// process (getrusage RUSAGE_SELF, user+system) is the server's alone: the
// clients' signing, masking and writing are not in it. Frames are signed by
// the child ahead of time ("prep"), before the measured phase ("go").
//
// Ratios are against a baseline measured in the same run and interleaved
// round by round with the measured operation, so both see the same machine
// state: every round runs the server phase, then the baseline phase, each
// timed with getrusage, and the benchmark reports the ratio of the totals.

import (
	"bufio"
	"crypto/ed25519"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"runtime/metrics"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// child is the client process.
type child struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

func startChild(b testing.TB, mode string, env ...string) *child {
	cmd := exec.Command(os.Args[0], "-test.run=^TestBenchChild$", "-test.v=false")
	cmd.Env = append(os.Environ(), append([]string{"SIGIL_BENCH_CHILD=" + mode}, env...)...)
	cmd.Stderr = os.Stderr
	in, _ := cmd.StdinPipe()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	c := &child{cmd: cmd, in: in, out: bufio.NewReader(out)}
	b.Cleanup(func() { in.Close(); _ = cmd.Wait() })
	c.expect(b, "ready")
	return c
}

func (c *child) say(b testing.TB, line string) { fmt.Fprintln(c.in, line) }

func (c *child) expect(b testing.TB, want string) {
	for {
		line, err := c.out.ReadString('\n')
		if err != nil {
			b.Fatalf("child: %v", err)
		}
		line = strings.TrimSpace(line)
		if line == want {
			return
		}
		if strings.HasPrefix(line, "ERR") {
			b.Fatalf("child: %s", line)
		}
		// anything else is test-framework noise (PASS etc.)
	}
}

func benchEnv(b testing.TB) *env {
	return newEnv(b, func(c *server.Config) {
		c.HelloTimeout = 30 * time.Second
		c.LoginFailuresPerAddress = 1 << 30
		// No history: these measure the live path alone (history costs
		// are BenchmarkHistory's).
		p, err := protocol.DefaultPolicy().WithHistory(nil)
		must(b, err)
		c.Policy = p
	})
}

// BenchmarkPublishVerifyEdDSA: server CPU per verified EdDSA publish from
// 64 connections over loopback, as a ratio to one raw ed25519.Verify of a
// frame of the same size ("x-ed25519-verify"). The channel has no
// subscribers, so this is the inbound cost (read, verify pipeline, policy,
// dispatch); fan-out is BenchmarkFanout. For reference it also reports a
// plain gorilla echo server (read each frame, write it back) fed the same
// frames over 64 other connections: "echo-x-ed25519-verify" is its CPU per
// frame against the same baseline, "x-gorilla-echo" Sigil's against it.
func BenchmarkPublishVerifyEdDSA(b *testing.B) {
	e := benchEnv(b)
	const conns = 64
	// The reference the issue names: a plain gorilla echo server in this
	// process, fed the same frames over 64 other connections.
	var echoed atomic.Uint64
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 1024, WriteBufferPool: &sync.Pool{}}
	es := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			for {
				t, data, err := c.ReadMessage()
				if err != nil || c.WriteMessage(t, data) != nil {
					return
				}
				echoed.Add(1)
			}
		}()
	}))
	defer es.Close()
	ch := startChild(b, "pub", "SIGIL_URL="+e.url, "SIGIL_ECHO=ws"+strings.TrimPrefix(es.URL, "http"), "SIGIL_CONNS="+strconv.Itoa(conns))
	// Baseline frames: the same kind of publish, signed once.
	pub, priv, _ := ed25519.GenerateKey(nil)
	k, _ := protocol.NewPrivateKey(priv, "")
	signer := &protocol.ClientSigner{Key: k, Session: "00000000-0000-4000-8000-000000000000", Subject: "alice"}
	const round = conns * 32
	inputs := make([][2][]byte, round)
	for i := range inputs {
		fr, _ := signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.bench", Body: json.RawMessage(`{"text":"hello, world"}`)})
		last := strings.LastIndexByte(string(fr), '.')
		sig, _ := b64.DecodeString(string(fr[last+1:]))
		inputs[i] = [2][]byte{fr[:last], sig}
	}
	var op, base, echo time.Duration
	done := 0
	b.ResetTimer()
	for done < b.N {
		n := round
		b.StopTimer()
		ch.say(b, "prep "+strconv.Itoa(n))
		ch.expect(b, "ok")
		target := e.srv.Stats().FramesAccepted + uint64(n)
		runtime.GC()
		b.StartTimer()
		t0 := cpuTime()
		ch.say(b, "go")
		for e.srv.Stats().FramesAccepted < target {
			time.Sleep(200 * time.Microsecond)
		}
		t1 := cpuTime()
		for i := 0; i < n; i++ {
			if !ed25519.Verify(pub, inputs[i][0], inputs[i][1]) {
				b.Fatal("baseline")
			}
		}
		t2 := cpuTime()
		ch.expect(b, "sent")
		etarget := echoed.Load() + uint64(n)
		t3 := cpuTime()
		ch.say(b, "echo")
		for echoed.Load() < etarget {
			time.Sleep(200 * time.Microsecond)
		}
		t4 := cpuTime()
		ch.expect(b, "sent")
		op += t1 - t0
		base += t2 - t1
		echo += t4 - t3
		done += n
	}
	b.StopTimer()
	if r := e.srv.Stats().FramesRejected; r != 0 {
		b.Fatalf("%d frames rejected", r)
	}
	b.ReportMetric(float64(op)/float64(base), "x-ed25519-verify")
	b.ReportMetric(float64(echo)/float64(base), "echo-x-ed25519-verify")
	b.ReportMetric(float64(op)/float64(echo), "x-gorilla-echo")
	b.ReportMetric(float64(op.Nanoseconds())/float64(done), "server-cpu-ns/frame")
	b.ReportMetric(float64(base.Nanoseconds())/float64(done), "verify-ns")
}

// BenchmarkFanout: one publish to 1,000 subscribers. Server CPU per
// delivered frame, against a plain gorilla PreparedMessage broadcast to
// 1,000 connections by the same process ("x-gorilla-broadcast").
func BenchmarkFanout(b *testing.B) {
	e := benchEnv(b)
	const subs = 1000
	// The baseline: a plain gorilla server that keeps its connections.
	var mu sync.Mutex
	var plain []*websocket.Conn
	up := websocket.Upgrader{ReadBufferSize: 1024, WriteBufferSize: 4096, WriteBufferPool: &sync.Pool{}}
	bs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		mu.Lock()
		plain = append(plain, c)
		mu.Unlock()
	}))
	defer bs.Close()
	ch := startChild(b, "fanout", "SIGIL_URL="+e.url, "SIGIL_BASE="+"ws"+strings.TrimPrefix(bs.URL, "http"), "SIGIL_CONNS="+strconv.Itoa(subs))
	mu.Lock()
	if len(plain) != subs {
		b.Fatalf("baseline conns %d", len(plain))
	}
	mu.Unlock()
	// A baseline frame as large as a deliver frame.
	ks, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	ss := &protocol.ServerSigner{Key: ks}
	ck, _ := protocol.GenerateKey(protocol.EdDSA, nil)
	cs := &protocol.ClientSigner{Key: ck, Session: "00000000-0000-4000-8000-000000000000", Subject: "bob"}
	inner, _ := cs.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.fan", Body: json.RawMessage(`{"text":"hello, world"}`)})
	jwk, _ := ck.Public().MarshalJSON()
	sample, _ := ss.SignBody(&protocol.Envelope{Action: protocol.ActDeliver, Channel: "rooms.fan"}, protocol.DeliverBody{Frame: string(inner), JWK: jwk, Sub: "bob"})
	const k = 16 // publishes per round
	var op, base time.Duration
	done := 0
	b.ResetTimer()
	for done < b.N {
		b.StopTimer()
		ch.say(b, "prep "+strconv.Itoa(k))
		ch.expect(b, "ok")
		runtime.GC()
		b.StartTimer()
		t0 := cpuTime()
		ch.say(b, "pub")
		ch.expect(b, "done")
		t1 := cpuTime()
		ch.say(b, "base "+strconv.Itoa(k))
		ch.expect(b, "ack")
		for i := 0; i < k; i++ {
			pm, err := websocket.NewPreparedMessage(websocket.TextMessage, sample)
			if err != nil {
				b.Fatal(err)
			}
			for _, c := range plain {
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				if err := c.WritePreparedMessage(pm); err != nil {
					b.Fatal(err)
				}
			}
		}
		ch.expect(b, "done")
		t2 := cpuTime()
		op += t1 - t0
		base += t2 - t1
		done += k
	}
	b.StopTimer()
	frames := float64(done * subs)
	b.ReportMetric(float64(op)/float64(base), "x-gorilla-broadcast")
	b.ReportMetric(float64(op.Nanoseconds())/frames, "server-cpu-ns/delivery")
	b.ReportMetric(float64(base.Nanoseconds())/frames, "broadcast-ns/frame")
	b.ReportMetric(float64(len(sample)), "frame-bytes")
}

// BenchmarkIdleSessionMemory: memory per idle authenticated session
// (after hello/welcome), over 2,000 sessions each from its own login, all
// measured after forced collections. "B/session" is Go's heap in use plus
// stacks; "live-B/session" the live heap alone (runtime/metrics'
// /gc/heap/live:bytes), the part that the collector's headroom doubles in
// RSS. Kernel socket buffers are not included. One measurement whatever
// b.N is. SIGIL_HEAPPROFILE=file writes an unsampled heap profile of the
// sessions' allocations.
func BenchmarkIdleSessionMemory(b *testing.B) {
	e := benchEnv(b)
	const n = 2000
	if os.Getenv("SIGIL_HEAPPROFILE") != "" {
		runtime.MemProfileRate = 1
		defer func() { runtime.MemProfileRate = 512 * 1024 }()
	}
	before := goMem()
	ch := startChild(b, "idle", "SIGIL_URL="+e.url, "SIGIL_CONNS="+strconv.Itoa(n))
	for e.srv.Stats().Sessions < n {
		time.Sleep(10 * time.Millisecond)
	}
	time.Sleep(200 * time.Millisecond)
	after := goMem()
	b.ReportMetric(float64(int64(after.inuse)-int64(before.inuse))/n, "B/session")
	b.ReportMetric(float64(int64(after.live)-int64(before.live))/n, "live-B/session")
	if p := os.Getenv("SIGIL_HEAPPROFILE"); p != "" {
		f, err := os.Create(p)
		must(b, err)
		must(b, pprof.Lookup("heap").WriteTo(f, 0))
		must(b, f.Close())
		b.Logf("heap inuse %d live %d goroutines %d", after.inuse, after.live, runtime.NumGoroutine())
	}
	ch.say(b, "quit")
	for e.srv.Stats().Sessions > 0 {
		time.Sleep(10 * time.Millisecond)
	}
}

type goMemStats struct {
	inuse uint64 // heap in use + stacks
	live  uint64 // live heap after the last collection
}

func goMem() goMemStats {
	var ms runtime.MemStats
	for i := 0; i < 4; i++ {
		runtime.GC()
	}
	runtime.ReadMemStats(&ms)
	live := []metrics.Sample{{Name: "/gc/heap/live:bytes"}}
	metrics.Read(live)
	return goMemStats{inuse: ms.HeapInuse + ms.StackInuse, live: live[0].Value.Uint64()}
}

// TestBenchChild is the client side of the benchmarks; it runs only in the
// child process.
func TestBenchChild(t *testing.T) {
	mode := os.Getenv("SIGIL_BENCH_CHILD")
	if mode == "" {
		t.Skip("benchmark child only")
	}
	defer os.Exit(0)
	url := os.Getenv("SIGIL_URL")
	n, _ := strconv.Atoi(os.Getenv("SIGIL_CONNS"))
	e := &env{t: t, url: url}
	in := bufio.NewScanner(os.Stdin)
	say := func(s string) { fmt.Fprintln(os.Stdout, s) }
	connect := func(user string) *client {
		c := e.childLogin(user)
		d := websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, ReadBufferSize: 1024, WriteBufferSize: 1024}
		ws, _, err := d.Dial(strings.Replace(url, "http", "ws", 1)+"/v1/ws", nil)
		if err != nil {
			say("ERR " + err.Error())
			os.Exit(1)
		}
		c.ws = ws
		must(t, ws.WriteMessage(websocket.TextMessage, c.helloFrame(c.tok.Token)))
		if _, _, err := ws.ReadMessage(); err != nil {
			say("ERR " + err.Error())
			os.Exit(1)
		}
		return c
	}
	switch mode {
	case "history":
		historyChild(t, in, say, connect)
	case "pub":
		cs := make([]*client, n)
		for i := range cs {
			cs[i] = connect("alice")
		}
		echoes := make([]*websocket.Conn, n)
		ed := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
		for i := range echoes {
			ws, _, err := ed.Dial(os.Getenv("SIGIL_ECHO"), nil)
			if err != nil {
				say("ERR " + err.Error())
				os.Exit(1)
			}
			echoes[i] = ws
			go func() {
				for {
					if _, _, err := ws.ReadMessage(); err != nil {
						return
					}
				}
			}()
		}
		say("ready")
		frames := make([][][]byte, n)
		for in.Scan() {
			f := strings.Fields(in.Text())
			switch f[0] {
			case "prep":
				total, _ := strconv.Atoi(f[1])
				for i, c := range cs {
					frames[i] = frames[i][:0]
					for j := 0; j < total/n; j++ {
						fr, _ := c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.bench", Body: json.RawMessage(`{"text":"hello, world"}`)})
						frames[i] = append(frames[i], fr)
					}
				}
				say("ok")
			case "go":
				var wg sync.WaitGroup
				for i, c := range cs {
					wg.Add(1)
					go func(c *client, frs [][]byte) {
						defer wg.Done()
						for _, fr := range frs {
							_ = c.ws.WriteMessage(websocket.TextMessage, fr)
						}
					}(c, frames[i])
				}
				wg.Wait()
				say("sent")
			case "echo":
				var wg sync.WaitGroup
				for i, ws := range echoes {
					wg.Add(1)
					go func(ws *websocket.Conn, frs [][]byte) {
						defer wg.Done()
						for _, fr := range frs {
							_ = ws.WriteMessage(websocket.TextMessage, fr)
						}
					}(ws, frames[i])
				}
				wg.Wait()
				say("sent")
			}
		}
	case "fanout":
		var sigilGot, baseGot atomic.Int64
		reader := func(ws *websocket.Conn, ctr *atomic.Int64) {
			for {
				if _, _, err := ws.ReadMessage(); err != nil {
					return
				}
				ctr.Add(1)
			}
		}
		var subsc []*client
		for i := 0; i < n; i++ {
			c := connect("alice")
			sub, _ := c.signer.Sign(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.fan", Corr: "s"})
			must(t, c.ws.WriteMessage(websocket.TextMessage, sub))
			subsc = append(subsc, c)
		}
		// Wait for each sub reply, then start counting.
		for _, c := range subsc {
			for {
				_, data, err := c.ws.ReadMessage()
				must(t, err)
				if strings.Contains(string(data), "") && isReply(data) {
					break
				}
			}
		}
		publisher := connect("bob")
		time.Sleep(500 * time.Millisecond) // let presence frames settle
		for _, c := range subsc {
			_ = c.ws.SetReadDeadline(time.Time{})
		}
		// drain anything pending before counting
		for _, c := range subsc {
			go reader(c.ws, &sigilGot)
		}
		time.Sleep(300 * time.Millisecond)
		sigilGot.Store(0)
		d := websocket.Dialer{ReadBufferSize: 1024, WriteBufferSize: 1024}
		for i := 0; i < n; i++ {
			ws, _, err := d.Dial(os.Getenv("SIGIL_BASE"), nil)
			must(t, err)
			go reader(ws, &baseGot)
		}
		time.Sleep(300 * time.Millisecond)
		say("ready")
		var frames [][]byte
		for in.Scan() {
			f := strings.Fields(in.Text())
			switch f[0] {
			case "prep":
				k, _ := strconv.Atoi(f[1])
				frames = frames[:0]
				for j := 0; j < k; j++ {
					fr, _ := publisher.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.fan", Body: json.RawMessage(`{"text":"hello, world"}`)})
					frames = append(frames, fr)
				}
				say("ok")
			case "pub":
				want := sigilGot.Load() + int64(len(frames)*n)
				for _, fr := range frames {
					_ = publisher.ws.WriteMessage(websocket.TextMessage, fr)
				}
				waitFor(&sigilGot, want, "sigil")
				say("done")
			case "base":
				k, _ := strconv.Atoi(f[1])
				want := baseGot.Load() + int64(k*n)
				say("ack")
				waitFor(&baseGot, want, "baseline")
				say("done")
			}
		}
	case "idle":
		var cs []*client
		for i := 0; i < n; i++ {
			cs = append(cs, connect("alice"))
		}
		say("ready")
		for in.Scan() {
			if in.Text() == "quit" {
				for _, c := range cs {
					c.ws.Close()
				}
				return
			}
		}
	}
}

func isReply(data []byte) bool {
	parts := strings.Split(string(data), ".")
	if len(parts) != 3 {
		return false
	}
	p, err := b64.DecodeString(parts[1])
	return err == nil && strings.Contains(string(p), `"act":"reply"`)
}

// childLogin logs in over HTTP without a server object in this process.
func (e *env) childLogin(user string) *client {
	pubk, priv, _ := ed25519.GenerateKey(nil)
	_ = pubk
	key, _ := protocol.NewPrivateKey(priv, "")
	jwk, _ := key.Public().MarshalJSON()
	c := &client{t: e.t, e: e, key: key, raw: priv, jwk: jwk}
	if st := e.postJSON("/v1/token", map[string]any{"grant_type": "password", "username": user, "password": "pw", "jwk": json.RawMessage(jwk)}, &c.tok); st != 200 {
		fmt.Println("ERR login", st)
		os.Exit(1)
	}
	c.signer = &protocol.ClientSigner{Key: key, Session: c.tok.Session, Subject: c.tok.Subject}
	return c
}

func waitFor(ctr *atomic.Int64, want int64, what string) {
	start := time.Now()
	for ctr.Load() < want {
		time.Sleep(100 * time.Microsecond)
		if time.Since(start) > 20*time.Second {
			fmt.Fprintf(os.Stderr, "child: %s: got %d, want %d\n", what, ctr.Load(), want)
			start = time.Now()
		}
	}
}
