package server_test

import (
	"regexp"
	"strconv"
	"testing"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

// appendCalls is node e's count of history appends (Redis round trips).
func (e *env) appendCalls() int {
	e.t.Helper()
	m := regexp.MustCompile(`sigil_redis_seconds_count\{op="history.append"\} (\d+)`).FindStringSubmatch(e.metric(`sigil_redis_seconds_count{op="history.append"}`))
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// TestHistoryAppendLearnsOffsetsFromSubscription: a node subscribed to a
// channel with history learns from the publications it receives the
// offsets that other nodes appended, so its next publication signs the
// right offset at once: one append, no conflict to retry.
func TestHistoryAppendLearnsOffsetsFromSubscription(t *testing.T) {
	cl := newClusterEnv(t, 2, sigiltest.StartRedis(t).URL, "conflict:", nil)
	const ch = "rooms.conflict"
	bob := cl.login(1, "bob").connect() // a subscriber on node b
	bob.subscribe(ch)
	carol := cl.login(1, "carol").connect() // a publisher on node b
	alice := cl.login(0, "alice").connect() // a publisher on node a
	carol.pubN(ch, 1, 1)
	bob.recvAct(protocol.ActDeliver)
	b0 := cl.nodes[1].appendCalls()
	alice.pubN(ch, 2, 3) // offsets 2..4, from node a
	for range 3 {
		bob.recvAct(protocol.ActDeliver) // so node b has received them
	}
	carol.pubN(ch, 5, 1)
	if n, _ := bob.openPositioned(bob.recvAct(protocol.ActDeliver)); n != 5 {
		t.Fatalf("got %d", n)
	}
	if got := cl.nodes[1].appendCalls() - b0; got != 1 {
		t.Fatalf("node b made %d appends for one publication after node a's", got)
	}
}
