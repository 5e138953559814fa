package server

import "context"

// Test hooks for the black-box tests (package server_test).

// RedisSet sets key to value on r's Redis, as a plain client would.
func RedisSet(ctx context.Context, r *Redis, key, value string) error {
	return r.client.Do(ctx, r.client.B().Set().Key(key).Value(value).Build()).Error()
}

// RedisKillPubSub closes every pub/sub connection on every server r knows
// (every shard of a Redis Cluster): CLIENT KILL TYPE pubsub.
func RedisKillPubSub(ctx context.Context, r *Redis) error {
	for _, c := range r.client.Nodes() {
		if err := c.Do(ctx, c.B().ClientKill().TypePubsub().Build()).Error(); err != nil {
			return err
		}
	}
	return nil
}

// ParkedSessions counts s's sessions that are parked: no goroutine, the
// parker holds them (conn_park.go).
func (s *Server) ParkedSessions() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for c := range s.conns {
		if c.fc != nil && c.fc.parked() {
			n++
		}
	}
	return n
}
