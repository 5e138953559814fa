package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// Broker carries publications between the nodes of a cluster. A node
// publishes every fan-out, channel publications and direct messages alike,
// as a Publication; the broker hands it to the BrokerEventHandler of every
// node subscribed to its Topic, the publishing node included, and that
// node's hub delivers it to its local sessions. The broker knows nothing of
// sessions, frames or keys: it moves Publications by Topic.
//
// Contract (MemoryBroker is the reference; a networked broker keeps it):
//
//   - Start is called once, by New, before any other method.
//   - Subscribe and Unsubscribe are set operations: after Subscribe(t) the
//     node receives t's publications until Unsubscribe(t); repeating either
//     is harmless. The hub calls Subscribe when the first local session
//     needs t and Unsubscribe when the last one left, never concurrently
//     for one topic and never while holding its own locks.
//   - Publish may keep p after it returns (to queue it, say): the hub
//     gives every publication memory of its own and never changes it.
//   - Publish returns only once the publication is with the broker: a nil
//     error means every node subscribed to the topic at that moment will
//     be handed it (the frame that caused it is then acknowledged to its
//     sender). ErrNoSubscribers means that the broker could tell that no
//     node was subscribed: the publication reached no one, which is not a
//     failure (the hub answers a dm to a subject with no session anywhere
//     with not_found). Any other error means it reached nobody; the hub
//     answers the frame with the error code unavailable.
//   - Order: the publications of one topic published by one node reach each
//     subscribed node's handler in the order Publish was called. Nothing is
//     promised across topics or across publishing nodes.
//   - The handler may be called from any goroutine, concurrently for
//     different topics. It does not block (it queues frames and returns) and
//     it may be called while Publish, on the same node, has not returned.
//   - Errors are returned, never retried silently. The hub logs and counts
//     them (sigil_backend_errors_total{backend="broker"}) and fails closed:
//     a frame whose Publish or Subscribe failed is answered with the error
//     code unavailable, a failed Subscribe is rolled back, and a session
//     whose subject cannot be subscribed is closed with 4006. A failed
//     Unsubscribe does not undo the local change; the hub retries it
//     from its sweeper while the topic stays unwanted.
type Broker interface {
	// Start sets the handler that receives the publications of every
	// topic this node subscribes to.
	Start(h BrokerEventHandler) error
	// Publish hands p to every node subscribed to p.Topic().
	Publish(ctx context.Context, p *Publication) error
	// Subscribe starts the delivery of t's publications to this node.
	Subscribe(ctx context.Context, t Topic) error
	// Unsubscribe stops it.
	Unsubscribe(ctx context.Context, t Topic) error
}

// BrokerEventHandler receives the publications of the topics a node
// subscribed to. The hub implements it.
type BrokerEventHandler interface {
	// HandlePublication delivers p to the node's local sessions. p and its
	// slices must not be modified afterwards.
	HandlePublication(p *Publication)
}

// BrokerResyncHandler is an optional extension of BrokerEventHandler,
// which the hub implements. A broker whose subscriptions were interrupted
// (its connection was lost and re-established) calls HandleResync with the
// topics it subscribed again: their publications made in the gap are lost,
// and the node re-reads the state it keeps from publications (the current
// content keys of those channels).
type BrokerResyncHandler interface {
	HandleResync(topics []Topic)
}

// ErrNoSubscribers is returned by Publish when the broker can tell that no
// node is subscribed to the publication's topic (see Broker). A broker that
// cannot tell returns nil instead; a direct message to a subject with no
// session is then accepted and reaches no one (spec.md §9.5).
var ErrNoSubscribers = errors.New("sigil: no node is subscribed to the topic")

// InterestBroker is an optional Broker extension: Interested reports,
// without a network round trip, whether any node is subscribed to t. The
// hub uses it to skip signing channel deliveries nobody receives. A broker
// that cannot tell locally does not implement it.
type InterestBroker interface {
	Interested(t Topic) bool
}

// TopicKind says what a Topic names.
type TopicKind uint8

// Topic kinds.
const (
	// TopicChannel is a channel: its subscribers receive its
	// publications (deliver, join, leave).
	TopicChannel TopicKind = iota + 1
	// TopicUser is a subject: each of its sessions receives the direct
	// messages sent to it.
	TopicUser
)

// Topic is what a node subscribes to: a channel or a user (subject).
// Topics are comparable and may be used as map keys.
type Topic struct {
	Kind TopicKind
	Name string // the channel name, or the subject
}

