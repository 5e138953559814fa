package server

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

var sealSecret = bytes.Repeat([]byte{7}, 32)

// sealBroker is a broker that only encodes and decodes, on the clock now.
func sealBroker(t *testing.T, secret []byte, now func() time.Time) *RedisBroker {
	t.Helper()
	seal, err := newClusterSeal(secret, now)
	noErr(t, err)
	return &RedisBroker{seal: seal}
}

// What crosses Redis for a direct message or a channel key is sealed:
// Redis reads neither the body nor who wrote to whom, nor the key, and
// cannot forge, alter, replay or delay one, nor pass a clear one off. A
// channel publication is the signed frame itself.
func TestRedisBrokerSeal(t *testing.T) {
	b := sealBroker(t, sealSecret, time.Now)
	dm := &Publication{Direct: &DirectMessage{To: "bob-the-recipient", Sender: "alice-the-sender",
		SenderJWK: json.RawMessage(`{"kty":"OKP"}`), Frame: []byte("h.p.s"), Plain: json.RawMessage(`{"text":"the secret body"}`)}}
	msg, err := b.encode(dm)
	noErr(t, err)
	for _, clear := range []string{"the secret body", "alice-the-sender", "bob-the-recipient"} {
		if strings.Contains(msg, clear) {
			t.Fatalf("%q crosses Redis in the clear", clear)
		}
	}
	got, err := b.decode(msg, true)
	noErr(t, err)
	if got.Direct == nil || string(got.Direct.Plain) != `{"text":"the secret body"}` || got.Direct.Sender != "alice-the-sender" {
		t.Fatalf("decoded %+v", got)
	}
	if _, err := b.decode(msg, true); err == nil {
		t.Fatal("a sealed direct message was accepted twice")
	}

	for name, at := range map[string]time.Time{"old": time.Now().Add(-sealWindow), "ahead": time.Now().Add(2 * sealAhead)} {
		other := sealBroker(t, sealSecret, func() time.Time { return at })
		m, err := other.encode(dm)
		noErr(t, err)
		if _, err := b.decode(m, true); err == nil {
			t.Fatalf("a sealed direct message %s accepted", name)
		}
	}

	msg, err = b.encode(dm)
	noErr(t, err)
	segs := strings.Split(msg, ".")
	ct := []byte(segs[3])
	ct[0] ^= 1
	segs[3] = string(ct)
	if _, err := b.decode(strings.Join(segs, "."), true); err == nil {
		t.Fatal("an altered message was accepted")
	}
	stranger := sealBroker(t, bytes.Repeat([]byte{8}, 32), time.Now)
	forged, err := stranger.encode(dm)
	noErr(t, err)
	if _, err := b.decode(forged, true); err == nil || !strings.Contains(err.Error(), "Secret") {
		t.Fatalf("a message sealed under another secret: %v", err)
	}
	clear, err := dm.MarshalBinary()
	noErr(t, err)
	if _, err := b.decode(string(wireClear)+string(clear), true); err == nil {
		t.Fatal("a direct message in the clear was accepted")
	}
	chPub := &Publication{Channel: &ChannelPublication{Channel: "rooms.a", Frame: []byte("h.p.s")}}
	chData, err := chPub.MarshalBinary()
	noErr(t, err)
	sealed, err := b.seal.seal(chData)
	noErr(t, err)
	if _, err := b.decode(string(wireSealed)+sealed, true); err == nil {
		t.Fatal("a sealed channel publication was accepted")
	}
	if m, err := b.encode(chPub); err != nil || m != "c0\x00rooms.a\x00h.p.s" {
		t.Fatalf("a channel publication crosses as %q, %v", m, err)
	}

	// A key: sealed too; keys are ordered by version, not by time, so the
	// stored one decodes at any age.
	ck, err := protocol.NewContentKey(protocol.ChannelScope("rooms.a"), nil)
	noErr(t, err)
	kp := &Publication{Key: &ChannelKey{Channel: "rooms.a", Version: 9, Key: ck, Created: time.Now()}}
	old := sealBroker(t, sealSecret, func() time.Time { return time.Now().Add(-time.Hour) })
	msg, err = old.encode(kp)
	noErr(t, err)
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.RawURLEncoding} {
		if strings.Contains(msg, enc.EncodeToString(ck.Key)) {
			t.Fatal("a channel key crosses Redis in the clear")
		}
	}
	for range 2 {
		got, err := b.decode(msg, false)
		noErr(t, err)
		if got.Key == nil || got.Key.Version != 9 || !bytes.Equal(got.Key.Key.Key, ck.Key) {
			t.Fatalf("key decoded as %+v", got.Key)
		}
	}
}

func TestNewClusterChecksSharedSettings(t *testing.T) {
	srv := sigiltest.StartRedis(t)
	prefix := "test-" + uuid.NewString()[:8] + ":"
	mk := func(secret []byte, partitions int) (*Cluster, error) {
		c, err := NewCluster(ClusterConfig{Redis: RedisConfig{URL: srv.URL, Prefix: prefix, OpTimeout: 20 * time.Second},
			Secret: secret, Partitions: partitions})
		if err == nil {
			t.Cleanup(c.Close)
		}
		return c, err
	}
	if _, err := mk(sealSecret[:31], 0); err == nil || !strings.Contains(err.Error(), "32 bytes") {
		t.Fatalf("a short secret: %v", err)
	}
	_, err := mk(sealSecret, 0)
	noErr(t, err)
	_, err = mk(sealSecret, DefaultClusterPartitions) // the same settings
	noErr(t, err)
	if _, err := mk(bytes.Repeat([]byte{9}, 32), 0); err == nil || !strings.Contains(err.Error(), "Secret") {
		t.Fatalf("another secret: %v", err)
	}
	if _, err := mk(sealSecret, 4); err == nil || !strings.Contains(err.Error(), "partitions") {
		t.Fatalf("other partitions: %v", err)
	}
}
