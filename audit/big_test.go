package audit_test

import (
	"context"
	"encoding/json"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/audit"
	"github.com/sigil-ws/sigil/protocol"
)

// TestWriteBigLog writes a log of SIGIL_AUDIT_BIG_N entries (default
// 100000) of real signed frames into the directory SIGIL_AUDIT_BIG, for
// measuring "sigil audit verify" (README: time and memory). It is skipped
// unless SIGIL_AUDIT_BIG is set.
func TestWriteBigLog(t *testing.T) {
	dir := os.Getenv("SIGIL_AUDIT_BIG")
	if dir == "" {
		t.Skip("set SIGIL_AUDIT_BIG=DIR to write a big log")
	}
	n := 100000
	if s := os.Getenv("SIGIL_AUDIT_BIG_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	f := newFixture(t)
	var last audit.Future
	for i := range n - 2 {
		fr, err := f.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: "rooms.a", Body: json.RawMessage(`{"text":"message ` + strconv.Itoa(i) + `"}`)})
		must(t, err)
		e := &audit.Entry{V: audit.Version, Kind: audit.KindFrame, Time: time.Now().UnixMilli(), Frame: string(fr), JTI: f.claims.ID, JKT: f.sess.Public().Thumbprint(), JWK: f.jwk}
		last = f.log.Add(context.Background(), e)
		if i%4096 == 4095 {
			_, err := last() // bounded in flight (Tessera's pushback)
			must(t, err)
		}
	}
	idx, err := last()
	must(t, err)
	f.n = idx + 1
	f.published()
	must(t, f.log.Close(context.Background()))
	must(t, os.RemoveAll(dir))
	must(t, os.Rename(f.dir, dir))
	t.Logf("wrote %d entries to %s", f.n, dir)
}
