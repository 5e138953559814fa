package server

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
)

// countingConn counts the writes and write-deadline changes that reach a
// real socket.
type countingConn struct {
	net.Conn
	writes, deadlines atomic.Int64
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

func (c *countingConn) SetWriteDeadline(t time.Time) error {
	c.deadlines.Add(1)
	return c.Conn.SetWriteDeadline(t)
}

// batchPair is a session's write side over a real loopback socket: a conn
// whose gorilla Conn runs over a flushConn (as serveWS makes it), over a
// countingConn, and a plain gorilla client reading the other end.
func batchPair(t *testing.T) (*conn, *flushConn, *countingConn, *websocket.Conn) {
	t.Helper()
	up := websocket.Upgrader{ReadBufferSize: 512, WriteBufferSize: 4096, WriteBufferPool: writeBufferPool}
	got := make(chan *websocket.Conn, 1)
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(hijacker{w, time.Second}, r, nil)
		if err != nil {
			t.Error(err)
			return
		}
		got <- ws
	}))
	t.Cleanup(hs.Close)
	cl, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cl.Close() })
	ws := <-got
	t.Cleanup(func() { ws.Close() })
	fc := ws.NetConn().(*flushConn)
	cc := &countingConn{Conn: fc.Conn}
	fc.Conn = cc
	c := &conn{srv: &Server{cfg: Config{WriteTimeout: 5 * time.Second}}, ws: ws, fc: fc}
	return c, fc, cc, cl
}

// Frames queued together reach the socket in one write, each intact and
// in order; the peer reads exactly what unbatched writes would give.
func TestWriteBatchOneSyscall(t *testing.T) {
	c, fc, cc, cl := batchPair(t)
	var frames []outFrame
	var want []string
	for i := range 20 {
		msg := fmt.Sprintf(`frame %d %s`, i, strings.Repeat("x", i*50))
		switch i % 3 {
		case 0:
			frames = append(frames, outFrame{data: []byte(msg)})
		case 1:
			pm, err := websocket.NewPreparedMessage(websocket.TextMessage, []byte(msg))
			if err != nil {
				t.Fatal(err)
			}
			frames = append(frames, outFrame{pm: pm})
		case 2:
			frames = append(frames, outFrame{ping: true})
			msg = "ping"
		}
		want = append(want, msg)
	}
	if err := c.writeBatch(fc, frames); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load(); n != 1 {
		t.Fatalf("20 queued frames took %d socket writes; want 1", n)
	}
	pings := make(chan struct{}, 20)
	cl.SetPingHandler(func(string) error { pings <- struct{}{}; return nil })
	_ = cl.SetReadDeadline(time.Now().Add(20 * time.Second)) // a safety limit, not the assertion
	for i, w := range want {
		if w == "ping" {
			continue
		}
		_, data, err := cl.ReadMessage()
		if err != nil {
			t.Fatal(err)
		}
		if string(data) != w {
			t.Fatalf("message %d: %q, want %q", i, data, w)
		}
	}
	if len(pings) != 6 {
		t.Fatalf("%d pings, want 6", len(pings))
	}
	if fc.buf != nil {
		t.Fatal("the gather buffer is held after the batch")
	}
}

// A connection that writes one frame at a time does not re-arm the
// socket's write deadline per frame.
func TestWriteDeadlineNotPerFrame(t *testing.T) {
	c, fc, cc, cl := batchPair(t)
	const n = 200
	go func() {
		for range n {
			if _, _, err := cl.ReadMessage(); err != nil {
				return
			}
		}
	}()
	start := time.Now()
	for i := range n {
		if err := c.writeBatch(fc, []outFrame{{data: []byte(fmt.Sprint(i))}}); err != nil {
			t.Fatal(err)
		}
	}
	if w := cc.writes.Load(); w != n {
		t.Fatalf("%d writes for %d single frames", w, n)
	}
	// The slack is 1s: the deadline is re-armed at most once per second
	// of writing, however slow the machine.
	if d, most := cc.deadlines.Load(), 1+int64(time.Since(start)/time.Second); d > most {
		t.Fatalf("%d deadline changes for %d frames", d, n)
	}
}