// ChannelTopic is the topic of channel ch.
func ChannelTopic(ch string) Topic { return Topic{Kind: TopicChannel, Name: ch} }

// UserTopic is the topic of the direct messages to subject sub.
func UserTopic(sub string) Topic { return Topic{Kind: TopicUser, Name: sub} }

// String returns "channel:<name>" or "user:<name>", for logs.
func (t Topic) String() string {
	switch t.Kind {
	case TopicChannel:
		return "channel:" + t.Name
	case TopicUser:
		return "user:" + t.Name
	}
	return fmt.Sprintf("topic(%d):%s", t.Kind, t.Name)
}

// Publication is one fan-out: exactly one of Channel, Direct and Key is
// set.
type Publication struct {
	// Channel is a channel publication: a deliver, join or leave frame
	// for Channel, signed once by the publishing node. Every node sends
	// Frame, byte for byte, to each of its local subscribers.
	Channel *ChannelPublication
	// Direct is a direct message. Each node makes, signs and sends the
	// direct frame for each local session of the recipient, because an
	// encrypted body is re-sealed for every session (spec.md §11.4).
	Direct *DirectMessage
	// Key is a channel's new content key (spec.md §11.5): every node adds
	// it to the key rings of its local encrypted subscribers of the
	// channel, and sends each of them a key frame.
	Key *ChannelKey
}

// ChannelKey is a channel's current content key, as the nodes share it.
type ChannelKey struct {
	Channel string
	// Version grows with every new key of the channel. A node ignores a
	// key whose version is not greater than that of the key it holds, so
	// a late or repeated publication cannot bring back an older key.
	Version uint64
	// Key is the key itself, in the clear: like DirectMessage.Plain, it
	// must never be logged or cross a network unencrypted.
	Key *protocol.ContentKey
	// Created is when the key was made; it is replaced after
	// Config.ChannelKeyRotation.
	Created time.Time
}

// ChannelPublication is a signed frame for every subscriber of a channel.
type ChannelPublication struct {
	Channel string // the channel
	Frame   []byte // the server-signed deliver, join or leave frame
	// Offset is the position of a deliver frame in the channel's stream
	// (spec.md §20; 0: none, or not a deliver frame), so that a node can
	// merge it with the history it recovers for a subscriber.
	Offset uint64
}

// DirectMessage is a dm, as the receiving nodes need it to build the
// direct frame for each session of the recipient.
type DirectMessage struct {
	To        string          // recipient subject
	Sender    string          // the sender's subject, as its session proved it
	SenderJWK json.RawMessage // the sender's session public key
	Frame     []byte          // the sender's client frame, byte for byte
	// Plain is the decrypted body of an encrypted dm (nil otherwise); the
	// receiving node re-seals it for each recipient session. It is a
	// message body in the clear: it must never be logged, and it must
	// never cross a network unencrypted. A broker that carries
	// publications between machines either seals it before publishing or
	// runs only over an authenticated, encrypted transport (TLS), and
	// refuses to start otherwise.
	Plain json.RawMessage
	// LogIndex is the dm's audit log index (sync audit log, spec.md §21.3).
	LogIndex *uint64
	// Signed and Offset are set, and the members above but To are empty,
	// for a dm stored in its recipient's inbox stream (spec.md §20.11):
	// Signed is the server-signed direct frame, with its position (and
	// log index), that every session of To receives as is; Offset is that
	// position's.
	Signed []byte
	Offset uint64
}

// Topic returns the topic p is published to.
func (p *Publication) Topic() Topic {
	switch {
	case p.Direct != nil:
		return UserTopic(p.Direct.To)
	case p.Channel != nil:
		return ChannelTopic(p.Channel.Channel)
	case p.Key != nil:
		return ChannelTopic(p.Key.Channel)
	}
	return Topic{}
}

// pubWire is the encoding of a Publication between nodes.
type pubWire struct {
	V      int             `json:"v"`
	Ch     string          `json:"ch,omitempty"`
	To     string          `json:"to,omitempty"`
	Sub    string          `json:"sub,omitempty"`
	JWK    json.RawMessage `json:"jwk,omitempty"`
	Frame  string          `json:"frame,omitempty"`
	Plain  json.RawMessage `json:"plain,omitempty"`
	Direct bool            `json:"direct,omitempty"`
	Key    *keyWire        `json:"key,omitempty"`
	Off    uint64          `json:"off,omitempty"` // ChannelPublication.Offset
	Log    *uint64         `json:"log,omitempty"` // DirectMessage.LogIndex
}

