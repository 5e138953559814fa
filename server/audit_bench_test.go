package server_test

// Benchmarks of the audit log (spec.md §21), with the method of
// bench_test.go: the clients run in a child process, so that this
// process's CPU time (getrusage) is the server's, and the modes are
// interleaved round by round in one run.

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
	"golang.org/x/mod/sumdb/note"
)

// auditBenchEnv is a benchmark server with the audit log off ("off"), or
// on in a temporary directory, "sync" or "async", on the default store
// (audit.StoreTlog) or, with the suffix "-tessera", on Tessera's.
func auditBenchEnv(b *testing.B, mode string) (*env, *audit.Log) {
	mode, tessera := strings.CutSuffix(mode, "-tessera")
	var l *audit.Log
	e := newEnv(b, func(c *server.Config) {
		c.HelloTimeout = 30 * time.Second
		c.LoginFailuresPerAddress = 1 << 30
		if mode != "off" {
			// The defaults of sigil serve: its batch windows, a checkpoint a second.
			skey, vkey, err := audit.GenerateKey("sigil.test/audit")
			must(b, err)
			signer, _ := note.NewSigner(skey)
			v, _ := note.NewVerifier(vkey)
			cfg := audit.Config{Dir: b.TempDir(), Signer: signer}
			if tessera {
				cfg.Store = audit.StoreTessera
			}
			if mode == "async" {
				cfg.BatchMaxAge = audit.AsyncBatchMaxAge // as sigil serve
			}
			if s := os.Getenv("SIGIL_AUDIT_BATCH_" + strings.ToUpper(mode)); s != "" {
				cfg.BatchMaxAge, err = time.ParseDuration(s)
				must(b, err)
			}
			l, err = audit.Open(context.Background(), cfg)
			must(b, err)
			b.Cleanup(func() { _ = l.Close(context.Background()) })
			c.Audit = server.AuditConfig{Log: l, Verifier: v, Async: mode == "async"}
		}
	})
	return e, l
}

// BenchmarkAuditPublish: server CPU per verified publish (with a cid, so
// each is answered) from 64 connections, with the audit log off, sync and
// async, on each store (sync-tessera, async-tessera: Tessera's), in one
// run. The CPU of logging counts in full: a round ends when every reply
// was received and every entry is durable. Reports the CPU per publish of
// each mode, the ratios against off, the throughput of each (publishes
// per second of the rounds) and the entries per batch.
func BenchmarkAuditPublish(b *testing.B) {
	const conns = 64
	modes := []string{"off", "sync", "async", "sync-tessera", "async-tessera"}
	if s := os.Getenv("SIGIL_AUDIT_MODES"); s != "" {
		modes = append([]string{"off"}, strings.Split(s, ",")...) // for profiling one mode
	}
	type side struct {
		e    *env
		l    *audit.Log
		ch   *child
		cpu  time.Duration
		wall time.Duration
	}
	sides := map[string]*side{}
	for _, m := range modes {
		e, l := auditBenchEnv(b, m)
		sides[m] = &side{e: e, l: l, ch: startAuditChild(b, e.url, conns)}
	}
	const round = conns * 16
	done := 0
	b.ResetTimer()
	for done < b.N {
		for _, m := range modes {
			s := sides[m]
			b.StopTimer()
			s.ch.say(b, "prep "+strconv.Itoa(round))
			s.ch.expect(b, "ok")
			var want uint64
			if s.l != nil {
				n, err := s.l.Size(context.Background())
				must(b, err)
				want = n + round
			}
			runtime.GC()
			b.StartTimer()
			t0, w0 := cpuTime(), time.Now()
			s.ch.say(b, "go")
			s.ch.expect(b, "sent")
			for s.l != nil {
				n, err := s.l.Size(context.Background())
				must(b, err)
				if n >= want {
					break
				}
				time.Sleep(5 * time.Millisecond) // each poll reads a file: not often
			}
			s.cpu += cpuTime() - t0
			s.wall += time.Since(w0)
		}
		done += round
	}
	b.StopTimer()
	for _, m := range modes {
		b.ReportMetric(float64(sides[m].cpu.Nanoseconds())/float64(done), "cpu-ns/pub-"+m)
		b.ReportMetric(float64(done)/sides[m].wall.Seconds(), "pub/s-"+m)
	}
	for _, m := range modes[1:] {
		b.ReportMetric(float64(sides[m].cpu)/float64(sides["off"].cpu), m+"-x-off")
		st := sides[m].l.Stats()
		b.ReportMetric(float64(st.Entries)/float64(st.Batches), "entries/batch-"+m)
	}
}

