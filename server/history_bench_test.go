package server_test

import (
	"bufio"
	"encoding/json"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// historyBenchPolicy: "rooms.>" keeps 10,000 publications, "plain.>"
// none; alice and bob may do anything in both.
func historyBenchPolicy(b testing.TB) *protocol.Policy {
	p, err := protocol.NewPolicy([]protocol.Rule{{Action: "*", Channel: ">", Roles: []string{"user"}}})
	must(b, err)
	p, err = p.WithHistory([]protocol.HistoryRule{{Channel: "rooms.>", Size: 10000}})
	must(b, err)
	return p
}

// BenchmarkHistory measures, over real sockets with the clients in a
// child process (bench_test.go), the server's CPU:
//
//   - per publish to a channel with one subscriber, with history on
//     (rooms.h, in memory) and off (plain.h), in alternating rounds:
//     "history-x-plain" is the ratio;
//   - per frame of a recovery of 10,000 missed messages (a sub with since
//     the stream's start, answered with 10,000 stored frames), against
//     the live publish with history: "recovered-x-publish";
//   - and the wall time of one such recovery ("recovery-ms").
func BenchmarkHistory(b *testing.B) { benchHistory(b, nil) }

// BenchmarkHistoryRedis is BenchmarkHistory on one node of a cluster on
// Redis: history in Redis Streams against a plain SPUBLISH.
func BenchmarkHistoryRedis(b *testing.B) {
	cc := newCluster(b, sigiltest.StartRedis(b).URL, "bench:", nil)
	benchHistory(b, cc.Configure)
}

func benchHistory(b *testing.B, mod func(*server.Config)) {
	const missed = 10000
	e := newEnv(b, func(c *server.Config) {
		c.HelloTimeout = 30 * time.Second
		c.LoginFailuresPerAddress = 1 << 30
		c.Policy = historyBenchPolicy(b)
		c.SendQueue = 1 << 14
		if mod != nil {
			mod(c)
		}
	})
	ch := startChild(b, "history", "SIGIL_URL="+e.url, "SIGIL_CONNS=1")
	// Fill rooms.r with the 10,000 messages the recovering client missed.
	ch.say(b, "fill "+strconv.Itoa(missed))
	ch.expect(b, "ok")
	const k = 500 // publishes per round
	var on, off, rec, recWall time.Duration
	pubs, recs := 0, 0
	b.ResetTimer()
	for pubs < b.N {
		for _, channel := range []string{"rooms.h", "plain.h"} {
			b.StopTimer()
			ch.say(b, "prep "+channel+" "+strconv.Itoa(k))
			ch.expect(b, "ok")
			runtime.GC()
			b.StartTimer()
			t0 := cpuTime()
			ch.say(b, "pub")
			ch.expect(b, "done")
			d := cpuTime() - t0
			if channel == "rooms.h" {
				on += d
			} else {
				off += d
			}
		}
		pubs += k
		b.StopTimer()
		runtime.GC()
		w0 := time.Now()
		t0 := cpuTime()
		ch.say(b, "recover")
		ch.expect(b, "done")
		rec += cpuTime() - t0
		recWall += time.Since(w0)
		recs++
		b.StartTimer()
	}
	b.StopTimer()
	perOn := float64(on.Nanoseconds()) / float64(pubs)
	perRec := float64(rec.Nanoseconds()) / float64(recs*missed)
	b.ReportMetric(float64(on)/float64(off), "history-x-plain")
	b.ReportMetric(perOn, "server-cpu-ns/publish")
	b.ReportMetric(float64(off.Nanoseconds())/float64(pubs), "plain-cpu-ns/publish")
	b.ReportMetric(perRec, "server-cpu-ns/recovered")
	b.ReportMetric(perRec/perOn, "recovered-x-publish")
	b.ReportMetric(float64(recWall.Milliseconds())/float64(recs), "recovery-ms")
}

// historyChild is the child side of BenchmarkHistory: a publisher, a
// subscriber of rooms.h and plain.h, and a client that recovers rooms.r.
func historyChild(t *testing.T, in *bufio.Scanner, say func(string), connect func(string) *client) {
	pub := connect("bob")
	sub := connect("alice")
	rec := connect("alice")
	read := func(c *client) []byte {
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			say("ERR " + err.Error())
			os.Exit(1)
		}
		return data
	}
	body := func(data []byte) map[string]json.RawMessage {
		p, _ := b64.DecodeString(strings.Split(string(data), ".")[1])
		var env struct {
			Act  string                     `json:"act"`
			Body map[string]json.RawMessage `json:"body"`
		}
		_ = json.Unmarshal(p, &env)
		env.Body["act"] = json.RawMessage(`"` + env.Act + `"`)
		return env.Body
	}
	replyOf := func(c *client) map[string]json.RawMessage {
		for {
			if d := read(c); isReply(d) {
				return body(d)
			}
		}
	}
	for _, chn := range []string{"rooms.h", "plain.h"} {
		fr, _ := sub.signer.Sign(&protocol.Envelope{Action: protocol.ActSub, Channel: chn, Corr: "s"})
		must(t, sub.ws.WriteMessage(websocket.TextMessage, fr))
		replyOf(sub)
	}
	var got atomic.Int64
	go func() {
		for {
			if _, _, err := sub.ws.ReadMessage(); err != nil {
				return
			}
			got.Add(1)
		}
	}()
	go func() { // the publisher's replies
		for {
			if _, _, err := pub.ws.ReadMessage(); err != nil {
				return
			}
		}
	}()
	say("ready")
	var frames [][]byte
	var epoch string
	for in.Scan() {
		f := strings.Fields(in.Text())
		switch f[0] {
		case "fill":
			n, _ := strconv.Atoi(f[1])
			for i := range n {
				fr, _ := pub.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.r", Body: json.RawMessage(`{"text":"hello, world ` + strconv.Itoa(i) + `"}`)})
				must(t, pub.ws.WriteMessage(websocket.TextMessage, fr))
			}
			// The stream's position tells when all are stored.
			for {
				fr, _ := rec.signer.Sign(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.r", Corr: "p"})
				must(t, rec.ws.WriteMessage(websocket.TextMessage, fr))
				var st protocol.Position
				_ = json.Unmarshal(replyOf(rec)["stream"], &st)
				fr, _ = rec.signer.Sign(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.r", Corr: "u"})
				must(t, rec.ws.WriteMessage(websocket.TextMessage, fr))
				replyOf(rec)
				if st.Offset == uint64(n) {
					epoch = st.Epoch
					break
				}
			}
			say("ok")
		case "prep":
			n, _ := strconv.Atoi(f[2])
			frames = frames[:0]
			for range n {
				fr, _ := pub.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: f[1], Body: json.RawMessage(`{"text":"hello, world"}`)})
				frames = append(frames, fr)
			}
			say("ok")
		case "pub":
			want := got.Load() + int64(len(frames))
			for _, fr := range frames {
				_ = pub.ws.WriteMessage(websocket.TextMessage, fr)
			}
			waitFor(&got, want, "subscriber")
			say("done")
		case "recover":
			since, _ := json.Marshal(protocol.SubBody{Since: &protocol.Position{Epoch: epoch}})
			fr, _ := rec.signer.Sign(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.r", Corr: "r", Body: since})
			must(t, rec.ws.WriteMessage(websocket.TextMessage, fr))
			if string(replyOf(rec)["recovered"]) != "true" {
				say("ERR not recovered")
				os.Exit(1)
			}
			n := 0
			for n < 10000 {
				b := body(read(rec))
				var frs []string
				_ = json.Unmarshal(b["frames"], &frs)
				n += len(frs)
			}
			fr, _ = rec.signer.Sign(&protocol.Envelope{Action: protocol.ActUnsub, Channel: "rooms.r", Corr: "u"})
			must(t, rec.ws.WriteMessage(websocket.TextMessage, fr))
			replyOf(rec)
			say("done")
		}
	}
}