// deliverPair is batchPair with what deliverIn needs: a hub to hand the
// writer goroutine to, a queue, and the session subscribed to "ch".
func deliverPair(t *testing.T) (*conn, *flushConn, *websocket.Conn) {
	t.Helper()
	c, fc, _, cl := batchPair(t)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	c.srv.ctx = ctx
	c.srv.cfg.SendQueue = 1000
	c.srv.cfg.WriteTimeout = sigiltest.WaitLimit // a safety limit: the test reads everything
	c.srv.hub = &hub{s: c.srv, writers: make(chan *conn)}
	c.channels = map[string]struct{}{"ch": {}}
	return c, fc, cl
}

// A fan-out frame for a session whose writer is idle is written by the
// delivering goroutine at once: no writer goroutine is left busy, and the
// peer reads it.
func TestDeliverWritesAtOnce(t *testing.T) {
	c, _, cl := deliverPair(t)
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, []byte("shared"))
	if err != nil {
		t.Fatal(err)
	}
	wire := outFrame{pm: pm, wire: wireFrame(websocket.TextMessage, []byte("shared"))}
	for i, f := range []outFrame{{pm: pm}, {data: []byte("own")}, wire} {
		c.mu.Lock()
		c.calmUntil = math.MaxInt64 // not a stream, however fast the loop
		c.mu.Unlock()
		if !c.deliverIn("ch", f, false) {
			t.Fatalf("frame %d not delivered", i)
		}
		c.mu.Lock()
		writing, queued := c.writing, len(c.queue)
		c.mu.Unlock()
		if writing || queued != 0 {
			t.Fatalf("frame %d: writing %v, %d queued: it was not written at once", i, writing, queued)
		}
	}
	_ = cl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit))
	for _, want := range []string{"shared", "own", "shared"} {
		if _, data, err := cl.ReadMessage(); err != nil || string(data) != want {
			t.Fatalf("read %q %v, want %q", data, err, want)
		}
	}
	if c.deliverIn("other", outFrame{data: []byte("x")}, false) {
		t.Fatal("a frame of a channel the session is not in was delivered")
	}
}

// writerIdle waits until c's writer has nothing left to write.
func writerIdle(t *testing.T, c *conn) {
	t.Helper()
	sigiltest.Eventually(t, "the writer goes idle", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.writing
	})
}

// A session that receives a stream has its deliveries queued, and the
// writer gathers them: every frame arrives, in order, in fewer writes
// than frames.
func TestDeliverStreamGathers(t *testing.T) {
	c, fc, cl := deliverPair(t)
	counting := fc.Conn.(*countingConn)
	const n = 200
	for i := range n {
		c.mu.Lock()
		c.lastDeliver = monoNow() + int64(time.Hour) // a stream, however slow the loop
		c.mu.Unlock()
		if !c.deliverIn("ch", outFrame{data: []byte(fmt.Sprint("frame ", i))}, false) {
			t.Fatalf("frame %d not delivered", i)
		}
	}
	_ = cl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit))
	for i := range n {
		if _, data, err := cl.ReadMessage(); err != nil || string(data) != fmt.Sprint("frame ", i) {
			t.Fatalf("read %q %v, want frame %d", data, err, i)
		}
	}
	if w := counting.writes.Load(); w >= n {
		t.Errorf("%d frames in %d writes: nothing gathered", n, w)
	}
}

