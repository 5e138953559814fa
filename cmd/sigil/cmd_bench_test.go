package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"math"
	"net/url"
	"strconv"
	"strings"
	"testing"

	"github.com/sigil-ws/sigil/protocol"
)

// TestBench runs sigil bench end to end at a tiny size: a real sigil serve
// process (this binary), the relay process, every row (the audit rows'
// three servers too, two of them writing an audit log). It checks that the
// report is complete and every figure was measured; the figures
// themselves depend on the machine and are not asserted.
func TestBench(t *testing.T) {
	if testing.Short() {
		t.Skip("starts two processes and opens a few hundred sessions")
	}
	t.Setenv("SIGIL_TEST_MAIN", "1") // the children run as sigil (TestMain)
	var out, errb bytes.Buffer
	err := runBench(context.Background(), []string{"--json", "--server-cpu", "none",
		"--conns", "4", "--frames", "100", "--rounds", "1", "--rate", "200", "--rate-duration", "300ms",
		"--fanout", "10", "--fanout-publishes", "5", "--idle", "20", "--idle-duration", "500ms", "--calibrate", "100ms"}, &out, &errb)
	if err != nil {
		t.Fatalf("bench: %v\n%s", err, errb.String())
	}
	var rep benchReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	if rep.VerifyNs <= 0 || rep.SignNs <= 0 || rep.FrameSize <= 0 {
		t.Fatalf("baselines not measured: %+v", rep)
	}
	if len(rep.Rows) != 13 {
		t.Fatalf("%d rows, want the issue's 7, the audit log's 2, the signing relay's 2, history on and the server's CPU wait: %+v", len(rep.Rows), rep.Rows)
	}
	for _, r := range rep.Rows {
		if r.Value <= 0 && !strings.HasPrefix(r.Name, "idle CPU") && !strings.HasPrefix(r.Name, "server's wait") {
			t.Errorf("row %q: nothing measured (%v %s)", r.Name, r.Value, r.Unit)
		}
		if r.Of != "" && r.Ratio <= 0 {
			t.Errorf("row %q: no ratio against %s", r.Name, r.Of)
		}
	}
	for _, step := range []string{"bench: fan-out", "audit log async", "signing relay", "a holder process opens 20 plain gorilla connections"} {
		if !strings.Contains(errb.String(), step) {
			t.Errorf("no %q in the progress display on stderr:\n%s", step, errb.String())
		}
	}
	var table bytes.Buffer
	rep.print(&table)
	if !strings.Contains(table.String(), "| server CPU per verified publish, no subscriber |") {
		t.Errorf("table:\n%s", table.String())
	}
}

// A row's ratio is the median of its rounds' ratios, each round's CPU
// over the probe's raw figure from that same round: a round in which the
// machine ran slow (the probe slow too) keeps its ratio, and one odd
// round does not move the median.
func TestBenchRoundRatios(t *testing.T) {
	f := &flatResult{rounds: []flatRound{
		{ns: 120, probe: probeSample{VerifyNs: 100, SignNs: 50}},
		{ns: 180, probe: probeSample{VerifyNs: 150, SignNs: 75}}, // the machine 1.5× slower
		{ns: 300, probe: probeSample{VerifyNs: 100, SignNs: 50}}, // an odd round
	}}
	got := f.ratios(rawVerify)
	want := []float64{1.2, 1.2, 3}
	for i := range want {
		if math.Abs(got[i]-want[i]) > 1e-9 {
			t.Fatalf("ratios %v, want %v", got, want)
		}
	}
	if m := median(got); math.Abs(m-1.2) > 1e-9 {
		t.Errorf("median %v, want 1.2", m)
	}
	if m := median([]float64{4, 1, 3, 2}); m != 2.5 {
		t.Errorf("median of an even count %v, want 2.5", m)
	}
	if v := f.probeMean(rawVerifySign); math.Abs(v-(150+225+150)/3.0) > 1e-9 {
		t.Errorf("probe mean %v", v)
	}
}

// The signing relay verifies each frame before it relays it: a frame
// signed by the key it was given passes, and one with a changed byte, a
// signature of the wrong length or no signature at all ends the
// connection.
func TestRelayWorkVerifies(t *testing.T) {
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		t.Fatal(err)
	}
	signer := &protocol.ClientSigner{Key: key, Session: "s1", Subject: "alice"}
	frame, err := signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: benchLiveIn, Body: benchBody})
	if err != nil {
		t.Fatal(err)
	}
	pub := key.Public().Key().(ed25519.PublicKey)
	work, err := relayWork(url.Values{"verify": {base64.RawURLEncoding.EncodeToString(pub)}, "sign": {strconv.Itoa(deliverSignSize(frame))}})
	if err != nil {
		t.Fatal(err)
	}
	if !work(frame) {
		t.Fatal("a frame signed by the key does not pass")
	}
	edited := bytes.Clone(frame)
	edited[10] ^= 1
	for name, f := range map[string][]byte{"edited": edited, "short signature": frame[:len(frame)-2], "no signature": frame[:bytes.LastIndexByte(frame, '.')]} {
		if work(f) {
			t.Errorf("%s: passes", name)
		}
	}
	if _, err := relayWork(url.Values{"verify": {"not a key"}, "sign": {"100"}}); err == nil {
		t.Error("a bad key is accepted")
	}
	plain, err := relayWork(url.Values{})
	if err != nil || !plain(edited) {
		t.Errorf("the plain relay does not relay every frame: %v", err)
	}
}
