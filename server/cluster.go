package server

import (
	"context"
	"sync"

	"github.com/sigil-ws/sigil/protocol"
)

// RevocationWatcher is an optional extension of RevocationStore: a store
// shared by several nodes (RedisRevocationStore) announces every
// revocation made on any node. New calls Watch with the server's context
// if Config.Revocations implements it, and fails if it cannot; the server
// then closes its live sessions whose token a notice revokes with 4003 as
// soon as the notice arrives, and on a Resync re-checks every live
// session against the store.
type RevocationWatcher interface {
	Watch(ctx context.Context, fn func(RevocationEvent)) error
}

// watchRevocations starts watching the revocation store, if it can be.
func (s *Server) watchRevocations() error {
	w, ok := s.cfg.Revocations.(RevocationWatcher)
	if !ok {
		return nil
	}
	return w.Watch(s.ctx, s.onRevocation)
}

// onRevocation closes the live sessions that ev revokes. It runs on the
// watcher's goroutine, one event at a time.
func (s *Server) onRevocation(ev RevocationEvent) {
	switch {
	case ev.Resync:
		s.recheckRevocations()
	case ev.TokenID != "":
		s.closeWhere(func(c *conn) bool { return c.tokenID() == ev.TokenID })
	case ev.Subject != "":
		s.closeWhere(func(c *conn) bool {
			_, iat := c.token()
			return c.sub == ev.Subject && !iat.After(ev.At)
		})
	}
}

// recheckParallel bounds the revocation checks a Resync runs at once.
const recheckParallel = 16

// recheckRevocations checks every live session against the revocation
// store and closes the revoked ones with 4003. A session whose check fails
// stays open: its next frame is checked in any case (spec.md §7 step 9).
func (s *Server) recheckRevocations() {
	conns := s.hub.conns(func(c *conn) bool { return c.welcomed.Load() })
	sem := make(chan struct{}, recheckParallel)
	var wg sync.WaitGroup
	for _, c := range conns {
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			jti, iat := c.token()
			revoked, err := s.cfg.Revocations.IsRevoked(s.ctx, jti, c.sub, iat)
			if err != nil {
				s.storeError("revocation resync", err)
				return
			}
			if revoked {
				c.close(protocol.CloseRevoked, "revoked", false)
			}
		}()
	}
	wg.Wait()
}

// ClusterSessions lists the live sessions of every node of the server, as
// the presence knows them (Config.Presence), oldest first. On a single node
// it lists the same sessions as Sessions. Each one's Node names the node
// that serves it.
func (s *Server) ClusterSessions(ctx context.Context) ([]SessionInfo, error) {
	list, err := s.cfg.Presence.Sessions(ctx)
	if list == nil && err == nil {
		list = []SessionInfo{} // the admin API answers {"sessions": []}, never null
	}
	return list, err
}
