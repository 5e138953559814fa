package server

import (
	"context"
	"encoding/json"
	"strconv"
	"time"

	"github.com/redis/rueidis"
	"github.com/sigil-ws/sigil/protocol"
)

// nodeControl carries the admin's kicks between the nodes that share a
// Redis (Config.Redis): a kick made on any node closes the session's
// connections on every node. Its keys and channel:
//
//	<prefix>control              the channel of the notices: {"kick":"<sid>"}
//	<prefix>kicked:<sid>         a kicked session, kept for the token
//	                             lifetime (TokenTTL + Skew)
//
// A kick writes the key and publishes the notice in one script. Every node
// watches the channel and closes its connections of the session with 4004.
// A node that may have missed notices (its subscription was re-made after
// a connection loss) looks its live sessions up in the kicked keys, in one
// pipelined round trip, and closes those it finds.
type nodeControl struct {
	r       *Redis
	channel string
}

func newNodeControl(r *Redis) *nodeControl {
	return &nodeControl{r: r, channel: r.key("control")}
}

func (n *nodeControl) kickedKey(sid string) string { return n.r.key("kicked", redisKeyPart(sid)) }

// controlNotice is the JSON of a notice.
type controlNotice struct {
	Kick string `json:"kick"`
}

// kickScript: KEYS[1] the session's kicked key; ARGV[1] its TTL (ms),
// ARGV[2] the channel, ARGV[3] the notice.
var kickScript = rueidis.NewLuaScript(`
redis.call('SET', KEYS[1], '1', 'PX', ARGV[1])
return redis.call('PUBLISH', ARGV[2], ARGV[3])
`)

// kick records that sid was kicked, until ttl from now, and tells every
// node.
func (n *nodeControl) kick(ctx context.Context, sid string, ttl time.Duration) error {
	notice, err := json.Marshal(controlNotice{Kick: sid})
	if err != nil {
		return err
	}
	return n.r.call(ctx, "control.kick", func(ctx context.Context) error {
		return kickScript.Exec(ctx, n.r.client, []string{n.kickedKey(sid)},
			[]string{strconv.FormatInt(max(1, ttl.Milliseconds()), 10), n.channel, string(notice)}).Error()
	})
}

// kicked reports which of sids were kicked, in one round trip.
func (n *nodeControl) kicked(ctx context.Context, sids []string) ([]bool, error) {
	out := make([]bool, len(sids))
	if len(sids) == 0 {
		return out, nil
	}
	err := n.r.call(ctx, "control.kicked", func(ctx context.Context) error {
		cmds := make(rueidis.Commands, len(sids))
		for i, sid := range sids {
			cmds[i] = n.r.client.B().Exists().Key(n.kickedKey(sid)).Build()
		}
		for i, res := range n.r.client.DoMulti(ctx, cmds...) {
			v, err := res.AsInt64()
			if err != nil {
				return err
			}
			out[i] = v == 1
		}
		return nil
	})
	return out, err
}

// watch calls fn with each kicked sid, and with "" when notices may have
// been lost (see watchChannel).
func (n *nodeControl) watch(ctx context.Context, fn func(sid string)) error {
	return watchChannel(ctx, n.r, "control.watch", n.channel, "", func(msg string) (string, bool) {
		var c controlNotice
		if protocol.DecodeBody([]byte(msg), &c) != nil || c.Kick == "" {
			return "", false
		}
		return c.Kick, true
	}, fn)
}

// onKick runs on the control watch's goroutine: it closes this node's
// connections of sid, or, for "", of every session that was kicked while
// notices may have been lost.
func (s *Server) onKick(sid string) {
	if sid != "" {
		s.kickLocal(sid)
		return
	}
	conns := s.hub.conns(nil)
	sids := make([]string, len(conns))
	for i, c := range conns {
		sids[i] = c.sid
	}
	kicked, err := s.control.kicked(s.ctx, sids)
	if err != nil {
		s.storeError("kick resync", err)
		return
	}
	for i, c := range conns {
		if kicked[i] {
			c.close(protocol.CloseKicked, "kicked by an admin", false)
		}
	}
}
