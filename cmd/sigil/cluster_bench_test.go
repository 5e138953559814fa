package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/sigil-ws/sigil/internal/sigiltest"
	"github.com/sigil-ws/sigil/protocol"
)

// BenchmarkCluster compares, in one run on one machine, three sigil serve
// nodes sharing one Redis with one node and its in-memory state, under the
// same sigil load workload: SIGIL_BENCH_CONNS publishers (default 6) and
// SIGIL_BENCH_SUBS subscribers (default 6) on one channel, as fast as
// acknowledgements allow, spread over the nodes; every publish reaches
// every subscriber. It alternates the two setups (SIGIL_BENCH_ROUNDS
// rounds, default 3, of SIGIL_BENCH_DURATION each, default 15s; the nodes
// with GOMAXPROCS=SIGIL_BENCH_GOMAXPROCS if set) and reports, from the
// medians:
//
//	throughput-ratio   deliveries/s, 3 nodes on Redis ÷ 1 node in memory
//	cpu-ratio          server CPU per acknowledged publish, the same ratio
//	                   (the CPU time of the server processes, from /proc)
//	node-cpu-ratio     the same for ONE node on Redis ÷ one node in memory:
//	                   what Redis costs a node, without the fan-out to
//	                   other nodes (a third setup, alternated with the two)
//	rtt/publish        Redis round trips per acknowledged publish
//	rtt/frame          Redis round trips per frame accepted (verified)
//
// The channel keeps a history under the default policy (spec §20), so the
// figures include it (an append per publish, in memory or in a Redis
// stream); SIGIL_BENCH_HISTORY=off serves the default policy's rules
// without history, the live path alone.
//
// Run it alone: go test ./cmd/sigil -run XXX -bench Cluster -benchtime 1x
// It needs redis-server, like the tests.
func BenchmarkCluster(b *testing.B) {
	rounds := envInt(b, "SIGIL_BENCH_ROUNDS", 3)
	conns, subs := envInt(b, "SIGIL_BENCH_CONNS", 6), envInt(b, "SIGIL_BENCH_SUBS", 6)
	duration := os.Getenv("SIGIL_BENCH_DURATION")
	if duration == "" {
		duration = "15s"
	}
	data := b.TempDir()
	pw := benchData(b, data)
	workload := []string{"--user", "alice", "--password-file", pw, "--conns", strconv.Itoa(conns), "--subs", strconv.Itoa(subs), "--rate", "0",
		"--size", "256", "--duration", duration, "--drain", "30s", "--stats", "--channel", "rooms.bench"}
	var single, one, multi []benchResult
	for round := range rounds {
		b.Logf("round %d of %d", round+1, rounds)
		single = append(single, benchSingle(b, data, workload))
		one = append(one, benchCluster(b, data, workload, 1))
		multi = append(multi, benchCluster(b, data, workload, 3))
	}
	s, o, m := medianResult(single), medianResult(one), medianResult(multi)
	b.ReportMetric(m.deliveriesPerS/s.deliveriesPerS, "throughput-ratio")
	b.ReportMetric(m.cpuMsPerPublish/s.cpuMsPerPublish, "cpu-ratio")
	b.ReportMetric(o.cpuMsPerPublish/s.cpuMsPerPublish, "node-cpu-ratio")
	b.ReportMetric(m.rttPerPublish, "rtt/publish")
	b.ReportMetric(m.rttPerFrame, "rtt/frame")
	for _, r := range append(append(single, one...), multi...) {
		b.Logf("%s", r)
	}
	b.Logf("median: 1 node in memory %.0f deliveries/s, %.3f ms CPU per publish; 1 node on Redis %.0f deliveries/s, %.3f ms CPU per publish; "+
		"3 nodes %.0f deliveries/s, %.3f ms CPU per publish (Redis: %.3f ms more); "+
		"throughput (3 nodes) %.2f×, CPU per publish: one node on Redis %.2f×, three nodes %.2f×; Redis round trips %.2f per publish, %.2f per frame; commands seen by Redis per publish: %s",
		s.deliveriesPerS, s.cpuMsPerPublish, o.deliveriesPerS, o.cpuMsPerPublish, m.deliveriesPerS, m.cpuMsPerPublish, m.redisCPUMsPerPublish,
		m.deliveriesPerS/s.deliveriesPerS, o.cpuMsPerPublish/s.cpuMsPerPublish, m.cpuMsPerPublish/s.cpuMsPerPublish, m.rttPerPublish, m.rttPerFrame, m.commands)
}

type benchResult struct {
	setup                string
	publishes            int64
	deliveriesPerS       float64
	cpuMsPerPublish      float64 // the server processes
	redisCPUMsPerPublish float64
	rttPerPublish        float64
	rttPerFrame          float64
	loss                 int64
	commands             string // Redis' own count, per publish
}

func (r benchResult) String() string {
	return fmt.Sprintf("%-14s %6d publishes, %8.0f deliveries/s, loss %d, server CPU %.3f ms/publish, Redis CPU %.3f ms/publish, %.2f round trips/publish, %.2f/frame %s",
		r.setup, r.publishes, r.deliveriesPerS, r.loss, r.cpuMsPerPublish, r.redisCPUMsPerPublish, r.rttPerPublish, r.rttPerFrame, r.commands)
}

func medianResult(rs []benchResult) benchResult {
	sort.Slice(rs, func(i, j int) bool { return rs[i].deliveriesPerS < rs[j].deliveriesPerS })
	m := rs[len(rs)/2]
	cpu := make([]float64, len(rs))
	for i, r := range rs {
		cpu[i] = r.cpuMsPerPublish
	}
	sort.Float64s(cpu)
	m.cpuMsPerPublish = cpu[len(cpu)/2]
	return m
}