// A writer started for a stream that finds only its one frame gathered
// nothing: the session's deliveries are written at once again, for
// streamCalm, however fast they come; after each such writer in a row,
// for twice as long, up to streamCalmMax.
func TestDeliverStreamCalms(t *testing.T) {
	c, _, cl := deliverPair(t)
	c.mu.Lock()
	c.lastDeliver = monoNow() + int64(time.Hour)
	c.mu.Unlock()
	if !c.deliverIn("ch", outFrame{data: []byte("one")}, false) {
		t.Fatal("not delivered")
	}
	// Queued for a writer, which gathers (and so may set calmUntil): a
	// frame written at once sets nothing.
	writerIdle(t, c)
	c.mu.Lock()
	calm, calmFor := c.calmUntil > monoNow(), c.calmFor
	c.lastDeliver = monoNow() + int64(time.Hour)
	c.mu.Unlock()
	if !calm || calmFor != int64(streamCalm) {
		t.Fatalf("calm for %v: a frame of a stream was written at once, or a writer that gathered nothing did not calm the session for streamCalm", time.Duration(calmFor))
	}
	if !c.deliverIn("ch", outFrame{data: []byte("two")}, false) {
		t.Fatal("not delivered")
	}
	c.mu.Lock()
	writing, queued2 := c.writing, len(c.queue)
	c.mu.Unlock()
	if writing || queued2 != 0 {
		t.Fatalf("writing %v, %d queued: a calm session's delivery was not written at once", writing, queued2)
	}
	// The calm over, another writer that gathers nothing calms the
	// session twice as long, and so on up to streamCalmMax.
	for _, want := range []time.Duration{2 * streamCalm, 4 * streamCalm, 8 * streamCalm, 16 * streamCalm, 32 * streamCalm, streamCalmMax, streamCalmMax} {
		c.mu.Lock()
		c.calmUntil = 0
		c.lastDeliver = monoNow() + int64(time.Hour)
		c.mu.Unlock()
		if !c.deliverIn("ch", outFrame{data: []byte("more")}, false) {
			t.Fatal("not delivered")
		}
		writerIdle(t, c)
		c.mu.Lock()
		calmFor := time.Duration(c.calmFor)
		c.mu.Unlock()
		if calmFor != want {
			t.Fatalf("calm for %v after another writer gathered nothing, want %v", calmFor, want)
		}
	}
	_ = cl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit))
	for _, want := range []string{"one", "two", "more", "more", "more", "more", "more", "more", "more"} {
		if _, data, err := cl.ReadMessage(); err != nil || string(data) != want {
			t.Fatalf("read %q %v, want %q", data, err, want)
		}
	}
}

// A peer that does not read fills its socket: the writes that do not
// block leave the rest to the writer goroutine, the delivering goroutine
// never waits, and the peer then reads every frame intact and in order.
func TestDeliverPartialWriteKeepsOrder(t *testing.T) {
	c, fc, cl := deliverPair(t)
	// Small socket buffers on both sides, so that they fill at once.
	if err := fc.Conn.(*countingConn).Conn.(*net.TCPConn).SetWriteBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	if err := cl.NetConn().(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	const n = 40
	var want []string
	for i := range n {
		msg := fmt.Sprintf("frame %d %s", i, strings.Repeat(string(rune('a'+i%26)), 16<<10))
		f := outFrame{data: []byte(msg)}
		if i%2 == 0 {
			pm, err := websocket.NewPreparedMessage(websocket.TextMessage, []byte(msg))
			if err != nil {
				t.Fatal(err)
			}
			f = outFrame{pm: pm}
			if i%4 == 0 {
				f.wire = wireFrame(websocket.TextMessage, []byte(msg))
			}
		}
		if !c.deliverIn("ch", f, false) {
			t.Fatalf("frame %d not delivered", i)
		}
		want = append(want, msg)
	}
	// The socket cannot have taken 640 KiB: the writer has the rest.
	c.mu.Lock()
	writing := c.writing
	c.mu.Unlock()
	if !writing {
		t.Fatal("all 40 frames were written to a peer that does not read")
	}
	_ = cl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit))
	for i, w := range want {
		_, data, err := cl.ReadMessage()
		if err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if string(data) != w {
			t.Fatalf("frame %d: %.20q…, want %.20q…", i, data, w)
		}
	}
	sigiltest.Eventually(t, "the writer goes idle", func() bool {
		c.mu.Lock()
		defer c.mu.Unlock()
		return !c.writing && !fc.hasRest()
	})
}

// A delivery to a session whose socket another write holds (a pong
// that waits for a full socket) is queued for the writer goroutine: the
// delivering goroutine, which holds the session's lock, does not wait.
func TestDeliverDoesNotWaitForABusySocket(t *testing.T) {
	c, fc, cl := deliverPair(t)
	fc.mu.Lock() // the other write
	done := make(chan bool, 1)
	go func() { done <- c.deliverIn("ch", outFrame{data: []byte("queued")}, false) }()
	select {
	case ok := <-done:
		if !ok {
			fc.mu.Unlock()
			t.Fatal("not delivered")
		}
	case <-time.After(sigiltest.WaitLimit): // a safety limit, not the assertion
		fc.mu.Unlock()
		t.Fatal("the delivery waited for the socket's other write")
	}
	fc.mu.Unlock()
	_ = cl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit))
	if _, data, err := cl.ReadMessage(); err != nil || string(data) != "queued" {
		t.Fatalf("read %q %v", data, err)
	}
}