// keyWire is a ChannelKey's key, version and creation time (Unix ms).
type keyWire struct {
	Kid string `json:"kid"`
	K   []byte `json:"k"`
	Ver uint64 `json:"ver"`
	At  int64  `json:"at"`
}

// MarshalBinary encodes p for a broker that carries publications between
// processes (version 1, JSON). The encoding contains DirectMessage.Plain
// and ChannelKey.Key as they are: see the rule there.
func (p *Publication) MarshalBinary() ([]byte, error) {
	var w pubWire
	switch {
	case p.Channel != nil && p.Direct == nil && p.Key == nil:
		w = pubWire{V: 1, Ch: p.Channel.Channel, Frame: string(p.Channel.Frame), Off: p.Channel.Offset}
	case p.Direct != nil && p.Channel == nil && p.Key == nil:
		d := p.Direct
		w = pubWire{V: 1, Direct: true, To: d.To, Sub: d.Sender, JWK: d.SenderJWK, Frame: string(d.Frame), Plain: d.Plain, Log: d.LogIndex}
		if d.Offset > 0 {
			if len(d.Signed) == 0 || d.Sender != "" || d.SenderJWK != nil || d.Frame != nil || d.Plain != nil || d.LogIndex != nil {
				return nil, errors.New("sigil: a stored direct message has exactly to, a signed frame and an offset")
			}
			w = pubWire{V: 1, Direct: true, To: d.To, Frame: string(d.Signed), Off: d.Offset}
		}
	case p.Key != nil && p.Channel == nil && p.Direct == nil:
		k := p.Key
		if k.Key == nil || k.Key.Scope != protocol.ChannelScope(k.Channel) {
			return nil, errors.New("sigil: a channel key publication needs the channel's key")
		}
		w = pubWire{V: 1, Ch: k.Channel, Key: &keyWire{Kid: k.Key.ID, K: k.Key.Key, Ver: k.Version, At: k.Created.UnixMilli()}}
	default:
		return nil, errors.New("sigil: a publication has exactly one of Channel, Direct and Key")
	}
	return json.Marshal(w)
}

// UnmarshalBinary decodes what MarshalBinary made. It is strict (no
// unknown, duplicate or case-variant members) and checks that the members
// of the kind are present.
func (p *Publication) UnmarshalBinary(data []byte) error {
	var w pubWire
	if err := protocol.DecodeBody(data, &w); err != nil {
		return fmt.Errorf("sigil: publication: %w", err)
	}
	if w.V != 1 {
		return errors.New("sigil: publication: unknown version")
	}
	if w.Key != nil {
		k := w.Key
		if w.Off != 0 || w.Log != nil || w.Direct || w.Ch == "" || w.Frame != "" || w.To != "" || w.Sub != "" || w.JWK != nil || w.Plain != nil ||
			k.Kid == "" || len(k.K) != protocol.ContentKeySize || k.Ver == 0 {
			return errors.New("sigil: publication: a channel key has exactly ch and key {kid, k (32 bytes), ver > 0, at}")
		}
		*p = Publication{Key: &ChannelKey{Channel: w.Ch, Version: k.Ver, Created: time.UnixMilli(k.At),
			Key: &protocol.ContentKey{ID: k.Kid, Key: k.K, Scope: protocol.ChannelScope(w.Ch)}}}
		return nil
	}
	if w.Frame == "" {
		return errors.New("sigil: publication: no frame")
	}
	if !w.Direct {
		if w.Ch == "" || w.To != "" || w.Sub != "" || w.JWK != nil || w.Plain != nil || w.Log != nil {
			return errors.New("sigil: publication: a channel publication has exactly ch and frame (and off)")
		}
		*p = Publication{Channel: &ChannelPublication{Channel: w.Ch, Frame: []byte(w.Frame), Offset: w.Off}}
		return nil
	}
	if w.Off != 0 {
		if w.Ch != "" || w.To == "" || w.Sub != "" || w.JWK != nil || w.Plain != nil || w.Log != nil {
			return errors.New("sigil: publication: a stored direct message has exactly to, frame and off")
		}
		*p = Publication{Direct: &DirectMessage{To: w.To, Signed: []byte(w.Frame), Offset: w.Off}}
		return nil
	}
	if w.Ch != "" || w.To == "" || w.Sub == "" || len(w.JWK) == 0 {
		return errors.New("sigil: publication: a direct message has to, sub, jwk and frame")
	}
	*p = Publication{Direct: &DirectMessage{To: w.To, Sender: w.Sub, SenderJWK: w.JWK, Frame: []byte(w.Frame), Plain: w.Plain, LogIndex: w.Log}}
	return nil
}
