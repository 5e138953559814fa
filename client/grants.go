package client

import "github.com/sigil-ws/sigil/protocol"

// Grants returns what the server's policy lets this session do, as the
// last welcome announced it (spec.md §8.3): one protocol.Grant per action
// and channel pattern. It is nil if the server did not announce it (a
// server older than the member). The server still decides every frame;
// grants let a program or a user interface know in advance what would be
// refused with forbidden.
func (c *Client) Grants() protocol.Grants {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.grants == nil {
		return nil
	}
	return append(make(protocol.Grants, 0, len(c.grants)), c.grants...)
}

// Can reports whether the announced grants allow action on channel
// (channel may be empty, as for dm or ping). If the server announced no
// grants, Can returns true: the rights are unknown and the server decides.
func (c *Client) Can(action, channel string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.grants == nil || c.grants.Allows(action, channel)
}
