package server_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// The phases of TestClusterRedisOutage, as a publish sees them when it is
// sent and when it is answered. Down begins once Redis is away, and
// Recovering before it is brought back, so a publish sent and answered in
// phaseDown was checked while Redis was away.
const (
	phaseUp         = iota // every node ready
	phaseDown              // Redis stopped or paused
	phaseRecovering        // Redis back, not every node ready yet
)

// sentPub is one publish and what its publisher was answered.
type sentPub struct {
	phase    int  // when it was sent
	answered int  // when its answer arrived
	stopped  bool // sent and answered while Redis was stopped (not paused)
	acked    bool
	at       time.Time // when it was sent
}

// faultPublisher publishes to ch from its session, one publish at a time,
// until stop, recording each publish under "<p>/<k>" with the phase it was
// sent in and its answer.
type faultPublisher struct {
	c       *client
	p       int
	phase   *atomic.Int32
	stopped *atomic.Bool

	mu    sync.Mutex
	sent  map[string]sentPub
	acks  [3]int // by phase
	codes map[protocol.Code]int
	err   error
}

func (f *faultPublisher) run(ch string, stop <-chan struct{}) {
	for k := 0; ; k++ {
		select {
		case <-stop:
			return
		default:
		}
		key := fmt.Sprintf("%d/%d", f.p, k)
		phase, stopped, at := int(f.phase.Load()), f.stopped.Load(), time.Now()
		fr, err := f.c.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Corr: key,
			Body: json.RawMessage(fmt.Sprintf(`{"key":%q}`, key))})
		if err == nil {
			err = f.c.ws.WriteMessage(websocket.TextMessage, fr)
		}
		var m *protocol.Message
		if err == nil {
			_ = f.c.ws.SetReadDeadline(time.Now().Add(clusterWaitLimit))
			var data []byte
			if _, data, err = f.c.ws.ReadMessage(); err == nil {
				m, err = f.c.fv.Verify(data)
			}
		}
		var eb protocol.ErrorBody
		switch {
		case err != nil:
		case m.Corr != key:
			err = fmt.Errorf("answer %s %s for cid %q, want cid %q", m.Action, m.Body, m.Corr, key)
		case m.Action == protocol.ActError:
			if err = json.Unmarshal(m.Body, &eb); err == nil && eb.Code != protocol.CodeUnavailable {
				err = fmt.Errorf("publish answered %s, want a reply or unavailable", m.Body)
			}
		case m.Action != protocol.ActReply:
			err = fmt.Errorf("publish answered %s %s", m.Action, m.Body)
		}
		f.mu.Lock()
		if err != nil {
			f.err = err
			f.mu.Unlock()
			return
		}
		acked := m.Action == protocol.ActReply
		answered := int(f.phase.Load())
		f.sent[key] = sentPub{phase: phase, answered: answered, stopped: stopped && answered == phaseDown, acked: acked, at: at}
		if acked {
			f.acks[phase]++
		} else {
			f.codes[eb.Code]++
			f.mu.Unlock()
			time.Sleep(10 * time.Millisecond) // a client backs off after unavailable
			continue
		}
		f.mu.Unlock()
	}
}

// state returns the publisher's acks in phase, its unavailable answers
// and its error.
func (f *faultPublisher) state(phase int) (int, int, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.acks[phase], f.codes[protocol.CodeUnavailable], f.err
}

// faultSubscriber counts the deliveries on its session until its
// connection is closed.
type faultSubscriber struct {
	c   *client
	mu  sync.Mutex
	got map[string]int
	err error
}

func (s *faultSubscriber) run() {
	// No read deadline: a subscriber may see no frame for longer than any
	// deadline while Redis is away on a loaded machine (the one left by
	// subscribe once broke a run of this test).
	_ = s.c.ws.SetReadDeadline(time.Time{})
	for {
		_, data, err := s.c.ws.ReadMessage()
		var m *protocol.Message
		if err == nil {
			m, err = s.c.fv.Verify(data)
		}
		var key string
		if err == nil && m.Action == protocol.ActDeliver {
			var inner *protocol.Message
			if _, inner, err = protocol.OpenDelivery(m, nil); err == nil {
				var b struct{ Key string }
				err = json.Unmarshal(inner.Body, &b)
				key = b.Key
			}
		}
		s.mu.Lock()
		if err != nil {
			s.err = err
			s.mu.Unlock()
			return
		}
		if key != "" {
			s.got[key]++
		}
		s.mu.Unlock()
	}
}

