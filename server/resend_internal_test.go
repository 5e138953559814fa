package server

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

// testOutcomes wraps a MemoryOutcomes with the calls of the tests below:
// begin a frame whose window is its ts + 30 s, at a given time; await its
// answer.
type testOutcomes struct {
	*MemoryOutcomes
	at time.Time
}

func newTestOutcomes(t *testing.T) *testOutcomes {
	t.Helper()
	o := &testOutcomes{}
	o.MemoryOutcomes = NewMemoryOutcomes(func() time.Time { return o.at })
	return o
}

func (o *testOutcomes) begin(sid string, m *protocol.Message, now time.Time) func(*protocol.Error) {
	o.at = now
	_, end := o.Begin(context.Background(), sid, &m.Envelope, m.Time().Add(30*time.Second))
	return end
}

func (o *testOutcomes) await(ctx context.Context, sid, id string) (known bool, refused *protocol.Error) {
	ctx, cancel := context.WithTimeout(ctx, outcomeWait)
	defer cancel()
	refused, known, _ = o.Answer(ctx, sid, &protocol.Envelope{ID: id})
	return known, refused
}

func outcomeMsg(i int, ts time.Time) *protocol.Message {
	return &protocol.Message{Envelope: protocol.Envelope{ID: fmt.Sprintf("00000000-0000-4000-8000-%012x", i), TS: ts.UnixMilli()}}
}

const outcomeSid = "11111111-2222-4333-8444-555555555555"

// TestOutcomesWindow: an answered frame is known, with its refusal if it
// was refused, until its ts + skew, and forgotten after it, without a scan
// of the table; the table's memory is given back.
func TestOutcomesWindow(t *testing.T) {
	o := newTestOutcomes(t)
	t0 := time.UnixMilli(1_700_000_000_000)
	const n = 3000
	for i := range n {
		end := o.begin(outcomeSid, outcomeMsg(i, t0.Add(time.Duration(i)*time.Millisecond)), t0)
		if i%2 == 1 {
			end(&protocol.Error{Code: protocol.CodeNotFound, Message: "no"})
		} else {
			end(nil)
		}
	}
	ctx := context.Background()
	for _, i := range []int{0, 1, n - 1} {
		known, refused := o.await(ctx, outcomeSid, outcomeMsg(i, t0).ID)
		if !known || (refused != nil) != (i%2 == 1) {
			t.Fatalf("frame %d: known %v refused %v", i, known, refused)
		}
	}
	if known, _ := o.await(ctx, "11111111-2222-4333-8444-000000000000", outcomeMsg(0, t0).ID); known {
		t.Fatal("another session's frame is known")
	}
	// One more frame, 30 s + 1.5 s later: the first 1,500 are past
	// their window, the others not.
	o.begin(outcomeSid, outcomeMsg(n, t0), t0.Add(30*time.Second+1500*time.Millisecond))(nil)
	o.mu.Lock()
	kept, refused := len(o.done), len(o.refused)
	o.mu.Unlock()
	if kept != n-1500+1 || refused != (n-1500)/2 {
		t.Fatalf("after the window of the first 1500: %d answers, %d refusals kept", kept, refused)
	}
	if known, _ := o.await(ctx, outcomeSid, outcomeMsg(1499, t0).ID); known {
		t.Fatal("a frame past its window is still known")
	}
	if known, _ := o.await(ctx, outcomeSid, outcomeMsg(1501, t0).ID); !known {
		t.Fatal("a frame within its window is forgotten")
	}
	o.begin(outcomeSid, outcomeMsg(n+1, t0), t0.Add(time.Hour))(nil)
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(o.done) != 1 || len(o.refused) != 0 || len(o.order)-o.head != 1 {
		t.Fatalf("an hour later: %d answers, %d refusals, %d in order", len(o.done), len(o.refused), len(o.order)-o.head)
	}
}

// TestOutcomesAwaitPending: a copy that arrives while its first frame is
// being handled gets the first frame's answer once it is known.
func TestOutcomesAwaitPending(t *testing.T) {
	o := newTestOutcomes(t)
	now := time.Now()
	m := outcomeMsg(7, now)
	end := o.begin(outcomeSid, m, now)
	type answer struct {
		known   bool
		refused *protocol.Error
	}
	got := make(chan answer, 1)
	go func() {
		k, r := o.await(context.Background(), outcomeSid, m.ID)
		got <- answer{k, r}
	}()
	// Answer once the copy waits (its channel is in the table).
	k := mustKey(t, m.ID)
	sigiltest.Eventually(t, "the copy waits", func() bool {
		o.mu.Lock()
		defer o.mu.Unlock()
		return o.pending[k] != nil
	})
	end(&protocol.Error{Code: protocol.CodeForbidden, Message: "no"})
	if a := <-got; !a.known || a.refused == nil || a.refused.Code != protocol.CodeForbidden {
		t.Fatalf("the copy's answer: %+v", a)
	}
}

func mustKey(t *testing.T, id string) outcomeKey {
	k, ok := keyOf(outcomeSid, id)
	if !ok {
		t.Fatalf("not a UUID: %s", id)
	}
	return k
}

// TestOutcomesAllocs: recording a frame's answer allocates once (the end
// function), nothing the garbage collector must trace for its window;
// the table of pointers it replaced allocated three objects per frame
// and kept them all for the window.
func TestOutcomesAllocs(t *testing.T) {
	o := newTestOutcomes(t)
	now := time.Now()
	msgs := make([]*protocol.Message, 2000)
	for i := range msgs {
		msgs[i] = outcomeMsg(i, now)
	}
	i := 0
	allocs := testing.AllocsPerRun(1000, func() {
		o.begin(outcomeSid, msgs[i], now)(nil)
		i++
	})
	// The map and the order slice grow now and then: on average well
	// under one more.
	if allocs > 1.5 {
		t.Fatalf("%.2f allocations per recorded frame, want 1", allocs)
	}
}
