package server

import (
	"strings"
	"testing"
)

// A channel publication's clear form round-trips, offset included, and
// every malformed variant is refused: the form is parsed on every node for
// every publication, from a Redis the nodes share.
func TestChannelPublicationWire(t *testing.T) {
	b := &RedisBroker{}
	for _, p := range []*Publication{
		{Channel: &ChannelPublication{Channel: "rooms.a", Frame: []byte("h.p.s")}},
		{Channel: &ChannelPublication{Channel: "rooms.a.b", Frame: []byte("h.p.s\x00with a nul"), Offset: 18446744073709551615}},
	} {
		msg, err := b.encode(p)
		if err != nil {
			t.Fatal(err)
		}
		got, err := b.decode(msg, true)
		if err != nil || got.Channel == nil || got.Channel.Channel != p.Channel.Channel ||
			string(got.Channel.Frame) != string(p.Channel.Frame) || got.Channel.Offset != p.Channel.Offset {
			t.Fatalf("%q decoded as %+v, %v", msg, got, err)
		}
	}
	for _, msg := range []string{
		"c", "c0", "c0\x00rooms.a", "c0\x00rooms.a\x00", "c\x00rooms.a\x00f", "c01\x00rooms.a\x00f", "c+1\x00rooms.a\x00f",
		"c-1\x00rooms.a\x00f", "c18446744073709551616\x00rooms.a\x00f", "c1\x00\x00f", "c1\x00rooms..a\x00f", "c1\x00ROOMS A\x00f",
		`c{"v":1,"ch":"rooms.a","frame":"f"}`, "x1\x00rooms.a\x00f",
	} {
		if p, err := b.decode(msg, true); err == nil {
			t.Errorf("%q accepted as %+v", msg, p.Channel)
		}
	}
	if _, err := b.encode(&Publication{Channel: &ChannelPublication{Channel: "rooms\x00a", Frame: []byte("f")}}); err == nil {
		t.Error("a channel name with a NUL was encoded")
	}
	if _, err := b.encode(&Publication{Channel: &ChannelPublication{Channel: "rooms.a"}}); err == nil {
		t.Error("an empty frame was encoded")
	}
}

// FuzzDecodeClear: the clear form's parser never panics, and whatever it
// accepts encodes back to the same bytes (one form per publication).
func FuzzDecodeClear(f *testing.F) {
	f.Add("0\x00rooms.a\x00h.p.s")
	f.Add("42\x00rooms.a.b\x00x\x00y")
	f.Add("01\x00rooms.a\x00f")
	f.Fuzz(func(t *testing.T, rest string) {
		p, err := decodeClear(rest)
		if err != nil {
			return
		}
		msg, err := (&RedisBroker{}).encode(p)
		if err != nil || msg != "c"+rest {
			t.Fatalf("%q decoded, re-encoded as %q, %v", rest, msg, err)
		}
		if strings.Contains(p.Channel.Channel, "\x00") {
			t.Fatalf("channel %q", p.Channel.Channel)
		}
	})
}
