package server

import (
	"context"
)

// Presence is the state that the nodes of a server share about channels
// and sessions: who is a member of each channel (spec.md §9.5), each
// channel's current content key (§11.5), and the list of live sessions
// (the administration API, §13.6). MemoryPresence is the single-node
// implementation and the reference; RedisPresence shares it between nodes.
//
// Contract:
//
//   - Start is called once, by New, before any other method, with the
//     server's broker and the function that signs join and leave events.
//   - The hub calls Join when a subject's first session on this node
//     subscribes to a channel, and Leave when its last one on this node
//     leaves (or disconnects), never concurrently for one channel. Join
//     and Leave change the membership of the whole server: the subject
//     joins when its first session on any node joins, and leaves when its
//     last one on any node leaves. Exactly then, the presence publishes the
//     join or leave event (signed with sign) to the channel's subscribers
//     on every node, through the broker, before it returns; the events of
//     one subject in one channel are published in the order of the changes
//     that caused them.
//   - A Join that returns an error changed nothing that lasts (the hub
//     answers the sub with unavailable); a Leave that returns an error
//     still takes effect, at once or as soon as the shared store answers
//     again.
//   - Members of a channel without members is an empty, non-nil slice.
//   - A channel's content key exists while the channel has members: the
//     first ChannelKey call makes it, and it is forgotten when the last
//     member leaves. RotateKey replaces it and publishes the new key
//     (Publication.Key) to the channel's subscribers on every node.
//   - SetSession and RemoveSession record this node's live sessions; they
//     do not block and cannot fail (a shared registry writes them in the
//     background, within a moment). Sessions lists those of every node.
type Presence interface {
	// Start gives the presence the server's broker and the function that
	// makes the signed join or leave event of sub in ch (act is "join" or
	// "leave").
	Start(b Broker, sign PresenceSigner) error
	// Join records that sub has a session in ch on this node. It returns
	// the members of ch (sub included) and whether sub joined the server's
	// membership of ch (its first session anywhere).
	Join(ctx context.Context, ch, sub string) (members []string, joined bool, err error)
	// Leave records that sub has no more sessions in ch on this node. It
	// returns whether sub left the server's membership of ch (its last
	// session anywhere) and how many members ch still has.
	Leave(ctx context.Context, ch, sub string) (left bool, remaining int, err error)
	// Members returns the subjects with a session in ch on any node,
	// sorted.
	Members(ctx context.Context, ch string) ([]string, error)

	// ChannelKey returns ch's current content key, making one if ch has
	// none.
	ChannelKey(ctx context.Context, ch string) (*ChannelKey, error)
	// RotateKey replaces ch's content key with a new one, if its version is
	// still from, and publishes it. It returns nil as well when the key
	// has moved on from from (another node rotated it first) or when ch
	// has no key.
	RotateKey(ctx context.Context, ch string, from uint64) error

	// SetSession records (or updates) a live session of this node; key
	// identifies its connection on this node.
	SetSession(key string, info SessionInfo)
	// RemoveSession forgets the session recorded under key.
	RemoveSession(key string)
	// Sessions lists the live sessions of every node, oldest first.
	Sessions(ctx context.Context) ([]SessionInfo, error)
}

// PresenceSigner makes the signed join or leave event (act) of sub in ch:
// a channel Publication whose frame every subscriber receives.
type PresenceSigner func(act, ch, sub string) (*Publication, error)
