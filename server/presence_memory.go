package server

import (
	"context"
	"errors"
	"maps"
	"slices"
	"sync"
	"time"

	"github.com/sigil-ws/sigil/protocol"
)

// MemoryPresence is the single-node Presence: channel members, content
// keys and sessions in memory. It publishes join, leave and key events
// through the broker given to Start while it holds its lock, so that they
// leave in the order of the changes.
type MemoryPresence struct {
	now func() time.Time

	mu       sync.Mutex
	b        Broker
	sign     PresenceSigner
	members  map[string]map[string]struct{} // channel -> subjects
	keys     map[string]*ChannelKey         // channel -> current key
	version  uint64                         // of the newest key of any channel: versions never repeat
	sessions map[string]SessionInfo
}

var _ Presence = (*MemoryPresence)(nil)

// NewMemoryPresence returns an empty in-memory presence. now is the clock
// that dates content keys; nil means time.Now.
func NewMemoryPresence(now func() time.Time) *MemoryPresence {
	if now == nil {
		now = time.Now
	}
	return &MemoryPresence{now: now, members: map[string]map[string]struct{}{},
		keys: map[string]*ChannelKey{}, sessions: map[string]SessionInfo{}}
}

// Start implements Presence.
func (m *MemoryPresence) Start(b Broker, sign PresenceSigner) error {
	m.mu.Lock()
	m.b, m.sign = b, sign
	m.mu.Unlock()
	return nil
}

// publish hands p to the broker; a topic without subscribers is no error.
func (m *MemoryPresence) publish(ctx context.Context, p *Publication) error {
	if err := m.b.Publish(ctx, p); err != nil && !errors.Is(err, ErrNoSubscribers) {
		return err
	}
	return nil
}

// event signs and publishes the join or leave of sub in ch.
func (m *MemoryPresence) event(ctx context.Context, act, ch, sub string) error {
	ev, err := m.sign(act, ch, sub)
	if err != nil {
		return err
	}
	return m.publish(ctx, ev)
}

// Join implements Presence.
func (m *MemoryPresence) Join(ctx context.Context, ch, sub string) ([]string, bool, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	subs := m.members[ch]
	if subs == nil {
		subs = map[string]struct{}{}
		m.members[ch] = subs
	}
	_, already := subs[sub]
	if !already {
		subs[sub] = struct{}{}
		if err := m.event(ctx, protocol.ActJoin, ch, sub); err != nil {
			m.removeLocked(ch, sub)
			return nil, false, err
		}
	}
	return sortedKeys(subs), !already, nil
}

// Leave implements Presence.
func (m *MemoryPresence) Leave(ctx context.Context, ch, sub string) (bool, int, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.members[ch][sub]; !ok {
		return false, len(m.members[ch]), nil
	}
	remaining := m.removeLocked(ch, sub)
	return true, remaining, m.event(ctx, protocol.ActLeave, ch, sub)
}

// removeLocked removes sub from ch, and ch and its key once it has no
// members; it returns how many are left.
func (m *MemoryPresence) removeLocked(ch, sub string) int {
	subs := m.members[ch]
	delete(subs, sub)
	if len(subs) == 0 {
		delete(m.members, ch)
		delete(m.keys, ch)
	}
	return len(subs)
}

// Members implements Presence.
func (m *MemoryPresence) Members(_ context.Context, ch string) ([]string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return sortedKeys(m.members[ch]), nil
}

// ChannelKey implements Presence.
func (m *MemoryPresence) ChannelKey(ctx context.Context, ch string) (*ChannelKey, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := m.keys[ch]; k != nil {
		return k, nil
	}
	return m.newKeyLocked(ctx, ch)
}

// RotateKey implements Presence.
func (m *MemoryPresence) RotateKey(ctx context.Context, ch string, from uint64) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if k := m.keys[ch]; k == nil || k.Version != from {
		return nil
	}
	_, err := m.newKeyLocked(ctx, ch)
	return err
}

// newKeyLocked makes ch's next key and publishes it.
func (m *MemoryPresence) newKeyLocked(ctx context.Context, ch string) (*ChannelKey, error) {
	ck, err := protocol.NewContentKey(protocol.ChannelScope(ch), nil)
	if err != nil {
		return nil, err
	}
	m.version++
	k := &ChannelKey{Channel: ch, Version: m.version, Key: ck, Created: m.now()}
	if err := m.publish(ctx, &Publication{Key: k}); err != nil {
		return nil, err
	}
	m.keys[ch] = k
	return k, nil
}

// SetSession implements Presence.
func (m *MemoryPresence) SetSession(key string, info SessionInfo) {
	m.mu.Lock()
	m.sessions[key] = info
	m.mu.Unlock()
}

// RemoveSession implements Presence.
func (m *MemoryPresence) RemoveSession(key string) {
	m.mu.Lock()
	delete(m.sessions, key)
	m.mu.Unlock()
}

// Sessions implements Presence.
func (m *MemoryPresence) Sessions(context.Context) ([]SessionInfo, error) {
	m.mu.Lock()
	out := slices.Collect(maps.Values(m.sessions))
	m.mu.Unlock()
	sortSessions(out)
	return out, nil
}

// sortSessions sorts by connection time, oldest first, then by sid.
func sortSessions(s []SessionInfo) {
	slices.SortFunc(s, func(a, b SessionInfo) int {
		if c := a.ConnectedAt.Compare(b.ConnectedAt); c != 0 {
			return c
		}
		if a.ID < b.ID {
			return -1
		}
		if a.ID > b.ID {
			return 1
		}
		return 0
	})
}

// sortedKeys returns the keys of m, sorted; never nil.
func sortedKeys(m map[string]struct{}) []string {
	out := slices.AppendSeq(make([]string, 0, len(m)), maps.Keys(m))
	slices.Sort(out)
	return out
}
