package server

import (
	"context"
	"sync"
)

// MemoryBroker is the single-node Broker: Publish calls the handler
// synchronously when the topic is subscribed.
type MemoryBroker struct {
	mu      sync.RWMutex
	handler func(string, []byte)
	topics  map[string]int
}

// NewMemoryBroker returns an in-process broker.
func NewMemoryBroker() *MemoryBroker { return &MemoryBroker{topics: map[string]int{}} }

// Start implements Broker.
func (b *MemoryBroker) Start(h func(string, []byte)) error {
	b.mu.Lock()
	b.handler = h
	b.mu.Unlock()
	return nil
}

// Publish implements Broker.
func (b *MemoryBroker) Publish(_ context.Context, topic string, payload []byte) error {
	b.mu.RLock()
	h, ok := b.handler, b.topics[topic] > 0
	b.mu.RUnlock()
	if ok && h != nil {
		h(topic, payload)
	}
	return nil
}

// Subscribe implements Broker.
func (b *MemoryBroker) Subscribe(_ context.Context, topic string) error {
	b.mu.Lock()
	b.topics[topic]++
	b.mu.Unlock()
	return nil
}

// Unsubscribe implements Broker.
func (b *MemoryBroker) Unsubscribe(_ context.Context, topic string) error {
	b.mu.Lock()
	if b.topics[topic] <= 1 {
		delete(b.topics, topic)
	} else {
		b.topics[topic]--
	}
	b.mu.Unlock()
	return nil
}

// Interested implements InterestBroker.
func (b *MemoryBroker) Interested(topic string) bool {
	b.mu.RLock()
	defer b.mu.RUnlock()
	return b.topics[topic] > 0
}