func (s *faultSubscriber) count(key string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.got[key]
}

// While Redis is away — stopped, then paused (a partition: it accepts
// bytes and never answers) — every node of a cluster refuses the frames
// that need a shared check with unavailable, accepts none unchecked, and
// reports not ready; the sessions stay open. When Redis is back, traffic
// resumes by itself. The publishers' answers are the truth: every publish
// acknowledged while the nodes were ready reaches every subscriber, on
// every node, exactly once; nothing reaches a subscriber twice; nothing
// sent while Redis was stopped reaches anyone.
func TestClusterRedisOutage(t *testing.T) {
	rs := sigiltest.StartRedis(t)
	var lostMu sync.Mutex
	var lost []string // broker connection losses, for the failure message
	start := time.Now()
	cl := newClusterEnv(t, 3, rs.URL, "fault:", func(node int, cc *server.ClusterConfig, c *server.Config) {
		if cc != nil {
			cc.Redis.Observe = func(op string, _ time.Duration, err error) {
				if op == "broker.connection_lost" {
					lostMu.Lock()
					lost = append(lost, fmt.Sprintf("node %d at %v: %v", node, time.Since(start).Round(time.Millisecond), err))
					lostMu.Unlock()
				}
			}
			// Short enough that an outage is seen within a second, long
			// enough that a loaded 2-core machine does not time out the start
			// (300 ms did, once in eight runs beside stress --cpu 2).
			cc.Redis.OpTimeout = time.Second
			cc.Heartbeat = 200 * time.Millisecond
		}
		if c != nil {
			c.ReadyInterval = 20 * time.Millisecond
		}
	})
	const ch = "rooms.fault"
	var subs []*faultSubscriber
	for i, u := range []string{"bob", "carol", "admin"} {
		c := cl.login(i, u).connect()
		c.subscribe(ch)
		s := &faultSubscriber{c: c, got: map[string]int{}}
		go s.run()
		subs = append(subs, s)
	}
	var phase atomic.Int32
	var stopped atomic.Bool
	var pubs []*faultPublisher
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range cl.nodes {
		f := &faultPublisher{c: cl.login(i, "alice").connect(), p: i, phase: &phase, stopped: &stopped,
			sent: map[string]sentPub{}, codes: map[protocol.Code]int{}}
		pubs = append(pubs, f)
		wg.Add(1)
		go func() { defer wg.Done(); f.run(ch, stop) }()
	}
	readyz := func(want int) func() bool {
		return func() bool {
			for _, n := range cl.nodes {
				if st, _ := n.getStatus("/readyz"); st != want {
					return false
				}
			}
			return true
		}
	}
	everyPublisher := func(what string, ok func(acks, unavailable int) bool) {
		t.Helper()
		sigiltest.Eventually(t, what, func() bool {
			for _, f := range pubs {
				acks, unav, err := f.state(int(phase.Load()))
				if err != nil {
					t.Fatalf("publisher %d: %v", f.p, err)
				}
				if !ok(acks, unav) {
					return false
				}
			}
			return true
		})
	}
	everyPublisher("acks before the outage", func(acks, _ int) bool { return acks >= 20 })

	for _, outage := range []struct {
		name     string
		down, up func()
	}{{"stopped", rs.Stop, rs.Restart}, {"paused", rs.Pause, rs.Resume}} {
		unavBefore := make([]int, len(pubs))
		for i, f := range pubs {
			_, unavBefore[i], _ = f.state(phaseUp)
		}
		outage.down()
		stopped.Store(outage.name == "stopped")
		phase.Store(phaseDown)
		sigiltest.Eventually(t, "every node not ready with Redis "+outage.name, readyz(http.StatusServiceUnavailable))
		for _, n := range cl.nodes {
			if st, _ := n.getStatus("/healthz"); st != http.StatusOK {
				t.Fatalf("/healthz = %d with Redis %s", st, outage.name)
			}
		}
		for i, f := range pubs {
			sigiltest.Eventually(t, "publishes refused with Redis "+outage.name, func() bool {
				_, unav, err := f.state(phaseDown)
				if err != nil {
					t.Fatalf("publisher %d: %v", f.p, err)
				}
				return unav >= unavBefore[i]+3
			})
		}
		phase.Store(phaseRecovering)
		stopped.Store(false)
		outage.up()
		sigiltest.Eventually(t, "every node ready with Redis back", readyz(http.StatusOK))
		phase.Store(phaseUp)
		acksBefore := make([]int, len(pubs))
		for i, f := range pubs {
			acksBefore[i], _, _ = f.state(phaseUp)
		}
		for i, f := range pubs {
			sigiltest.Eventually(t, "traffic to resume after Redis was "+outage.name, func() bool {
				acks, _, err := f.state(phaseUp)
				if err != nil {
					t.Fatalf("publisher %d: %v", f.p, err)
				}
				return acks >= acksBefore[i]+20
			})
		}
	}
	close(stop)
	wg.Wait()

	// The truth, from the publishers.
	sent := map[string]sentPub{}
	mustArrive, refused := 0, 0
	for _, f := range pubs {
		for k, p := range f.sent {
			sent[k] = p
			if !p.acked {
				refused++
			}
			if p.acked && p.phase == phaseDown && p.answered == phaseDown {
				t.Errorf("publish %s acknowledged while Redis was away (stopped: %v)", k, p.stopped)
			}
			if p.acked && p.phase == phaseUp {
				mustArrive++
			}
		}
	}
	for si, s := range subs {
		missing := func() []string {
			var m []string
			for k, p := range sent {
				if p.acked && p.phase == phaseUp && s.count(k) == 0 {
					m = append(m, fmt.Sprintf("%s (sent at %v)", k, p.at.Sub(start).Round(time.Millisecond)))
				}
			}
			return m
		}
		sigiltest.Eventually(t, fmt.Sprintf("subscriber %d to get every acknowledged publish", si), func() bool { return len(missing()) == 0 },
			func() string {
				s.mu.Lock()
				serr := s.err
				s.mu.Unlock()
				lostMu.Lock()
				defer lostMu.Unlock()
				m := missing()
				return fmt.Sprintf("subscriber err %v; %d missing, e.g. %v; broker connection losses: %v", serr, len(m), m[:min(5, len(m))], lost)
			})
	}
	// Publish order holds per node, so one last publish from each node,
	// once arrived, follows everything its node published: duplicates
	// would have arrived by then.
	for i, f := range pubs {
		f.c.send(&protocol.Envelope{Action: protocol.ActPub, Channel: ch, Corr: "last",
			Body: json.RawMessage(fmt.Sprintf(`{"key":"last/%d"}`, i))})
		f.c.recvAct(protocol.ActReply)
	}
	for si, s := range subs {
		sigiltest.Eventually(t, "the last publishes", func() bool {
			for i := range pubs {
				if s.count(fmt.Sprintf("last/%d", i)) == 0 {
					return false
				}
			}
			return true
		})
		s.mu.Lock()
		for k, n := range s.got {
			p, known := sent[k]
			switch {
			case strings.HasPrefix(k, "last/"):
			case !known:
				t.Errorf("subscriber %d got %s, which was never published", si, k)
			case n > 1:
				t.Errorf("subscriber %d got %s %d times", si, k, n)
			case p.stopped:
				t.Errorf("subscriber %d got %s, sent while Redis was stopped", si, k)
			}
		}
		if s.err != nil {
			t.Errorf("subscriber %d: %v", si, s.err)
		}
		s.mu.Unlock()
	}
	t.Logf("%d publishes: %d refused with unavailable, %d acknowledged while every node was ready and delivered once to each of %d subscribers",
		len(sent), refused, mustArrive, len(subs))
}
