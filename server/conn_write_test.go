package server

import (
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
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
	c := &conn{srv: &Server{cfg: Config{WriteTimeout: 5 * time.Second}}, ws: ws}
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
