package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// drainSide is what one connection saw until the server closed it.
type drainSide struct {
	acked     map[string]bool // cids of own frames answered with a reply
	delivered []string        // cids of the inner frames delivered to it
	close     int             // the close code (0: no close frame)
	err       error           // a frame that did not verify
}

// readUntilClose reads c's frames until the connection ends.
func readUntilClose(c *client, onReply func()) *drainSide {
	d := &drainSide{acked: map[string]bool{}}
	for {
		_ = c.ws.SetReadDeadline(time.Now().Add(20 * time.Second))
		_, data, err := c.ws.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				d.close = ce.Code
			}
			return d
		}
		m, err := c.fv.Verify(data)
		if err != nil {
			d.err = err
			return d
		}
		switch m.Action {
		case protocol.ActReply:
			d.acked[m.Corr] = true
			if onReply != nil {
				onReply()
			}
		case protocol.ActDeliver:
			_, inner, err := protocol.OpenDelivery(m, nil)
			if err != nil {
				d.err = err
				return d
			}
			d.delivered = append(d.delivered, inner.Corr)
		}
	}
}

type lateAckBroker struct{ *server.MemoryBroker }

func (b lateAckBroker) Publish(ctx context.Context, p *server.Publication) error {
	err := b.MemoryBroker.Publish(ctx, p)
	time.Sleep(2 * time.Millisecond)
	return err
}

// TestShutdownDrains publishes continuously through a Shutdown: the server
// stops reading, answers every frame it read, writes the queues and closes
// with 1001. Every frame delivered to a subscriber was acknowledged to its
// sender, and every connection sees 1001.
func TestShutdownDrains(t *testing.T) {
	// ES256 throughout: P-256 runs in assembly, which the race detector
	// does not slow down as it does the pure-Go Ed25519.
	sk, err := protocol.GenerateKey(protocol.ES256, nil)
	must(t, err)
	// A broker that acknowledges a publish 2 ms after it delivered it, as a
	// networked one does: a publish is often between its delivery and its
	// reply when the shutdown comes.
	e := newEnv(t, func(c *server.Config) {
		c.Keys = []*protocol.PrivateKey{sk}
		c.Broker = lateAckBroker{server.NewMemoryBroker()}
	})
	var subs, pubs []*client
	for _, u := range []string{"bob", "carol", "bob", "carol"} {
		c := e.loginAlg(u, protocol.ES256).connect()
		c.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.drain", Corr: "s"})
		c.recvAct(protocol.ActReply)
		subs = append(subs, c)
	}
	for range 8 {
		pubs = append(pubs, e.loginAlg("alice", protocol.ES256).connect())
	}
	results := make([]*drainSide, len(subs)+len(pubs))
	var wg sync.WaitGroup
	for i, c := range subs {
		wg.Add(1)
		go func() { defer wg.Done(); results[i] = readUntilClose(c, nil) }()
	}
	progress := make(chan struct{}, 1<<16)
	stop := make(chan struct{})
	for i, c := range pubs {
		window := make(chan struct{}, 4) // frames in flight per publisher
		wg.Add(2)
		go func() {
			defer wg.Done()
			results[len(subs)+i] = readUntilClose(c, func() {
				<-window
				progress <- struct{}{}
			})
		}()
		go func() {
			defer wg.Done()
			for {
				select {
				case window <- struct{}{}:
				case <-stop:
					return
				}
				id := uuid.NewString()
				fr, err := c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.drain", Corr: id, Body: json.RawMessage(`"x"`)})
				if err != nil || c.ws.WriteMessage(websocket.TextMessage, fr) != nil {
					return // the server closed the connection
				}
			}
		}()
	}
	for range 300 { // publishing is well under way
		select {
		case <-progress:
		case <-time.After(20 * time.Second):
			t.Fatal("no progress before the shutdown")
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	t0 := time.Now()
	must(t, e.srv.Shutdown(ctx))
	t.Logf("Shutdown took %v", time.Since(t0))
	close(stop) // the writers end, if their sockets have not failed them yet
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatal("connections still open after the shutdown")
	}

	acked := map[string]bool{}
	nAcked := 0
	for _, r := range results[len(subs):] {
		for id := range r.acked {
			acked[id] = true
		}
		nAcked += len(r.acked)
	}
	for i, r := range results {
		if r.err != nil {
			t.Fatalf("connection %d: %v", i, r.err)
		}
		if r.close != websocket.CloseGoingAway {
			t.Errorf("connection %d closed with %d, want 1001", i, r.close)
		}
	}
	lost := 0
	for i, r := range results[:len(subs)] {
		for _, id := range r.delivered {
			if !acked[id] {
				if lost++; lost <= 5 {
					t.Errorf("subscriber %d got %s, which its sender never saw acknowledged", i, id)
				}
			}
		}
	}
	delivered := 0
	for _, r := range results[:len(subs)] {
		delivered += len(r.delivered)
	}
	t.Logf("acknowledged %d publishes; %d deliveries to %d subscribers; %d delivered without acknowledgement",
		nAcked, delivered, len(subs), lost)
}
