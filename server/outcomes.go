package server

import (
	"context"
	"strings"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// OutcomeStore keeps the answer of each accepted pub and dm frame of a
// session until the frame leaves the replay window (its ts + skew), so
// that a copy of the frame that the client sends again after a lost
// connection is answered as its first copy was — a reply
// {"duplicate": true}, or the same error — and not delivered again
// (spec.md §20.10). A store shared by the nodes (RedisOutcomes) answers
// the copy on whichever node it reaches.
//
// Contract (MemoryOutcomes is the reference):
//
//   - Begin is called once per accepted pub or dm frame (its id is in the
//     replay state), before its action runs; the caller runs the action
//     with the context Begin returns and then calls end exactly once with
//     its answer (nil: it succeeded). A store may record a success in the
//     step that publishes the frame (the context carries what it needs),
//     so that end costs nothing more.
//   - Answer returns the recorded answer of frame env of session sid
//     (known true; answer nil for a success). While the frame may still
//     be in hand (on this node or another), it waits for the answer,
//     until ctx ends; it reports known false if none was recorded by
//     then.
type OutcomeStore interface {
	Begin(ctx context.Context, sid string, env *protocol.Envelope, until time.Time) (context.Context, func(answer *protocol.Error))
	Answer(ctx context.Context, sid string, env *protocol.Envelope) (answer *protocol.Error, known bool, err error)
}

// outcomeWait bounds the wait for the answer of a frame still in hand
// (on the connection that dropped, or on another node) when its copy
// arrives.
const outcomeWait = 5 * time.Second

// An answer is recorded as "+" (success) or "-code:message".
const outcomeOK = "+"

func encodeOutcome(answer *protocol.Error) string {
	if answer == nil {
		return outcomeOK
	}
	return "-" + string(answer.Code) + ":" + answer.Message
}

func decodeOutcome(v string) (*protocol.Error, bool) {
	if v == outcomeOK {
		return nil, true
	}
	code, msg, ok := strings.Cut(strings.TrimPrefix(v, "-"), ":")
	if !ok || !strings.HasPrefix(v, "-") || code == "" {
		return nil, false
	}
	return &protocol.Error{Code: protocol.Code(code), Message: msg}, true
}

// outcomeTopic is the topic a pub or dm frame is published to.
func outcomeTopic(env *protocol.Envelope) Topic {
	if env.Action == protocol.ActDM {
		return UserTopic(env.To)
	}
	return ChannelTopic(env.Channel)
}
