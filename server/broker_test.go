package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/protocol"
	"github.com/sigil-ws/sigil/server"
)

// recorder is a BrokerEventHandler that records what it is handed.
type recorder struct {
	mu  sync.Mutex
	got []*server.Publication
	ch  chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 1024)} }

func (r *recorder) HandlePublication(p *server.Publication) {
	r.mu.Lock()
	r.got = append(r.got, p)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

// wait waits until n publications arrived and returns them.
func (r *recorder) wait(t *testing.T, n int) []*server.Publication {
	t.Helper()
	for {
		r.mu.Lock()
		got := slices.Clone(r.got)
		r.mu.Unlock()
		if len(got) >= n {
			return got
		}
		select {
		case <-r.ch:
		case <-time.After(30 * time.Second): // no progress at all: lost
			t.Fatalf("%d publications handed over, want %d", len(got), n)
		}
	}
}

// brokerContract checks the Broker contract of broker.go on b, which has
// not been started: topics as sets, delivery to subscribed topics only,
// per-topic order, and publications handed over intact. A broker that
// needs a network runs it against its real server.
func brokerContract(t *testing.T, b server.Broker) {
	ctx := context.Background()
	r := newRecorder()
	must(t, b.Start(r))
	lobby, alice := server.ChannelTopic("rooms.lobby"), server.UserTopic("alice")
	chPub := func(i int) *server.Publication {
		return &server.Publication{Channel: &server.ChannelPublication{Channel: "rooms.lobby", Frame: []byte{'f', byte('0' + i)}}}
	}
	dm := &server.Publication{Direct: &server.DirectMessage{To: "alice", Sender: "bob", SenderJWK: json.RawMessage(`{"kty":"OKP"}`),
		Frame: []byte("a.b.c"), Plain: json.RawMessage(`{"secret":1}`)}}

	// nobody subscribed: reaches no one, and a broker that can tell says so
	noSubscribers := func(err error) {
		t.Helper()
		if err != nil && !errors.Is(err, server.ErrNoSubscribers) {
			t.Fatal(err)
		}
	}
	noSubscribers(b.Publish(ctx, chPub(0)))
	must(t, b.Subscribe(ctx, lobby))
	must(t, b.Subscribe(ctx, lobby)) // a set: the second is harmless
	must(t, b.Subscribe(ctx, alice))
	ck, err := protocol.NewContentKey(protocol.ChannelScope("rooms.lobby"), nil)
	must(t, err)
	created := time.UnixMilli(time.Now().UnixMilli())
	for i := 1; i <= 5; i++ {
		must(t, b.Publish(ctx, chPub(i)))
		if i == 3 {
			must(t, b.Publish(ctx, &server.Publication{Key: &server.ChannelKey{Channel: "rooms.lobby", Version: 7, Key: ck, Created: created}}))
		}
	}
	must(t, b.Publish(ctx, dm))
	got := r.wait(t, 7)
	var order []string
	for _, p := range got {
		switch {
		case p.Channel != nil:
			order = append(order, string(p.Channel.Frame))
		case p.Key != nil:
			k := p.Key
			if p.Topic() != lobby || k.Version != 7 || !k.Created.Equal(created) || k.Key.ID != ck.ID ||
				string(k.Key.Key) != string(ck.Key) || k.Key.Scope != ck.Scope {
				t.Fatalf("key handed over as %+v", k)
			}
			order = append(order, "key")
		default:
			if d := p.Direct; d == nil || p.Topic() != alice || d.Sender != "bob" || string(d.Frame) != "a.b.c" ||
				string(d.SenderJWK) != `{"kty":"OKP"}` || string(d.Plain) != `{"secret":1}` {
				t.Fatalf("direct message handed over as %+v", p)
			}
		}
	}
	if !slices.Equal(order, []string{"f1", "f2", "f3", "key", "f4", "f5"}) {
		t.Fatalf("channel publications handed over as %v", order)
	}
	must(t, b.Unsubscribe(ctx, lobby))
	must(t, b.Unsubscribe(ctx, lobby)) // harmless too
	noSubscribers(b.Publish(ctx, chPub(6)))
	must(t, b.Publish(ctx, dm)) // alice is still subscribed: a fence
	if got := r.wait(t, 8); len(got) != 8 || got[7].Direct == nil {
		t.Fatalf("after Unsubscribe: %d publications, the last %+v", len(got), got[len(got)-1])
	}
	if ib, ok := b.(server.InterestBroker); ok {
		if ib.Interested(lobby) || !ib.Interested(alice) {
			t.Fatal("Interested does not follow Subscribe/Unsubscribe")
		}
	}
}

func TestMemoryBrokerContract(t *testing.T) { brokerContract(t, server.NewMemoryBroker()) }

func TestCodecBrokerContract(t *testing.T) { brokerContract(t, newCodecBroker()) }

// codecBroker is a Broker that carries every publication through its wire
// encoding (Publication.MarshalBinary) and hands it over on a goroutine of
// its own, as a broker between processes does. It is not an
// InterestBroker: it cannot tell whether a user has a session.
type codecBroker struct {
	mu     sync.Mutex
	h      server.BrokerEventHandler
	topics map[server.Topic]bool
	q      chan []byte
}

func newCodecBroker() *codecBroker {
	return &codecBroker{topics: map[server.Topic]bool{}, q: make(chan []byte, 4096)}
}

func (b *codecBroker) Start(h server.BrokerEventHandler) error {
	b.h = h
	go func() {
		for data := range b.q {
			var p server.Publication
			if err := p.UnmarshalBinary(data); err != nil {
				panic(err)
			}
			b.h.HandlePublication(&p)
		}
	}()
	return nil
}

func (b *codecBroker) Publish(_ context.Context, p *server.Publication) error {
	data, err := p.MarshalBinary()
	if err != nil {
		return err
	}
	b.mu.Lock() // subscribers as of now receive it, as with Redis pub/sub
	defer b.mu.Unlock()
	if b.topics[p.Topic()] {
		b.q <- data
	}
	return nil
}

func (b *codecBroker) Subscribe(_ context.Context, t server.Topic) error {
	b.mu.Lock()
	b.topics[t] = true
	b.mu.Unlock()
	return nil
}

func (b *codecBroker) Unsubscribe(_ context.Context, t server.Topic) error {
	b.mu.Lock()
	delete(b.topics, t)
	b.mu.Unlock()
	return nil
}

// b64zero32 is 32 zero bytes in standard base64, as encoding/json writes []byte.
const b64zero32 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="

// TestPublicationEncoding: the encoding between nodes round-trips and is
// strict.
func TestPublicationEncoding(t *testing.T) {
	for _, p := range []*server.Publication{
		{Channel: &server.ChannelPublication{Channel: "rooms.a", Frame: []byte("h.p.s")}},
		{Direct: &server.DirectMessage{To: "bob", Sender: "alice", SenderJWK: json.RawMessage(`{"kty":"OKP","crv":"Ed25519","x":"AA"}`), Frame: []byte("h.p.s")}},
		{Direct: &server.DirectMessage{To: "bob", Sender: "alice", SenderJWK: json.RawMessage(`{"kty":"OKP"}`), Frame: []byte("h.p.s"), Plain: json.RawMessage(`"hi"`)}},
		{Key: &server.ChannelKey{Channel: "rooms.a", Version: 3, Created: time.UnixMilli(1767225600000),
			Key: &protocol.ContentKey{ID: "k1", Key: make([]byte, 32), Scope: "ch:rooms.a"}}},
	} {
		data, err := p.MarshalBinary()
		must(t, err)
		var q server.Publication
		must(t, q.UnmarshalBinary(data))
		again, err := q.MarshalBinary()
		must(t, err)
		if string(again) != string(data) || q.Topic() != p.Topic() {
			t.Fatalf("round trip: %s became %s", data, again)
		}
	}
	for _, bad := range []string{
		`{"v":1,"ch":"rooms.a"}`,                                                                      // no frame
		`{"v":2,"ch":"rooms.a","frame":"x"}`,                                                          // unknown version
		`{"v":1,"ch":"rooms.a","frame":"x","to":"bob"}`,                                               // channel with direct members
		`{"v":1,"direct":true,"to":"bob","frame":"x"}`,                                                // direct without sender
		`{"v":1,"ch":"rooms.a","frame":"x","x":1}`,                                                    // unknown member
		`{"v":1,"ch":"rooms.a","frame":"x","ch":"rooms.b"}`,                                           // duplicate member
		`{"v":1,"CH":"rooms.a","frame":"x"}`,                                                          // case variant
		`{"v":1,"direct":true,"ch":"a","to":"b","sub":"c","jwk":{},"frame":"x"}`,                      // both kinds
		`{"v":1,"ch":"rooms.a","key":{"kid":"k","k":"AAAA","ver":1,"at":0}}`,                          // a key of 3 bytes
		`{"v":1,"ch":"rooms.a","key":{"kid":"k","k":"` + b64zero32 + `","ver":0,"at":0}}`,             // version 0
		`{"v":1,"ch":"rooms.a","frame":"x","key":{"kid":"k","k":"` + b64zero32 + `","ver":1,"at":0}}`, // key and frame
		`{"v":1,"ch":"rooms.a","key":{"kid":"k","k":"` + b64zero32 + `","ver":1,"at":0,"scope":"x"}}`, // unknown member
	} {
		var q server.Publication
		if err := q.UnmarshalBinary([]byte(bad)); err == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	if _, err := (&server.Publication{}).MarshalBinary(); err == nil {
		t.Error("an empty publication encoded")
	}
}

// TestHubOverCodecBroker: the hub needs nothing from a broker but the
// contract. Over a broker that encodes every publication and hands it over
// asynchronously, deliveries, presence and direct messages (an encrypted
// one re-sealed per session) work end to end over real sockets.
func TestHubOverCodecBroker(t *testing.T) {
	e := newEnv(t, func(c *server.Config) { c.Broker = newCodecBroker() })
	enc := func(user string) *client { return e.loginEncrypted(user).connect() }
	alice, bob := enc("alice"), enc("bob")
	bob.send(&protocol.Envelope{Action: protocol.ActSub, Channel: "rooms.x"})
	bob.recvAct(protocol.ActReply)
	if j := bob.recvAct(protocol.ActJoin); j.Channel != "rooms.x" {
		t.Fatalf("join %s", j.Body)
	}
	alice.send(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.x", Body: json.RawMessage(`"hi"`), Corr: "p"})
	alice.recvAct(protocol.ActReply)
	if snd, inner, err := protocol.OpenDelivery(bob.recvAct(protocol.ActDeliver), nil); err != nil || snd.Subject != "alice" || string(inner.Body) != `"hi"` {
		t.Fatalf("deliver: %v %v", snd, err)
	}
	sealed, err := protocol.SealBody(alice.keyFor(protocol.ScopeSession), []byte(`"for bob"`))
	must(t, err)
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "bob", Enc: sealed, Corr: "d"})
	alice.recvAct(protocol.ActReply)
	_, inner, err := protocol.OpenDelivery(bob.recvAct(protocol.ActDirect), bob.keys)
	must(t, err)
	if string(inner.Body) != `"for bob"` {
		t.Fatalf("direct %s", inner.Body)
	}
	// A broker that cannot tell who is connected: a dm to nobody is
	// accepted and reaches no one (spec.md §9.5).
	alice.send(&protocol.Envelope{Action: protocol.ActDM, To: "nobody", Body: json.RawMessage(`1`), Corr: "n"})
	alice.recvAct(protocol.ActReply)
}
