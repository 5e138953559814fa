package server

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

// TestRedisOutcomes checks RedisOutcomes against a real Redis: a success
// recorded by the publishing script needs no write of its own and is
// never replaced by a failure recorded after it (a node that stopped
// waiting for a publication that ran after all); a failure is recorded
// apart; a dm to nobody records no success; an answer expires with its
// frame's id; an answer never recorded is unknown once the wait ends.
func TestRedisOutcomes(t *testing.T) {
	r := standalone(t).node(t)
	seal, err := newClusterSeal(make([]byte, 32), time.Now)
	noErr(t, err)
	b := newRedisBroker(r, seal, 4)
	o := newRedisOutcomes(b)
	ctx := context.Background()
	sid := uuid.NewString()
	frame := func(act string) *protocol.Envelope {
		env := &protocol.Envelope{ID: uuid.NewString(), Session: sid, Action: act}
		if act == protocol.ActDM {
			env.To = "nobody"
		} else {
			env.Channel = "rooms.out"
		}
		return env
	}
	answer := func(env *protocol.Envelope) (*protocol.Error, bool) {
		t.Helper()
		actx, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
		defer cancel()
		a, known, err := o.Answer(actx, sid, env)
		noErr(t, err)
		return a, known
	}
	until := time.Now().Add(30 * time.Second)

	// Published: the script records the success.
	pub := frame(protocol.ActPub)
	pctx, end := o.Begin(ctx, sid, pub, until)
	err = b.Publish(pctx, &Publication{Channel: &ChannelPublication{Channel: pub.Channel, Frame: []byte("f")}})
	if err != ErrNoSubscribers {
		t.Fatalf("publish: %v", err)
	}
	if rec := outcomeFor(pctx, ChannelTopic(pub.Channel)); rec == nil || !rec.recorded.Load() {
		t.Fatal("the publishing script did not record the success")
	}
	checkTTL(t, r, o.key(sid, pub), 30*time.Second)
	// A failure after it (the node gave up waiting) does not replace it.
	_, end2 := o.Begin(ctx, sid, pub, until)
	end2(&protocol.Error{Code: protocol.CodeUnavailable, Message: "gave up"})
	end(nil)
	if a, known := answer(pub); !known || a != nil {
		t.Fatalf("published: %v %v", a, known)
	}

	// A dm to nobody: the publication records nothing, end records not_found.
	dm := frame(protocol.ActDM)
	dctx, end := o.Begin(ctx, sid, dm, until)
	err = b.Publish(dctx, &Publication{Direct: &DirectMessage{To: dm.To, Sender: "alice", Frame: []byte("f")}})
	if err != ErrNoSubscribers {
		t.Fatalf("dm: %v", err)
	}
	if a, known := answer(dm); known {
		t.Fatalf("a dm to nobody answered %v before its end", a)
	}
	end(&protocol.Error{Code: protocol.CodeNotFound, Message: "the recipient has no session", Ref: dm.ID})
	if a, known := answer(dm); !known || a == nil || a.Code != protocol.CodeNotFound || a.Message != "the recipient has no session" {
		t.Fatalf("dm to nobody: %v %v", a, known)
	}

	// Never recorded: unknown once the wait ends.
	if a, known := answer(frame(protocol.ActPub)); known {
		t.Fatalf("unknown frame answered %v", a)
	}

	// An answer expires with its frame's id.
	short := frame(protocol.ActPub)
	_, end = o.Begin(ctx, sid, short, time.Now().Add(50*time.Millisecond))
	end(nil)
	sigiltest.Eventually(t, "the answer to expire", func() bool { return !exists(t, r, o.key(sid, short)) })
}