// BenchmarkAuditLatency: publish→reply latency at a steady rate
// (SIGIL_AUDIT_RATE publishes per second over 16 connections, default
// 400), audit log off, sync and async, on each store, interleaved;
// reports p50 and p99 of each.
func BenchmarkAuditLatency(b *testing.B) {
	rate := 400
	if s := os.Getenv("SIGIL_AUDIT_RATE"); s != "" {
		rate, _ = strconv.Atoi(s)
	}
	const conns = 16
	modes := []string{"off", "sync", "async", "sync-tessera", "async-tessera"}
	lat := map[string][]time.Duration{}
	chs := map[string]*child{}
	for _, m := range modes {
		e, _ := auditBenchEnv(b, m)
		chs[m] = startAuditChild(b, e.url, conns)
	}
	b.ResetTimer()
	for done := 0; done < b.N; done += rate {
		for _, m := range modes {
			// One second of load: rate/conns publishes per connection.
			chs[m].say(b, fmt.Sprintf("lat %d %d", rate/conns, time.Second.Nanoseconds()/int64(rate/conns)))
			line := chs[m].line(b, "lat ")
			for _, f := range strings.Fields(line)[1:] {
				ns, _ := strconv.ParseInt(f, 10, 64)
				lat[m] = append(lat[m], time.Duration(ns))
			}
		}
	}
	b.StopTimer()
	for _, m := range modes {
		l := lat[m]
		slices.Sort(l)
		b.ReportMetric(float64(l[len(l)/2].Microseconds()), "p50-us-"+m)
		b.ReportMetric(float64(l[len(l)*99/100].Microseconds()), "p99-us-"+m)
	}
}

// startAuditChild starts TestAuditBenchChild with conns connections to
// url, as startChild starts TestBenchChild.
func startAuditChild(b testing.TB, url string, conns int) *child {
	cmd := exec.Command(os.Args[0], "-test.run=^TestAuditBenchChild$", "-test.v=false")
	cmd.Env = append(os.Environ(), "SIGIL_AUDIT_BENCH_CHILD=1", "SIGIL_URL="+url, "SIGIL_CONNS="+strconv.Itoa(conns))
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

// line reads the child's next line that starts with prefix.
func (c *child) line(b testing.TB, prefix string) string {
	for {
		line, err := c.out.ReadString('\n')
		if err != nil {
			b.Fatalf("child: %v", err)
		}
		if strings.HasPrefix(line, prefix) {
			return strings.TrimSpace(line)
		}
		if strings.HasPrefix(line, "ERR") {
			b.Fatalf("child: %s", line)
		}
	}
}

// TestAuditBenchChild is the client side of the audit benchmarks; it runs
// only in the child process. Commands: "prep N" signs N publishes (with
// cids) over the connections; "go" sends them and says "sent" once every
// one is answered; "lat K D" sends K publishes per connection, one every
// D ns, each after the last was answered, and prints their latencies.
func TestAuditBenchChild(t *testing.T) {
	if os.Getenv("SIGIL_AUDIT_BENCH_CHILD") == "" {
		t.Skip("benchmark child only")
	}
	defer os.Exit(0)
	url := os.Getenv("SIGIL_URL")
	n, _ := strconv.Atoi(os.Getenv("SIGIL_CONNS"))
	e := &env{t: t, url: url}
	say := func(s string) { fmt.Fprintln(os.Stdout, s) }
	type conn struct {
		c       *client
		replies chan time.Time
	}
	cs := make([]*conn, n)
	for i := range cs {
		c := e.childLogin("alice")
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
		cn := &conn{c: c, replies: make(chan time.Time, 1<<16)}
		go func() {
			for {
				_, data, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if isReply(data) {
					cn.replies <- time.Now()
				}
			}
		}()
		cs[i] = cn
	}
	say("ready")
	sign := func(c *client) []byte {
		fr, _ := c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.bench", Corr: "c", Body: json.RawMessage(`{"text":"hello, world"}`)})
		return fr
	}
	frames := make([][][]byte, n)
	in := bufio.NewScanner(os.Stdin)
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch f[0] {
		case "prep":
			total, _ := strconv.Atoi(f[1])
			for i, c := range cs {
				frames[i] = frames[i][:0]
				for j := 0; j < total/n; j++ {
					frames[i] = append(frames[i], sign(c.c))
				}
			}
			say("ok")
		case "go":
			var wg sync.WaitGroup
			for i, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for _, fr := range frames[i] {
						_ = c.c.ws.WriteMessage(websocket.TextMessage, fr)
					}
					for range frames[i] {
						<-c.replies
					}
				}()
			}
			wg.Wait()
			say("sent")
		case "lat":
			k, _ := strconv.Atoi(f[1])
			every, _ := strconv.ParseInt(f[2], 10, 64)
			var mu sync.Mutex
			var out []string
			var wg sync.WaitGroup
			var started atomic.Int64
			for _, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					// Spread the connections over the interval.
					time.Sleep(time.Duration(started.Add(1)) * time.Duration(every) / time.Duration(n))
					next := time.Now()
					for range k {
						fr := sign(c.c)
						t0 := time.Now()
						_ = c.c.ws.WriteMessage(websocket.TextMessage, fr)
						t1 := <-c.replies
						mu.Lock()
						out = append(out, strconv.FormatInt(t1.Sub(t0).Nanoseconds(), 10))
						mu.Unlock()
						next = next.Add(time.Duration(every))
						time.Sleep(time.Until(next))
					}
				}()
			}
			wg.Wait()
			say("lat " + strings.Join(out, " "))
		}
	}
}
