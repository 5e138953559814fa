package server

import "context"

// Broker carries frames between the nodes of a cluster. The hub publishes
// every fan-out to a topic and receives it back through the handler given
// to Start, on every node (including the publishing one) that subscribed to
// the topic. Topics are "ch:<channel>" (payload: a signed deliver or
// presence frame, sent as is to every local subscriber) and "user:<sub>"
// (payload: an internal direct-message record; a cluster broker must run
// over an authenticated, encrypted transport because it may carry
// decrypted direct-message bodies).
//
// The in-memory broker delivers synchronously in process. A Redis broker
// implements the same four methods.
type Broker interface {
	// Start sets the handler that receives every message of the topics this
	// node subscribed to. It is called once, before any other method.
	Start(handler func(topic string, payload []byte)) error
	// Publish sends payload to every node subscribed to topic.
	Publish(ctx context.Context, topic string, payload []byte) error
	// Subscribe starts the delivery of topic to this node. Calls nest: the
	// hub calls it when the first local session needs the topic.
	Subscribe(ctx context.Context, topic string) error
	// Unsubscribe stops it, when the last local session left.
	Unsubscribe(ctx context.Context, topic string) error
}

// InterestBroker is an optional Broker extension: Interested reports
// whether any node is subscribed to topic. The hub uses it to skip signing
// deliveries nobody receives and to answer not_found for direct messages
// to users with no session. A broker that cannot tell does not implement it.
type InterestBroker interface {
	Interested(topic string) bool
}
