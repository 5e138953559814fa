package vectors

import (
	"encoding/json"

	"github.com/sigil-ws/sigil/protocol"
)

// grantChecks are the frames every grants vector asks about.
var grantChecks = []GrantCheck{
	{Act: "ping"}, {Act: "dm"}, {Act: "refresh"},
	{Act: "sub", Ch: "rooms.lobby"}, {Act: "sub", Ch: "rooms"}, {Act: "sub", Ch: "rooms.a.b"},
	{Act: "pub", Ch: "rooms.lobby"}, {Act: "pub", Ch: "announce.news"}, {Act: "pub"},
	{Act: "sub", Ch: "announce.news"}, {Act: "unsub", Ch: "anything.at.all"},
	{Act: "presence", Ch: "secret.x"}, {Act: "orders.create"}, {Act: "orders.create", Ch: "rooms.lobby"},
	{Act: "orders.cancel"},
}

// grantsVectors: the rights welcome announces (spec.md §8.3) for several
// role sets under policy.json, and what they allow.
func (g *gen) grantsVectors() {
	pol, err := protocol.NewPolicy(Policy)
	if err != nil {
		panic(err)
	}
	for _, c := range []struct {
		name, comment string
		roles         []string
	}{
		{"grants-user", "a user: dm, rooms.> and reading announce.>", []string{"user"}},
		{"grants-announcer", "a user who is also an announcer may publish in announce.>", []string{"user", "announcer"}},
		{"grants-admin", `an admin: the "*" grant allows everything`, []string{"admin"}},
		{"grants-trader", "an application action granted to a role", []string{"trader"}},
		{"grants-no-roles", "a session without roles has only the rules that list no roles", []string{}},
	} {
		checks := make([]GrantCheck, len(grantChecks))
		for i, k := range grantChecks {
			k.Allowed = pol.Allow(k.Act, k.Ch, c.roles) == nil
			checks[i] = k
		}
		gs, _ := json.Marshal(pol.Grants(c.roles))
		g.add(Vector{Name: c.name, Kind: "grants", Comment: c.comment, Grants: &GrantsCase{Roles: c.roles, Checks: checks},
			Expect: Expect{Result: "ok", Grants: gs}})
	}
}
