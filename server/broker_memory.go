package server

import (
	"context"
	"sync"
)

// MemoryBroker is the single-node Broker: Publish hands the publication to
// the handler synchronously, in the publishing goroutine, when its topic is
// subscribed, and returns ErrNoSubscribers when it is not. It never fails.
type MemoryBroker struct {
	mu      sync.RWMutex
	handler BrokerEventHandler
	topics  map[Topic]struct{}
}

// NewMemoryBroker returns an in-process broker.
func NewMemoryBroker() *MemoryBroker { return &MemoryBroker{topics: map[Topic]struct{}{}} }

// Start implements Broker.
func (b *MemoryBroker) Start(h BrokerEventHandler) error {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
	return nil
}

// Publish implements Broker.
func (b *MemoryBroker) Publish(_ context.Context, p *Publication) error {
	b.mu.RLock()
	h := b.handler
	_, ok := b.topics[p.Topic()]
	b.mu.RUnlock()
	if !ok {
		return ErrNoSubscribers
	}
	if h != nil {
		h.HandlePublication(p)
	}
	return nil
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(_ context.Context, t Topic) error {
	b.mu.Lock()
	b.topics[t] = struct{}{}
	b.mu.Unlock()
	return nil
}

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(_ context.Context, t Topic) error {
	b.mu.Lock()
	delete(b.topics, t)
	b.mu.Unlock()
	return nil
}

// Interested implements InterestBroker.
func (b *MemoryBroker) Interested(t Topic) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	_, ok := b.topics[t]
	return ok
}