// Keepalive pings over real sockets. To sessions whose writer is idle the
// sweeper writes each ping itself: every peer reads exactly the bytes of
// gorilla's ping, and no writer goroutine is started. A session whose peer
// does not read, its socket full and its writer waiting on it, gets its
// ping queued behind its frames: the sweep does not wait for it, the
// other sessions read their pings while that socket is still full, and
// its peer, once it reads, gets every frame and then the ping.
func TestPingsWrittenBySweeper(t *testing.T) {
	srv := func() *Server {
		c, _, _ := deliverPair(t)
		s := c.srv
		s.cfg.PingInterval = time.Hour
		s.sched = newSchedule(time.Millisecond, s.cfg.PingInterval)
		return s
	}()
	pair := func() (*conn, *flushConn, *websocket.Conn) {
		c, fc, cl := deliverPair(t)
		c.srv = srv
		c.welcomed.Store(true)
		return c, fc, cl
	}
	// want is what gorilla's WriteControl writes for a server's empty ping.
	want := []byte{0x89, 0x00}
	readPing := func(cl *websocket.Conn, got chan<- error) {
		b := make([]byte, len(want))
		_ = cl.NetConn().SetReadDeadline(time.Now().Add(sigiltest.WaitLimit)) // a safety limit
		_, err := io.ReadFull(cl.NetConn(), b)
		if err == nil && !bytes.Equal(b, want) {
			err = fmt.Errorf("read % x, want % x", b, want)
		}
		got <- err
	}
	pingAll := func(cs []*conn) chan struct{} {
		for _, c := range cs {
			srv.sched.set(c, dutyPing, time.Now().UnixNano()-1)
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			if due := srv.pingDue(time.Now(), nil); len(due) != len(cs) {
				t.Errorf("%d pings due, want %d", len(due), len(cs))
			}
		}()
		return done
	}

	// Idle writers: the sweeper writes.
	const n = 4
	var idle []*conn
	got := make(chan error, n)
	for range n {
		c, _, cl := pair()
		idle = append(idle, c)
		go readPing(cl, got)
	}
	<-pingAll(idle)
	for range n {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	if runs := srv.hub.writerRuns.Load(); runs != 0 {
		t.Fatalf("%d writer goroutine runs for %d pings to idle sessions, want 0", runs, n)
	}
	for i, c := range idle {
		c.mu.Lock()
		writing := c.writing
		c.mu.Unlock()
		if writing || c.slot[dutyPing-1] == 0 || c.due[dutyPing] < time.Now().Add(srv.cfg.PingInterval/2).UnixNano() {
			t.Fatalf("session %d: writing %v, next ping at %d: not pinged and rescheduled", i, writing, c.due[dutyPing])
		}
	}

	// A full socket: its ping waits for it, the sweeper does not.
	slow, slowFC, slowCl := pair()
	slow.channels = map[string]struct{}{"ch": {}}
	if err := slowFC.Conn.(*countingConn).Conn.(*net.TCPConn).SetWriteBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	if err := slowCl.NetConn().(*net.TCPConn).SetReadBuffer(32 << 10); err != nil {
		t.Fatal(err)
	}
	const frames = 40
	for i := range frames {
		if !slow.deliverIn("ch", outFrame{data: []byte(fmt.Sprintf("%d %s", i, strings.Repeat("x", 16<<10)))}, false) {
			t.Fatalf("frame %d not delivered", i)
		}
	}
	for range n {
		c, _, cl := pair()
		idle = append(idle, c)
		go readPing(cl, got)
	}
	done := pingAll(append([]*conn{slow}, idle[n:]...))
	for range n {
		if err := <-got; err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(sigiltest.WaitLimit): // a safety limit, not the assertion
		t.Fatal("the sweep waits for the session whose socket is full")
	}
	slow.mu.Lock()
	writing, queued := slow.writing, len(slow.queue)
	slow.mu.Unlock()
	if !writing || queued == 0 && !slowFC.hasRest() {
		t.Fatal("the peer that does not read took 640 KiB and its ping: its socket was not full")
	}
	var pings atomic.Int64
	slowCl.SetPingHandler(func(string) error { pings.Add(1); return nil })
	_ = slowCl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit))
	for i := range frames {
		_, data, err := slowCl.ReadMessage()
		if err != nil || !strings.HasPrefix(string(data), fmt.Sprint(i, " ")) {
			t.Fatalf("frame %d: %.10q %v", i, data, err)
		}
		if pings.Load() != 0 {
			t.Fatalf("the ping came before frame %d, which was written before it", i)
		}
	}
	go func() {
		for {
			if _, _, err := slowCl.ReadMessage(); err != nil {
				return
			}
		}
	}()
	sigiltest.Eventually(t, "the slow peer's ping", func() bool { return pings.Load() == 1 })
}

