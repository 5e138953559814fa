package protocol_test

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

// TestGrantsAgreeWithAllow: for every role set, action and channel tried,
// the grants a policy announces for the roles allow exactly what the
// policy allows (spec.md §8.3).
func TestGrantsAgreeWithAllow(t *testing.T) {
	custom, err := protocol.NewPolicy([]protocol.Rule{
		{Action: "pub", Channel: "team.*.chat", Roles: []string{"staff"}},
		{Action: "sub", Channel: "team.>", Roles: []string{}},
		{Action: "orders.create", Roles: []string{"trader", "staff"}},
		{Action: "orders.create", Roles: []string{"trader"}}, // the same grant twice
	})
	if err != nil {
		t.Fatal(err)
	}
	actions := []string{"ping", "refresh", "dm", "sub", "unsub", "pub", "presence", "orders.create", "orders.cancel"}
	channels := []string{"", "rooms", "rooms.lobby", "rooms.a.b", "announce.news", "team.x.chat", "team.x.y.chat", "team", "other"}
	roleSets := [][]string{nil, {}, {"user"}, {"announcer"}, {"user", "announcer"}, {"admin"}, {"staff"}, {"trader"}, {"nobody"}}
	for _, p := range []*protocol.Policy{protocol.DefaultPolicy(), custom} {
		for _, roles := range roleSets {
			g := p.Grants(roles)
			if g == nil {
				t.Fatalf("Grants(%v) is nil, want a list", roles)
			}
			for _, a := range actions {
				for _, ch := range channels {
					want := p.Allow(a, ch, roles) == nil
					if got := g.Allows(a, ch); got != want {
						t.Errorf("roles %v %s %q: grants %v allow=%v, policy allow=%v", roles, a, ch, g, got, want)
					}
				}
			}
		}
	}
	if g := custom.Grants([]string{"trader", "staff"}); len(g) != 3 {
		t.Errorf("duplicates not removed: %v", g)
	}
}

func TestGrantsDefaultPolicy(t *testing.T) {
	got, _ := json.Marshal(protocol.DefaultPolicy().Grants([]string{"user"}))
	want := `[{"action":"ping"},{"action":"refresh"},{"action":"dm"},{"action":"sub","channel":"rooms.\u003e"},{"action":"unsub","channel":"\u003e"},{"action":"pub","channel":"rooms.\u003e"},{"action":"presence","channel":"rooms.\u003e"},{"action":"sub","channel":"announce.\u003e"},{"action":"presence","channel":"announce.\u003e"},{"action":"history","channel":"rooms.\u003e"},{"action":"history","channel":"announce.\u003e"}]`
	if string(got) != want {
		t.Errorf("user grants\n got %s\nwant %s", got, want)
	}
	if g := protocol.DefaultPolicy().Grants([]string{"admin"}); !reflect.DeepEqual(g[0], protocol.Grant{Action: "*"}) {
		t.Errorf("admin grants start with %v", g[0])
	}
	var nilPolicy *protocol.Policy
	if g := nilPolicy.Grants([]string{"user"}); g == nil || len(g) != 0 {
		t.Errorf("nil policy grants %v", g)
	}
}

// TestGrantsInvalidMatchNothing: a grant a client received with a bad
// action or pattern never allows anything.
func TestGrantsInvalidMatchNothing(t *testing.T) {
	for _, g := range []protocol.Grant{{Action: "pub", Channel: "rooms.>.x"}, {Action: "pub", Channel: "rooms..a"}, {Action: "", Channel: ""}, {Action: "p u b"}} {
		if (protocol.Grants{g}).Allows("pub", "rooms.>.x") || (protocol.Grants{g}).Allows("pub", "rooms.a") {
			t.Errorf("%+v allows", g)
		}
	}
}
