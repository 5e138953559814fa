package server_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// serveHardened serves e.srv with Server.HTTPServer on a second loopback
// listener and returns an env whose URL is that listener's.
func serveHardened(t *testing.T, e *env) *env {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	hs := e.srv.HTTPServer(nil)
	go func() { _ = hs.Serve(ln) }()
	t.Cleanup(func() { _ = hs.Close() })
	return &env{t: t, srv: e.srv, url: "http://" + ln.Addr().String()}
}

// closedByServer waits until the server closes c: a read returns EOF or a
// reset, not the test's own deadline (a generous safety limit).
func closedByServer(t *testing.T, c net.Conn, what string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(30 * time.Second))
	_, err := io.Copy(io.Discard, c)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("%s: the server kept the connection open", what)
	}
}

// The http.Server that HTTPServer builds drops an idle keep-alive
// connection, a request whose body is trickled, and one whose headers are
// trickled, each after its timeout; a WebSocket session opened before all
// of them, older than every timeout by then, is not affected; and headers
// are bounded.
func TestHTTPServerTimeouts(t *testing.T) {
	short := 400 * time.Millisecond
	e := newEnv(t, func(c *server.Config) {
		c.HTTP = server.HTTPConfig{ReadHeaderTimeout: short, ReadTimeout: short, WriteTimeout: short, IdleTimeout: short}
	})
	h := serveHardened(t, e)
	ws := e.login("alice") // logins on the test server, which has no short timeouts
	ws.e = h
	ws.connect().ping()
	addr := strings.TrimPrefix(h.url, "http://")
	dial := func() net.Conn {
		c, err := net.Dial("tcp", addr)
		must(t, err)
		t.Cleanup(func() { c.Close() })
		return c
	}

	// An idle keep-alive connection, after one request.
	idle := dial()
	_, err := io.WriteString(idle, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
	must(t, err)
	resp, err := http.ReadResponse(bufio.NewReader(idle), nil)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Close {
		t.Fatalf("healthz %d close=%v", resp.StatusCode, resp.Close)
	}
	closedByServer(t, idle, "idle keep-alive connection")

	// A body trickled a byte at a time (it would take hours).
	trickle := func(c net.Conn, head string) {
		_, err := io.WriteString(c, head)
		must(t, err)
		go func() {
			for {
				time.Sleep(20 * time.Millisecond)
				if _, err := c.Write([]byte{' '}); err != nil {
					return
				}
			}
		}()
	}
	body := dial()
	trickle(body, "POST /v1/token HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n{")
	closedByServer(t, body, "trickled body")

	// Headers trickled a byte at a time.
	hdr := dial()
	trickle(hdr, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
	closedByServer(t, hdr, "trickled headers")

	// The WebSocket, older than every timeout now, still works both ways.
	ws.ping()
	ws.ping()

	// Headers: a Sigil-Proof-sized header fits, a larger one is refused.
	for size, want := range map[int]int{protocol.DefaultMaxFrame: 200, protocol.DefaultMaxFrame + 64<<10: 431} {
		req, _ := http.NewRequest("GET", h.url+"/healthz", nil)
		req.Header.Set("X-Big", strings.Repeat("a", size))
		resp, err := http.DefaultClient.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%d-byte header: %d, want %d", size, resp.StatusCode, want)
		}
	}
}