// recordConn records what is written to a socket.
type recordConn struct {
	net.Conn
	mu  sync.Mutex
	got bytes.Buffer
}

func (r *recordConn) Write(p []byte) (int, error) {
	r.mu.Lock()
	r.got.Write(p)
	r.mu.Unlock()
	return r.Conn.Write(p)
}

func (r *recordConn) bytes() []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	return bytes.Clone(r.got.Bytes())
}

// TestWireFrameMatchesGorilla: a frame written at once (wireFrame) is
// byte for byte what gorilla writes for the same PreparedMessage, for
// each length encoding (7 bits, 16, 64), and the peer reads it.
func TestWireFrameMatchesGorilla(t *testing.T) {
	for _, n := range []int{0, 1, 125, 126, 127, 0xFFFF, 0x10000, 70000} {
		c, _, cc, cl := batchPair(t)
		rec := &recordConn{Conn: cc.Conn}
		cc.Conn = rec
		payload := bytes.Repeat([]byte{'a' + byte(n%26)}, n)
		pm, err := websocket.NewPreparedMessage(websocket.TextMessage, payload)
		if err != nil {
			t.Fatal(err)
		}
		read := make(chan error, 1)
		go func() {
			_ = cl.SetReadDeadline(time.Now().Add(sigiltest.WaitLimit)) // a safety limit
			_, data, err := cl.ReadMessage()
			if err == nil && !bytes.Equal(data, payload) {
				err = fmt.Errorf("read %d bytes, want %d", len(data), n)
			}
			read <- err
		}()
		if err := c.ws.WritePreparedMessage(pm); err != nil {
			t.Fatal(err)
		}
		if err := <-read; err != nil {
			t.Fatal(err)
		}
		if got, want := rec.bytes(), wireFrame(websocket.TextMessage, payload); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: gorilla wrote % x…, wireFrame % x…", n, got[:min(len(got), 12)], want[:min(len(want), 12)])
		}
	}
	if !bytes.Equal(pingWire, []byte{0x89, 0x00}) {
		t.Fatalf("pingWire % x, want gorilla's empty ping", pingWire)
	}
}

// TestWireNotAfterClose: once a close frame is written (gorilla's, such
// as the answer to the peer's close), a fan-out frame is not written at
// once after it: it goes to the queue, whose writer goes through gorilla,
// which refuses it. The peer reads the close frame, and nothing after it.
func TestWireNotAfterClose(t *testing.T) {
	c, fc, cl := deliverPair(t)
	if err := c.ws.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(sigiltest.WaitLimit)); err != nil {
		t.Fatal(err)
	}
	pm, err := websocket.NewPreparedMessage(websocket.TextMessage, []byte("late"))
	if err != nil {
		t.Fatal(err)
	}
	c.deliverIn("ch", outFrame{pm: pm, wire: wireFrame(websocket.TextMessage, []byte("late"))}, true)
	writerIdle(t, c)
	fc.mu.Lock()
	closed := fc.closed
	fc.mu.Unlock()
	if !closed {
		t.Fatal("the close frame was not seen")
	}
	// Everything the peer gets until the socket closes: the close frame.
	_ = c.ws.NetConn().Close()
	_ = cl.NetConn().SetReadDeadline(time.Now().Add(sigiltest.WaitLimit)) // a safety limit
	got, _ := io.ReadAll(cl.NetConn())
	if want := []byte{closeFrameStart, 2, 0x03, 0xE8}; !bytes.Equal(got, want) {
		t.Fatalf("the peer read % x, want only the close frame % x", got, want)
	}
}
