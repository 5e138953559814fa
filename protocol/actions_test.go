package protocol_test

import (
	"encoding/json"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

func TestCheckAction(t *testing.T) {
	body := json.RawMessage(`{"a":1}`)
	ok := []protocol.Envelope{
		{Action: protocol.ActPing},
		{Action: protocol.ActSub, Channel: "rooms.a"},
		{Action: protocol.ActPub, Channel: "rooms.a", Body: body},
		{Action: protocol.ActPub, Channel: "rooms.a", Enc: "x"},
		{Action: protocol.ActDM, To: "bob", Enc: "x"},
		{Action: protocol.ActRefresh, Body: body},
		{Action: protocol.ActRefresh},                                        // the refresh itself answers bad_token (§12.2)
		{Action: "orders.create", Channel: "rooms.a", To: "bob", Body: body}, // application actions: any fields
		{Action: "frobnicate", Body: body},                                   // unknown names: unknown_action, elsewhere
	}
	for _, e := range ok {
		if err := protocol.CheckAction(&e); err != nil {
			t.Errorf("%+v: %v", e, err)
		}
	}
	bad := []protocol.Envelope{
		{Action: protocol.ActPing, Body: json.RawMessage(`null`)},
		{Action: protocol.ActPing, Enc: "x"},
		{Action: protocol.ActUnsub},
		{Action: protocol.ActUnsub, Channel: "rooms.a", Body: body},
		{Action: protocol.ActPresence, Channel: "rooms.a", Enc: "x"},
		{Action: protocol.ActPub, Body: body},
		{Action: protocol.ActDM, To: "bob"},
		{Action: protocol.ActRefresh, To: "bob", Body: body},
		{Action: protocol.ActHello, Body: body},
	}
	for _, e := range bad {
		e.ID = "0b8e6b2e-3c4f-4b7a-9a51-3f1f0c9d2e11"
		err := protocol.CheckAction(&e)
		var pe *protocol.Error
		if !protocol.IsCode(err, protocol.CodeBadRequest) || !asError(err, &pe) || pe.Ref != e.ID {
			t.Errorf("%+v: %v; want bad_request with ref", e, err)
		}
	}
}

func asError(err error, target **protocol.Error) bool {
	pe, ok := err.(*protocol.Error)
	*target = pe
	return ok
}
