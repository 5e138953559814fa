package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/server"
)

// testServer starts an in-process server with users alice and bob
// (password "pw"); TestLoginSendListen and the load tests use it.
func testServer(t *testing.T) string {
	t.Helper()
	srv, err := server.New(server.Config{
		Authenticator: server.StaticUsers{Doc: &server.UsersDoc{Users: []server.User{
			{Name: "alice", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
			{Name: "bob", Hash: sigiltest.PasswordHash(), Roles: []string{"user"}},
		}}},
		Logger: sigiltest.QuietLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(func() { _ = srv.Shutdown(context.Background()); hs.Close() })
	return hs.URL
}

func runLoadJSON(t *testing.T, stdin string, args ...string) loadReport {
	t.Helper()
	var out, errb bytes.Buffer
	if err := runLoad(context.Background(), append(args, "--json"), strings.NewReader(stdin), &out, &errb); err != nil {
		t.Fatalf("load %v: %v\n%s", args, err, errb.String())
	}
	var rep loadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v: %s", err, out.String())
	}
	return rep
}

// checkLossless asserts what holds on loopback whatever the speed of the
// machine: every acknowledged publish reaches every subscriber, nothing
// fails, and the latency percentiles are ordered. No timing thresholds.
func checkLossless(t *testing.T, rep loadReport, publishes int64) {
	t.Helper()
	if rep.Publishes != publishes {
		t.Errorf("publishes %d, want %d", rep.Publishes, publishes)
	}
	want := rep.Publishes * int64(rep.Subscribers)
	if rep.ExpectedDeliveries != want || rep.Deliveries != want || rep.Loss != 0 {
		t.Errorf("deliveries %d, expected %d (report says %d), loss %d", rep.Deliveries, want, rep.ExpectedDeliveries, rep.Loss)
	}
	if rep.PublishErrorsTotal != 0 || len(rep.PublishErrors) != 0 || len(rep.SubscriptionErrors) != 0 ||
		rep.Reconnects != 0 || rep.RejectedFrames != 0 || rep.Foreign != 0 || rep.Interrupted {
		t.Errorf("errors in report %+v", rep)
	}
	for name, l := range map[string]latencySummary{"latency": rep.Latency, "ack latency": rep.AckLatency} {
		if !(l.Min > 0 && l.Min <= l.P50 && l.P50 <= l.P90 && l.P90 <= l.P99 && l.P99 <= l.Max) {
			t.Errorf("%s not ordered or not positive: %+v", name, l)
		}
	}
	if rep.Latency.N != uint64(want) || rep.AckLatency.N != uint64(rep.Publishes) {
		t.Errorf("latency samples %d/%d, want %d/%d", rep.Latency.N, rep.AckLatency.N, want, rep.Publishes)
	}
	if rep.PublishesPerS <= 0 || rep.DeliveriesPerS <= 0 || rep.DurationS <= 0 {
		t.Errorf("rates %+v", rep)
	}
}

func TestLoad(t *testing.T) {
	url := testServer(t)
	// 4 publishers × 40 publishes, 3 subscribers, as alice and bob in
	// turn; --duration only caps the run.
	rep := runLoadJSON(t, "pw\n", "--server", url, "--user", "alice,bob", "--conns", "4", "--subs", "3",
		"--count", "40", "--duration", "60s", "--size", "300", "--channel", "rooms.load-test")
	checkLossless(t, rep, 4*40)
	if rep.Size != 300 || rep.Publishers != 4 || rep.Subscribers != 3 || rep.Channel != "rooms.load-test" {
		t.Errorf("report header %+v", rep)
	}

	// Encrypted bodies, one password per user from a file, paced publishers.
	pwFile := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(pwFile, []byte("pw\npw\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rep = runLoadJSON(t, "", "--server", url, "--user", "bob,alice", "--password-file", pwFile, "--encrypt",
		"--conns", "2", "--subs", "2", "--count", "15", "--rate", "200", "--duration", "60s")
	checkLossless(t, rep, 2*15)
	if !rep.Encrypt {
		t.Error("encrypt not reported")
	}

	// The text summary.
	var out bytes.Buffer
	if err := runLoad(context.Background(), []string{"--server", url, "--user", "alice", "--conns", "1", "--subs", "1", "--count", "5"},
		strings.NewReader("pw\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"publishes      5 acknowledged", "deliveries     5 of 5 expected", "loss           0 ", "latency        p50 "} {
		if !strings.Contains(out.String(), s) {
			t.Errorf("summary lacks %q:\n%s", s, out.String())
		}
	}
}

// --server takes several servers, which the clients use in turn; --stats
// reports what each one spent on the run.
func TestLoadServersAndStats(t *testing.T) {
	a, b := testServer(t), testServer(t)
	rep := runLoadJSON(t, "pw\n", "--server", a+","+b, "--user", "alice", "--conns", "2", "--subs", "0",
		"--count", "7", "--duration", "60s", "--stats")
	st := rep.Stats
	if rep.Publishes != 14 || st == nil || len(st.Servers) != 2 {
		t.Fatalf("report %+v, stats %+v", rep, st)
	}
	for i, s := range st.Servers {
		if s.Server != []string{a, b}[i] || s.FramesAccepted < 7 || s.CPUSeconds < 0 || s.RedisOps != nil {
			t.Errorf("server %d: %+v; want one publisher's 7 frames at least", i, s)
		}
	}
	if st.FramesAccepted != st.Servers[0].FramesAccepted+st.Servers[1].FramesAccepted || st.RedisOpsTotal != 0 || st.RedisOpsPerPublish != 0 {
		t.Errorf("totals %+v", st)
	}
	var out bytes.Buffer
	if err := runLoad(context.Background(), []string{"--server", a, "--user", "alice", "--conns", "1", "--subs", "1", "--count", "3", "--stats"},
		strings.NewReader("pw\n"), &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "server CPU     ") || !strings.Contains(out.String(), "ms per acknowledged publish") {
		t.Errorf("summary lacks the server CPU line:\n%s", out.String())
	}
}

func TestLoadRefusals(t *testing.T) {
	url := testServer(t)
	for _, c := range []struct {
		stdin string
		args  []string
		want  string
	}{
		{"pw\n", []string{"--user", "alice"}, "usage"},
		{"pw\n", []string{"--server", url, "--user", "alice", "--conns", "0"}, "--conns"},
		{"pw\n", []string{"--server", url, "--user", "alice", "--channel", "bad channel"}, "--channel"},
		{"a\nb\nc\n", []string{"--server", url, "--user", "alice,bob"}, "3 password lines for 2 users"},
		{"wrong\n", []string{"--server", url, "--user", "alice", "--conns", "1", "--subs", "0"}, "invalid_grant"},
		{"pw\n", []string{"--server", url, "--user", "alice", "--conns", "1", "--subs", "1", "--channel", "secret.x"}, "forbidden"},
	} {
		err := runLoad(context.Background(), c.args, strings.NewReader(c.stdin), io.Discard, io.Discard)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want an error with %q", c.args, err, c.want)
		}
	}
}

// TestHistogram checks the bucket arithmetic: every value falls in a
// bucket whose bounds hold it, within 1/64 relative error.
func TestHistogram(t *testing.T) {
	for _, v := range []int64{0, 1, 127, 128, 129, 130, 255, 256, 1000, 123456, 1 << 40, 1<<62 + 12345, 1<<63 - 1} {
		i := histBucket(v)
		if i < 0 || i >= histBuckets {
			t.Fatalf("%d: bucket %d out of range", v, i)
		}
		lo := int64(0)
		if i > 0 {
			lo = histUpper(i-1) + 1
		}
		if v < lo || v > histUpper(i) {
			t.Fatalf("%d in bucket %d [%d, %d]", v, i, lo, histUpper(i))
		}
		if v >= histLinear && float64(histUpper(i)-v) > float64(v)/64 {
			t.Fatalf("%d: bucket bound %d too far", v, histUpper(i))
		}
	}
	h := newHistogram()
	for i := range 10000 {
		h.record(time.Duration(i+1) * time.Microsecond)
	}
	s := h.summary()
	if s.N != 10000 || s.Min != 0.001 || s.Max != 10 {
		t.Fatalf("%+v", s)
	}
	for _, c := range []struct{ got, want float64 }{{s.P50, 5}, {s.P90, 9}, {s.P99, 9.9}} {
		if c.got < c.want || c.got > c.want*(1+1.0/64) {
			t.Fatalf("%+v", s)
		}
	}
}

// --churn runs short sessions (login, connect, pings, close) beside the
// load, and --watch samples the server's /metrics; the soak uses both.
func TestLoadChurnAndWatch(t *testing.T) {
	url := testServer(t)
	rep := runLoadJSON(t, "pw\n", "--server", url, "--user", "alice,bob", "--conns", "1", "--subs", "1",
		"--rate", "20", "--duration", "2s", "--churn", "10", "--watch", "500ms")
	checkLossless(t, rep, rep.Publishes)
	if rep.Churn == nil || rep.Churn.Sessions < 1 || len(rep.Churn.Errors) != 0 {
		t.Fatalf("churn %+v", rep.Churn)
	}
	if rep.Server == nil || len(rep.Server.Samples) < 2 || rep.Server.Errors != 0 {
		t.Fatalf("watch %+v", rep.Server)
	}
	for _, s := range rep.Server.Samples {
		if s.RSS <= 0 || s.HeapInuse <= 0 || s.Goroutines <= 0 || s.OpenFDs <= 0 {
			t.Fatalf("sample %+v", s)
		}
	}
}

// The soak's trends: slopes per minute after the first quarter, and the
// heap floor (the smallest heap of each whole minute), which sees through
// the sawtooth of garbage collection.
func TestServerTrend(t *testing.T) {
	var tr serverTrend
	for i := 0; i <= 60; i++ { // 10 minutes, a sample every 10 s
		ts := float64(i * 10)
		saw := float64(i%6) * 30 // garbage: 0..150 MiB over each minute
		tr.Samples = append(tr.Samples, serverSample{T: ts, RSS: 200 + saw, HeapInuse: 100 + 2*ts/60 + saw, Goroutines: 30, OpenFDs: 20})
	}
	tr.summarise()
	if len(tr.HeapFloor) != 10 || tr.HeapFloor[0] != 100 || tr.HeapFloorSlope != 2 || tr.RSSFloorSlope != 0 {
		t.Fatalf("floor %v, slope %v; want 10 minutes from 100 MiB, +2 MiB/min", tr.HeapFloor, tr.HeapFloorSlope)
	}
	if tr.GoroutinesSlope != 0 || tr.FDsSlope != 0 {
		t.Fatalf("flat series have slopes %v, %v", tr.GoroutinesSlope, tr.FDsSlope)
	}
	var out bytes.Buffer
	tr.print(&out)
	if !strings.Contains(out.String(), "heap 100.0 → 118.0 MiB (+2.000 MiB/min)") {
		t.Fatalf("summary:\n%s", out.String())
	}
}
