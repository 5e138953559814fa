package server_test

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// goroutines is every goroutine's stack.
func goroutines() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// sessionGoroutines counts the goroutines that run a session's reader
// (conn.loop): an idle session has none once parked.
func sessionGoroutines(stacks string) int {
	n := 0
	for _, g := range strings.Split(stacks, "\n\n") {
		if strings.Contains(g, "server.(*conn).loop") {
			n++
		}
	}
	return n
}

// maskedFrame is a client frame (RFC 6455 §5.2) with the all-zero mask,
// which leaves the payload as it is: what a client's WebSocket library
// writes, made by hand so that two frames can go in one write.
func maskedFrame(opcode byte, payload []byte) []byte {
	b := []byte{0x80 | opcode}
	switch n := len(payload); {
	case n < 126:
		b = append(b, 0x80|byte(n))
	default:
		b = append(b, 0x80|126)
		b = binary.BigEndian.AppendUint16(b, uint16(n))
	}
	b = append(b, 0, 0, 0, 0)
	return append(b, payload...)
}

// TestIdleReaderParks: between frames an idle session has no goroutine:
// it is parked (conn_park.go), and the parker consumes the empty pongs
// that keep it alive. Everything else still reaches gorilla in order: a
// frame after pongs, a pong and a frame in one write, a pong with a
// payload, a pong split over two writes. Fails on the code before
// parking, whose idle reader waits in NextReader, and on the code with a
// waiter goroutine per parked session.
func TestIdleReaderParks(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("an idle reader parks only on linux (conn_park_linux.go)")
	}
	e := newEnv(t, nil)
	a := e.login("alice").connect()
	a.ping()
	parked := func(what string) {
		t.Helper()
		sigiltest.Eventually(t, what, func() bool {
			return e.srv.ParkedSessions() == 1 && sessionGoroutines(goroutines()) == 0
		}, goroutines)
	}
	parked("the reader parked after a frame")

	// Unsolicited empty pongs (RFC 6455 §5.5.3), as a client answers the
	// server's pings: the waiter takes them and stays parked.
	for range 5 {
		must(t, a.ws.WriteControl(websocket.PongMessage, nil, time.Now().Add(sigiltest.WaitLimit)))
	}
	a.ping()
	parked("the reader parked after pongs and a frame")

	// A pong and a frame in one write: the waiter takes the pong and
	// gorilla reads the frame.
	env := &protocol.Envelope{Action: protocol.ActPing, Corr: "one-write"}
	both := append(maskedFrame(0xA, nil), maskedFrame(0x1, a.sign(env))...)
	_, err := a.ws.NetConn().Write(both)
	must(t, err)
	if m := a.recvAct(protocol.ActPong); m.Corr != "one-write" {
		t.Fatalf("pong cid %q", m.Corr)
	}
	parked("the reader parked after a pong and a frame in one write")

	// A pong with a payload goes to gorilla, and so does a pong split over
	// two writes if the waiter sees only its start.
	_, err = a.ws.NetConn().Write(maskedFrame(0xA, []byte("hi")))
	must(t, err)
	pong := maskedFrame(0xA, nil)
	_, err = a.ws.NetConn().Write(pong[:3])
	must(t, err)
	_, err = a.ws.NetConn().Write(pong[3:])
	must(t, err)
	a.ping()
	parked("the reader parked after odd pongs")

	// The session ends when the client goes: nothing is left parked.
	a.ws.Close()
	sigiltest.Eventually(t, "the session gone", func() bool {
		return len(e.srv.Sessions()) == 0 && e.srv.ParkedSessions() == 0
	}, goroutines)
}

// TestReadAheadBurst: frames that reach the server in one burst, some
// larger than the read-ahead buffer, are each handled once and in order
// (conn_read.go), and the reader parks again once the burst is read.
func TestReadAheadBurst(t *testing.T) {
	e := newEnv(t, nil)
	a := e.login("alice").connect()
	var burst []byte
	var want []string
	for i := range 60 {
		env := &protocol.Envelope{Action: protocol.ActPing, Corr: fmt.Sprintf("p%d", i)}
		if i%20 == 10 {
			// A frame larger than the read-ahead, straddling it.
			body, _ := json.Marshal(strings.Repeat("x", 40<<10))
			env = &protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: body, Corr: fmt.Sprintf("p%d", i)}
		}
		burst = append(burst, maskedFrame(0x1, a.sign(env))...)
		want = append(want, env.Corr)
	}
	_, err := a.ws.NetConn().Write(burst)
	must(t, err)
	for _, cid := range want {
		m := a.recv()
		if m.Corr != cid || (m.Action != protocol.ActPong && m.Action != protocol.ActReply) {
			t.Fatalf("got %s cid %q, want the answer to %q", m.Action, m.Corr, cid)
		}
	}
	if runtime.GOOS == "linux" {
		sigiltest.Eventually(t, "the reader parked after the burst", func() bool {
			return e.srv.ParkedSessions() == 1 && sessionGoroutines(goroutines()) == 0
		}, goroutines)
	}
	a.ping()
}

// TestParkedIdleTimeout: a session idle past parkAfter goes to the parker
// (no goroutine), and there the idle deadline still holds both ways: the
// session that answers the server's pings (each pong moving its idle
// deadline) outlives several idle limits, and the one that does not is
// dropped once its limit passes (the sweeper's idle wheel wakes its
// reader, which meets the deadline), as is the first once it stops answering.
func TestParkedIdleTimeout(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("sessions park only on linux (conn_park_linux.go)")
	}
	e := newEnv(t, func(c *server.Config) {
		// An idle limit of 3 s: well past parkAfter (1 s), and pongs
		// that may come late on a loaded machine.
		c.PingInterval = 500 * time.Millisecond
		c.PongTimeout = 2500 * time.Millisecond
		c.SweepInterval = 50 * time.Millisecond
	})
	live := e.login("alice").connect()
	silent := e.login("bob").connect() // reads nothing, so answers no ping
	defer silent.ws.Close()
	var pings atomic.Int64
	var mute atomic.Bool // set: the live session stops answering
	live.ws.SetPingHandler(func(data string) error {
		if mute.Load() {
			return nil
		}
		pings.Add(1)
		return live.ws.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(sigiltest.WaitLimit))
	})
	ended := make(chan error, 1)
	go func() {
		for {
			if _, _, err := live.ws.ReadMessage(); err != nil {
				ended <- err
				return
			}
		}
	}()
	sigiltest.Eventually(t, "both sessions parked", func() bool { return e.srv.ParkedSessions() == 2 }, goroutines)
	sigiltest.Eventually(t, "the silent session dropped", func() bool { return len(e.srv.Sessions()) == 1 }, goroutines)
	if ss := e.srv.Sessions(); ss[0].ID != live.tok.Session {
		t.Fatalf("the session left is %s, want the live one", ss[0].ID)
	}
	// Six more pings answered: three idle limits, parked all along.
	from := pings.Load()
	sigiltest.Eventually(t, "six more pings", func() bool { return pings.Load() >= from+6 })
	select {
	case err := <-ended:
		t.Fatalf("the live session ended: %v", err)
	default:
	}
	if n := e.srv.ParkedSessions(); n != 1 || len(e.srv.Sessions()) != 1 {
		t.Fatalf("%d parked, %d sessions: want the live one, parked", n, len(e.srv.Sessions()))
	}
	// Once it stops answering, it is dropped in turn: its place on the idle
	// wheel, moved by every pong so far, still comes.
	mute.Store(true)
	sigiltest.Eventually(t, "the session that stopped answering dropped", func() bool { return len(e.srv.Sessions()) == 0 }, goroutines)
}