func envInt(b *testing.B, name string, def int) int {
	if v := os.Getenv(name); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			b.Fatalf("%s=%q: want a positive number", name, v)
		}
		return n
	}
	return def
}

// benchData makes the nodes' shared data directory: a signing key and the
// user alice (bcrypt, so that the logins of the setup are quick). It
// returns the password file.
func benchData(b *testing.B, dir string) string {
	for _, args := range [][]string{
		{"keygen", "--data-dir", dir},
		{"user", "add", "--users", filepath.Join(dir, "users.json"), "--hash", "bcrypt", "alice"},
	} {
		var out bytes.Buffer
		if code := run(args, strings.NewReader("bench-password\n"), &out, &out); code != 0 {
			b.Fatalf("%v: %s", args, out.String())
		}
	}
	pw := filepath.Join(dir, "pw")
	if err := os.WriteFile(pw, []byte("bench-password\n"), 0o600); err != nil {
		b.Fatal(err)
	}
	// SIGIL_BENCH_HISTORY=off: the default policy's rules without its
	// history, to measure the live path alone.
	if os.Getenv("SIGIL_BENCH_HISTORY") == "off" {
		doc, err := json.Marshal(map[string]any{"rules": protocol.DefaultPolicy().Rules()})
		if err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "policy.json"), doc, 0o600); err != nil {
			b.Fatal(err)
		}
		benchPolicy = []string{"--policy", filepath.Join(dir, "policy.json")}
	}
	return pw
}

// benchPolicy is the --policy flag of the benchmark's servers, if any.
var benchPolicy []string

// benchServe starts sigil serve (this test binary) with args and returns
// its URL; it is stopped when the function that the returned stop belongs
// to calls it.
func benchServe(b *testing.B, args ...string) (string, func()) {
	cmd := exec.Command(os.Args[0], append(append([]string{"serve", "--addr", "127.0.0.1:0", "--log-level", "warn"}, benchPolicy...), args...)...)
	cmd.Env = append(os.Environ(), "SIGIL_TEST_MAIN=1")
	if g := os.Getenv("SIGIL_BENCH_GOMAXPROCS"); g != "" {
		cmd.Env = append(cmd.Env, "GOMAXPROCS="+g)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	stop := func() { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), "SIGIL_READY url="); ok {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return u, stop
		}
	}
	stop()
	b.Fatal("sigil serve: no ready line")
	return "", nil
}

func benchLoad(b *testing.B, servers []string, workload []string) loadReport {
	var out, errb bytes.Buffer
	args := append([]string{"--server", strings.Join(servers, ","), "--json"}, workload...)
	if err := runLoad(context.Background(), args, nil, &out, &errb); err != nil {
		b.Fatalf("load: %v\n%s", err, errb.String())
	}
	var rep loadReport
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		b.Fatal(err)
	}
	return rep
}

func benchSingle(b *testing.B, data string, workload []string) benchResult {
	url, stop := benchServe(b, "--data-dir", data)
	defer stop()
	rep := benchLoad(b, []string{url}, workload)
	return benchResult{setup: "1 node, memory", publishes: rep.Publishes, deliveriesPerS: rep.DeliveriesPerS, loss: rep.Loss,
		cpuMsPerPublish: rep.Stats.CPUMsPerPublish}
}

func benchCluster(b *testing.B, data string, workload []string, nodes int) benchResult {
	rs := sigiltest.StartRedis(b)
	defer rs.Stop()
	var urls []string
	for i := range nodes {
		url, stop := benchServe(b, "--data-dir", data, "--redis", rs.URL, "--node", fmt.Sprintf("node%d", i+1))
		defer stop()
		urls = append(urls, url)
	}
	before := redisInfo(b, rs.Addr)
	rep := benchLoad(b, urls, workload)
	after := redisInfo(b, rs.Addr)
	r := benchResult{setup: fmt.Sprintf("%d node(s), Redis", nodes), publishes: rep.Publishes, deliveriesPerS: rep.DeliveriesPerS, loss: rep.Loss,
		cpuMsPerPublish: rep.Stats.CPUMsPerPublish, rttPerPublish: rep.Stats.RedisOpsPerPublish, rttPerFrame: rep.Stats.RedisOpsPerFrame}
	if rep.Publishes > 0 {
		p := float64(rep.Publishes)
		r.redisCPUMsPerPublish = 1000 * (after["used_cpu_sys"] + after["used_cpu_user"] - before["used_cpu_sys"] - before["used_cpu_user"]) / p
		var cmds []string
		for k, v := range after {
			name, ok := strings.CutPrefix(k, "cmdstat_")
			if !ok || name == "info" {
				continue
			}
			if d := v - before[k]; d/p >= 0.01 {
				cmds = append(cmds, fmt.Sprintf("%s %.2f", name, d/p))
			}
		}
		sort.Strings(cmds)
		r.commands = "(" + strings.Join(cmds, ", ") + ")"
	}
	return r
}

// redisInfo reads Redis' CPU time and the calls of each command, as
// "used_cpu_sys", "used_cpu_user" and "cmdstat_<name>".
func redisInfo(b *testing.B, addr string) map[string]float64 {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("redis-cli", "-h", host, "-p", port, "INFO", "all").Output()
	if err != nil {
		b.Fatalf("redis-cli INFO: %v", err)
	}
	v := map[string]float64{}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		k, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		if strings.HasPrefix(k, "cmdstat_") {
			calls, _, _ := strings.Cut(strings.TrimPrefix(val, "calls="), ",")
			val = calls
		}
		if x, err := strconv.ParseFloat(val, 64); err == nil {
			v[k] = x
		}
	}
	return v
}
