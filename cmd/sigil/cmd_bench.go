package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"github.com/gorilla/websocket"
	"github.com/sigil-ws/sigil/protocol"
	"golang.org/x/crypto/argon2"
)

// runBench implements "sigil bench": it starts a sigil serve process of
// its own (pinned to one core when the machine has two or more, this
// process then kept off that core), drives it with pre-signed frames over
// raw WebSockets from this process, reads
// the server's CPU time from /proc/PID/stat and its RSS from
// /proc/PID/status, and reports each figure as a ratio to a baseline
// measured in the same run on the server's core: raw ed25519.Verify and
// ed25519.Sign, timed during each round by the probe process
// (cmd_bench_probe.go), and a plain gorilla relay of the same frames
// (cmd_bench_relay.go).
func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f benchFlags
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&f.sigil, "sigil", "", "the sigil binary to serve with (default: this one); compare builds by running the bench with each")
	fs.IntVar(&f.conns, "conns", 64, "publisher connections for the flat-out rows")
	fs.IntVar(&f.frames, "frames", 64*150, "publishes per flat-out round (spread over --conns)")
	fs.IntVar(&f.rounds, "rounds", 3, "rounds of each flat-out row")
	fs.IntVar(&f.rate, "rate", 2000, "publishes per second of the fixed-rate row")
	fs.DurationVar(&f.rateFor, "rate-duration", 5*time.Second, "length of the fixed-rate row (and of its relay baseline)")
	fs.IntVar(&f.fanout, "fanout", 1000, "subscribers of the fan-out row (0: skip)")
	fs.IntVar(&f.fanPubs, "fanout-publishes", 200, "publishes of the fan-out row, one in flight at a time")
	fs.IntVar(&f.idle, "idle", 10000, "idle sessions for the memory and idle-CPU rows (0: skip)")
	fs.DurationVar(&f.idleFor, "idle-duration", 35*time.Second, "how long idle CPU is measured (the server pings every 30 s)")
	fs.BoolVar(&f.idleOnly, "idle-only", false, "run only the idle rows (RSS per idle session, idle CPU) against a fresh server: no relay, no calibration")
	fs.StringVar(&f.cpu, "server-cpu", "auto", "CPU the server and the baseline process are pinned to (taskset -c); auto: 0 on a machine with 2+ CPUs, none: no pinning")
	fs.DurationVar(&f.calibrate, "calibrate", time.Second, "CPU time spent timing raw verify and raw sign, each, before and after the rows")
	fs.BoolVar(&f.asJSON, "json", false, "print the report as one JSON object")
	fs.StringVar(&f.rows, "rows", benchAllRows, "the rows to measure, comma-separated: in (no subscriber), out (one subscriber), hist (history on), fixed (fixed rate and p99), fan, idle, audit (the no-subscriber row against fresh servers with the audit log off, sync and async)")
	fs.BoolVar(&f.relayMode, "relay", false, "internal: run as the baseline process")
	fs.BoolVar(&f.idleBase, "idle-baseline", false, "internal: run as the idle rows' baseline process (plain gorilla)")
	fs.BoolVar(&f.probeMode, "probe", false, "internal: run as the probe process (raw verify and sign timed during the rows)")
	fs.StringVar(&f.idleHold, "idle-hold", "", "internal: run as the idle rows' holder of --idle connections to this URL")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if f.relayMode {
		return runRelay(stdout)
	}
	if f.idleBase {
		return runIdleBaseline(stdout)
	}
	if f.probeMode {
		return runProbe(stdout)
	}
	if f.idleHold != "" {
		return runIdleHold(stdout, f.idleHold, f.idle)
	}
	switch {
	case fs.NArg() != 0:
		return errors.New("usage: sigil bench [flags]")
	case f.conns < 1 || f.frames < f.conns || f.rounds < 1 || f.rate < 1 || f.rateFor <= 0:
		return errors.New("--conns, --rounds, --rate must be positive, --frames at least --conns")
	case f.fanout < 0 || f.fanPubs < 1 || f.idle < 0 || f.idleFor <= 0:
		return errors.New("--fanout and --idle must not be negative, --fanout-publishes positive")
	case f.idleOnly && f.idle == 0:
		return errors.New("--idle-only needs --idle sessions")
	}
	rows := map[string]bool{}
	for _, r := range strings.Split(f.rows, ",") {
		if !slices.Contains(strings.Split(benchAllRows, ","), r) {
			return fmt.Errorf("--rows: unknown row %q (rows: %s)", r, benchAllRows)
		}
		rows[r] = true
	}
	b := &bench{f: f, rows: rows, progress: stderr}
	defer b.stop()
	rep, err := b.run(ctx)
	if err != nil {
		return err
	}
	if f.asJSON {
		return json.NewEncoder(stdout).Encode(rep)
	}
	rep.print(stdout)
	return nil
}

// benchAllRows are the names of the rows --rows selects.
const benchAllRows = "in,out,hist,fixed,fan,idle,audit"

// The bench's channels: live.> has no history (the rows measure the
// live path), rooms.> keeps the default policy's history.
const (
	benchLiveIn  = "live.bench-in"
	benchLiveOut = "live.bench-out"
	benchLiveFan = "live.bench-fan"
	benchHist    = "rooms.bench-hist"
)

type benchFlags struct {
	sigil, cpu, rows, idleHold  string
	conns, frames, rounds, rate int
	fanout, fanPubs, idle       int
	rateFor, idleFor, calibrate time.Duration
	asJSON, relayMode, idleOnly bool
	idleBase, probeMode         bool
}

// benchReport is the output of sigil bench; every ratio is against a
// baseline measured in the same run.
type benchReport struct {
	Server    string     `json:"server"` // the sigil binary
	CPUs      int        `json:"cpus"`
	Pinned    string     `json:"pinned"`              // taskset CPU of the server and the baseline, "" if none
	VerifyNs  float64    `json:"raw_verify_ns"`       // ed25519.Verify of a publish-sized input, on the server's core
	SignNs    float64    `json:"raw_sign_ns"`         // ed25519.Sign of a deliver-sized input
	Rows      []benchRow `json:"rows"`                // the table
	FrameSize int        `json:"publish_frame_bytes"` // the size of a publish frame
}

type benchRow struct {
	Name   string  `json:"name"`
	Value  float64 `json:"value"`
	Unit   string  `json:"unit"`
	Ratio  float64 `json:"ratio,omitempty"` // value ÷ baseline (0: no baseline)
	Of     string  `json:"ratio_of,omitempty"`
	Target string  `json:"target,omitempty"`
	// BaseNs is the raw baseline of this row's ratio, when it is raw
	// verify and/or sign: the probe's mean over the row's rounds (the
	// flat-out rows), or the mean of the calibrations right before and
	// right after the row (the fixed-rate row); the machine's speed
	// drifts within a run (0: none).
	BaseNs float64 `json:"baseline_ns,omitempty"`
	// RoundRatios are the ratios of each round, when Ratio is their
	// median (the flat-out, fan-out, p99 and audit rows).
	RoundRatios []float64 `json:"round_ratios,omitempty"`
}

func (r *benchReport) add(name string, v float64, unit string, ratio float64, of, target string) {
	finite := func(x float64) float64 {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return 0 // nothing measured (JSON has no NaN)
		}
		return round3(x)
	}
	r.Rows = append(r.Rows, benchRow{Name: name, Value: finite(v), Unit: unit, Ratio: finite(ratio), Of: of, Target: target})
}

// rounds records the last row's rounds' ratios.
func (r *benchReport) rounds(ratios []float64) {
	row := &r.Rows[len(r.Rows)-1]
	for _, x := range ratios {
		row.RoundRatios = append(row.RoundRatios, round3(x))
	}
}

// based records the last row's raw baseline.
func (r *benchReport) based(ns float64) { r.Rows[len(r.Rows)-1].BaseNs = round3(ns) }

func (r *benchReport) print(w io.Writer) {
	fmt.Fprintf(w, "sigil bench: server %s, %d CPUs, pinned to %q; raw ed25519.Verify %.1f µs, ed25519.Sign %.1f µs (means of the run); publish frame %d bytes\n\n",
		r.Server, r.CPUs, r.Pinned, r.VerifyNs/1e3, r.SignNs/1e3, r.FrameSize)
	fmt.Fprintf(w, "| figure | value | ratio | target |\n|---|---|---|---|\n")
	for _, row := range r.Rows {
		ratio := ""
		if row.Ratio != 0 {
			ratio = fmt.Sprintf("**%.2f×** %s", row.Ratio, row.Of)
			if row.BaseNs > 0 {
				ratio += fmt.Sprintf(" (%.1f µs, timed with the row)", row.BaseNs/1e3)
			}
		}
		fmt.Fprintf(w, "| %s | %.3g %s | %s | %s |\n", row.Name, row.Value, row.Unit, ratio, row.Target)
	}
}

type bench struct {
	f        benchFlags
	rows     map[string]bool // the rows to measure
	progress io.Writer
	sayMu    sync.Mutex // say is called from the audit rows' goroutines
	pin      string     // the CPU of the server and the baseline processes ("": none)
	dir      string
	procs    []*exec.Cmd
	srvPID   int
	relayPID int
	base     string // the server's http://host:port
	relayURL string
	probeURL string // the probe process (cmd_bench_probe.go)
	probeReq []byte // its /start request: the sample frame's calibration
	password string
	users    atomic.Int64
}

func (b *bench) say(format string, args ...any) {
	b.sayMu.Lock()
	defer b.sayMu.Unlock()
	fmt.Fprintf(b.progress, "bench: "+format+"\n", args...)
}

func (b *bench) stop() {
	for _, p := range b.procs {
		stopCmd(p)
	}
	if b.dir != "" {
		_ = os.RemoveAll(b.dir)
	}
}

// stopProc stops the process pid that start started, before the others.
func (b *bench) stopProc(pid int) {
	b.procs = slices.DeleteFunc(b.procs, func(p *exec.Cmd) bool {
		if p.Process.Pid != pid {
			return false
		}
		stopCmd(p)
		return true
	})
}

func stopCmd(p *exec.Cmd) {
	_ = p.Process.Signal(syscall.SIGTERM)
	_ = p.Wait()
}

// start runs this binary (or bin) with args on the pinned CPU and waits
// for its ready line.
func (b *bench) start(bin, pin, prefix string, args ...string) (string, int, error) {
	if bin == "" {
		exe, err := os.Executable()
		if err != nil {
			return "", 0, err
		}
		bin = exe
	}
	argv := append([]string{bin}, args...)
	if pin != "" {
		argv = append([]string{"taskset", "-c", pin}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = os.Environ()
	cmd.Stderr = os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", 0, err
	}
	if err := cmd.Start(); err != nil {
		return "", 0, err
	}
	b.procs = append(b.procs, cmd)
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if u, ok := strings.CutPrefix(sc.Text(), prefix); ok {
			go func() { _, _ = io.Copy(io.Discard, out) }()
			return u, cmd.Process.Pid, nil
		}
	}
	return "", 0, fmt.Errorf("%s: no ready line", bin)
}

func (b *bench) run(ctx context.Context) (*benchReport, error) {
	pin := b.f.cpu
	switch pin {
	case "auto":
		pin = ""
		if _, err := exec.LookPath("taskset"); err == nil && runtime.NumCPU() >= 2 {
			pin = "0"
		}
	case "none":
		pin = ""
	}
	b.pin = pin
	rep := &benchReport{Server: b.f.sigil, CPUs: runtime.NumCPU(), Pinned: pin}
	if pin != "" {
		if err := keepOff(pin); err != nil {
			return nil, err
		}
	}
	if rep.Server == "" {
		rep.Server = "(this binary)"
	}
	var err error
	if b.dir, err = os.MkdirTemp("", "sigil-bench-"); err != nil {
		return nil, err
	}
	if err := b.writeData(b.dir); err != nil {
		return nil, err
	}
	b.say("starting sigil serve and the baseline process")
	if b.base, b.srvPID, err = b.start(b.f.sigil, pin, "SIGIL_READY url=", "serve", "--addr", "127.0.0.1:0", "--data-dir", b.dir,
		"--log-level", "error", "--max-refresh-families", "1000000", "--policy", filepath.Join(b.dir, "policy.json")); err != nil {
		return nil, err
	}
	if b.f.idleOnly {
		idle, err := b.idleSessions(ctx)
		if err != nil {
			return nil, err
		}
		rep.addIdle(b.f.idle, idle)
		return rep, nil
	}
	if b.relayURL, b.relayPID, err = b.start("", pin, relayReady, "bench", "--relay"); err != nil {
		return nil, err
	}

	// The publish frame and the raw baselines.
	probe, err := b.session(ctx)
	if err != nil {
		return nil, err
	}
	sample, err := probe.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: benchLiveIn, Body: benchBody})
	if err != nil {
		return nil, err
	}
	if b.probeReq, err = b.calibrationOf(probe, sample); err != nil {
		return nil, err
	}
	probe.ws.Close()
	rep.FrameSize = len(sample)
	if b.probeURL, _, err = b.start("", pin, probeReady, "bench", "--probe"); err != nil {
		return nil, err
	}
	// The raw baselines: the flat-out rows' and the fan-out row's ratios
	// are against the probe, which times raw verify and sign on the
	// server's core while the row runs (cmd_bench_probe.go); the
	// fixed-rate row's (whose wake-ups and p99 a probe would disturb)
	// against the calibrations timed right before and after it. The
	// report's raw figures are the means of the calibrations.
	cal1, err := b.calibrate(probe, sample)
	if err != nil {
		return nil, err
	}
	cals := []*calibration{cal1}
	bracket := func() (v, s float64, err error) {
		c, err := b.calibrate(probe, sample)
		if err != nil {
			return 0, 0, err
		}
		prev := cals[len(cals)-1]
		cals = append(cals, c)
		return (prev.VerifyNs + c.VerifyNs) / 2, (prev.SignNs + c.SignNs) / 2, nil
	}
	// 1 and 2: flat out on a live channel, no subscriber, then one; and
	// a channel with history, no subscriber.
	var in, out, hist *flatResult
	var sub *benchSub
	if b.rows["in"] || b.rows["out"] || b.rows["hist"] {
		pubs, replies, err := b.publishers(ctx)
		if err != nil {
			return nil, err
		}
		if b.rows["in"] {
			if in, err = b.flatOut(ctx, pubs, replies, benchLiveIn, nil); err != nil {
				return nil, err
			}
		}
		if b.rows["hist"] {
			if hist, err = b.flatOut(ctx, pubs, replies, benchHist, nil); err != nil {
				return nil, err
			}
		}
		if b.rows["out"] {
			if sub, err = b.subscriber(ctx, benchLiveOut); err != nil {
				return nil, err
			}
			if out, err = b.flatOut(ctx, pubs, replies, benchLiveOut, sub); err != nil {
				return nil, err
			}
		}
		for _, p := range pubs {
			p.ws.Close()
		}
	}

	// 3 and 7: a fixed rate, one publisher and one subscriber, then the
	// relay with the same frames and pacing.
	var fixed *fixedResult
	var fixedV, fixedS float64
	if b.rows["fixed"] {
		if _, _, err = bracket(); err != nil { // right before the row
			return nil, err
		}
		if sub == nil {
			if sub, err = b.subscriber(ctx, benchLiveOut); err != nil {
				return nil, err
			}
		}
		pub1, err := b.session(ctx)
		if err != nil {
			return nil, err
		}
		if fixed, err = b.fixedRate(ctx, pub1, sub, cals[len(cals)-1].VerifyNs); err != nil {
			return nil, err
		}
		pub1.ws.Close()
		if fixedV, fixedS, err = bracket(); err != nil {
			return nil, err
		}
	}
	if sub != nil {
		sub.ws.Close()
	}

	// 4: fan-out.
	var fan *fanResult
	if b.f.fanout > 0 && b.rows["fan"] {
		if fan, err = b.fanOut(ctx); err != nil {
			return nil, err
		}
	}

	// The audit log's cost (issue 13): the no-subscriber row against
	// fresh servers, the log off, sync and async.
	var aud *auditResult
	if b.rows["audit"] {
		if aud, err = b.auditRows(ctx); err != nil {
			return nil, err
		}
	}

	// 5 and 6: idle sessions.
	var idle *idleResult
	if b.f.idle > 0 && b.rows["idle"] {
		if idle, err = b.idleSessions(ctx); err != nil {
			return nil, err
		}
	}

	if _, _, err := bracket(); err != nil {
		return nil, err
	}
	for _, c := range cals {
		rep.VerifyNs += c.VerifyNs / float64(len(cals))
		rep.SignNs += c.SignNs / float64(len(cals))
	}
	const probed = " (median of the rounds' ratios, each against the probe during the round)"
	if in != nil {
		ratios := in.ratios(rawVerify)
		rep.add("server CPU per verified publish, no subscriber", in.ns/1e3, "µs", median(slices.Clone(ratios)), "raw verify"+probed, "≤ 1.20×")
		rep.rounds(ratios)
		rep.based(in.probeMean(rawVerify))
	}
	var outRatio float64
	if out != nil {
		ratios := out.ratios(rawVerifySign)
		outRatio = median(slices.Clone(ratios))
		rep.add("server CPU per publish with one subscriber (verify, sign the deliver, write)", out.ns/1e3, "µs", outRatio, "raw verify + raw sign"+probed, "≤ 1.30×")
		rep.rounds(ratios)
		rep.based(out.probeMean(rawVerifySign))
	}
	if fixed != nil {
		ratio := math.NaN() // no flat-out figure to compare with
		if out != nil {
			// Both in units of raw verify + sign at the time: the
			// flat-out row's against its probe, this one's against the
			// calibrations beside it.
			ratio = fixed.cpuNs / (fixedV + fixedS) / outRatio
		}
		rep.add(fmt.Sprintf("the same at a fixed %d msg/s", b.f.rate), fixed.cpuNs/1e3, "µs", ratio, "the flat-out figure (each ÷ raw verify + sign timed beside it)", "≤ 1.2×")
		rep.based(fixedV + fixedS)
		// Not one of the rows: that row's floor, a relay that
		// verifies and signs each message at the same rate.
		if out != nil {
			ratio = fixed.signNs / (fixedV + fixedS) / outRatio
		}
		rep.add(fmt.Sprintf("the signing relay at %d msg/s (gorilla; verify each frame, sign a deliver's bytes, relay): the floor of the row above", b.f.rate), fixed.signNs/1e3, "µs", ratio, "Sigil's flat-out figure, as the row above", "")
		rep.based(fixedV + fixedS)
	}
	if fan != nil {
		rep.add(fmt.Sprintf("fan-out to %d subscribers, CPU per delivery", b.f.fanout), fan.sigilNs, "ns", median(slices.Clone(fan.ratios)), "gorilla PreparedMessage relay (median of the rounds' ratios, each side ÷ the probe's raw verify during it)", "≤ 1.0×")
		rep.rounds(fan.ratios)
	}
	if idle != nil {
		rep.addIdle(b.f.idle, idle)
	}
	if fixed != nil {
		rep.add(fmt.Sprintf("publish→deliver p99 at %d msg/s (the median of the rounds')", b.f.rate), fixed.p99Ns/1e3, "µs", median(slices.Clone(fixed.p99Ratios)), fmt.Sprintf("relay p99 + raw verify (median of the rounds' ratios, each against the relay's round after it; the relay's median p99 %.0f µs)", fixed.relayP99Ns/1e3), "≤ 2×")
		rep.rounds(fixed.p99Ratios)
		// Not one of the rows: that row's floor.
		rep.add(fmt.Sprintf("the signing relay's p99 at %d msg/s: the floor of the row above", b.f.rate), fixed.signP99Ns/1e3, "µs", median(slices.Clone(fixed.signRatios)), "the same baseline as the row above", "")
		rep.rounds(fixed.signRatios)
		// Not one of the rows: how long the server was ready to
		// run but its core ran something else, which the p99 includes.
		rep.add(fmt.Sprintf("server's wait for its CPU during the %d msg/s row (its threads' run-queue wait, summed)", b.f.rate), fixed.waitMsPerS, "ms/s", 0, "", "")
	}
	if aud != nil {
		rep.add("server CPU per verified publish, no subscriber, audit log sync (fsync per batch) ÷ the log off", aud.syncNs/1e3, "µs", median(slices.Clone(aud.syncRatios)), "the same row, log off (median of the rounds' ratios)", "≤ 1.15×")
		rep.rounds(aud.syncRatios)
		rep.add("the same, audit log async", aud.asyncNs/1e3, "µs", median(slices.Clone(aud.asyncRatios)), "the same row, log off (median of the rounds' ratios)", "≤ 1.05×")
		rep.rounds(aud.asyncRatios)
	}
	if hist != nil {
		// Not one of the rows: with history, every publish is
		// signed and stored even when no one is subscribed.
		ratios := hist.ratios(rawVerifySign)
		rep.add("with history on (the default rooms.> rule), no subscriber: verify, sign and store the deliver", hist.ns/1e3, "µs", median(slices.Clone(ratios)), "raw verify + raw sign"+probed, "")
		rep.rounds(ratios)
		rep.based(hist.probeMean(rawVerifySign))
	}
	return rep, nil
}

// keepOff keeps this process, the load generator, off cpu (the server's
// and the baseline's, a single CPU number): every thread of it is set to
// run on the other CPUs, and the threads it starts later inherit that.
func keepOff(cpu string) error {
	n, err := strconv.Atoi(cpu)
	if err != nil {
		return nil // a list: not ours to split
	}
	var mask [16]uint64 // CPUs 0-1023
	others := false
	for i := range min(runtime.NumCPU(), 1024) {
		if i != n {
			mask[i/64] |= 1 << (i % 64)
			others = true
		}
	}
	if !others {
		return nil
	}
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return err
	}
	for _, t := range tasks {
		tid, err := strconv.Atoi(t.Name())
		if err != nil {
			continue
		}
		if _, _, e := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, uintptr(tid), unsafe.Sizeof(mask), uintptr(unsafe.Pointer(&mask))); e != 0 && e != syscall.ESRCH {
			return fmt.Errorf("keeping the load generator off CPU %d: %w", n, e)
		}
	}
	return nil
}

var benchBody = json.RawMessage(`{"text":"hello, world: a chat message of a typical length, about eighty bytes"}`)

// writeData makes the server's data directory: a signing key, and a
// users file whose users share a password hashed with the cheapest
// argon2id the server accepts, so that thousands of logins are quick.
func (b *bench) writeData(dir string) error {
	var out bytes.Buffer
	if code := run([]string{"keygen", "--data-dir", dir}, nil, &out, &out); code != 0 {
		return fmt.Errorf("keygen: %s", out.String())
	}
	pw := make([]byte, 18)
	if _, err := io.ReadFull(rand.Reader, pw); err != nil {
		return err
	}
	if b.password == "" {
		b.password = base64.RawURLEncoding.EncodeToString(pw)
	}
	salt := pw[:16]
	key := argon2.IDKey([]byte(b.password), salt, 1, 8, 1, 32)
	hash := fmt.Sprintf("$argon2id$v=%d$m=8,t=1,p=1$%s$%s", argon2.Version,
		base64.RawStdEncoding.EncodeToString(salt), base64.RawStdEncoding.EncodeToString(key))
	type user struct {
		Name  string   `json:"name"`
		Hash  string   `json:"hash"`
		Roles []string `json:"roles"`
	}
	var doc struct {
		Users []user `json:"users"`
	}
	for i := range benchUsers {
		doc.Users = append(doc.Users, user{Name: fmt.Sprintf("bench%03d", i), Hash: hash, Roles: []string{"user"}})
	}
	data, err := json.Marshal(doc)
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "users.json"), data, 0o600); err != nil {
		return err
	}
	// The policy: users publish and subscribe in live.> (no history) and
	// rooms.>, which keeps the default policy's history.
	users := []string{"user"}
	var pol struct {
		Rules   []protocol.Rule        `json:"rules"`
		History []protocol.HistoryRule `json:"history"`
	}
	pol.Rules = []protocol.Rule{
		{Action: protocol.ActPing, Roles: []string{}},
		{Action: protocol.ActUnsub, Channel: ">", Roles: []string{}},
	}
	for _, ch := range []string{"live.>", "rooms.>"} {
		pol.Rules = append(pol.Rules, protocol.Rule{Action: protocol.ActSub, Channel: ch, Roles: users},
			protocol.Rule{Action: protocol.ActPub, Channel: ch, Roles: users})
	}
	pol.History = protocol.DefaultPolicy().HistoryRules()
	if data, err = json.Marshal(pol); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "policy.json"), data, 0o600)
}

const benchUsers = 64

// benchSession is an authenticated session over a raw WebSocket.
type benchSession struct {
	ws     *websocket.Conn
	signer *protocol.ClientSigner
	pub    ed25519.PublicKey
}

var benchDialer = websocket.Dialer{Subprotocols: []string{protocol.Subprotocol}, ReadBufferSize: 1024, WriteBufferSize: 1024}

// session logs in (password grant) and says hello.
func (b *bench) session(ctx context.Context) (*benchSession, error) {
	key, err := protocol.GenerateKey(protocol.EdDSA, nil)
	if err != nil {
		return nil, err
	}
	jwk, err := key.Public().MarshalJSON()
	if err != nil {
		return nil, err
	}
	user := fmt.Sprintf("bench%03d", b.users.Add(1)%benchUsers)
	req, _ := json.Marshal(protocol.TokenRequest{GrantType: protocol.GrantPassword, Username: user, Password: b.password, JWK: jwk})
	hr, err := http.NewRequestWithContext(ctx, http.MethodPost, b.base+"/v1/token", bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var tr protocol.TokenResponse
	if resp.StatusCode != http.StatusOK || json.NewDecoder(resp.Body).Decode(&tr) != nil {
		return nil, fmt.Errorf("login as %s: %s", user, resp.Status)
	}
	ws, _, err := benchDialer.DialContext(ctx, "ws"+strings.TrimPrefix(b.base, "http")+"/v1/ws", nil)
	if err != nil {
		return nil, err
	}
	s := &benchSession{ws: ws, signer: &protocol.ClientSigner{Key: key, Session: tr.Session, Subject: tr.Subject},
		pub: key.Public().Key().(ed25519.PublicKey)}
	body, _ := json.Marshal(protocol.HelloBody{Token: tr.Token, JWK: jwk})
	hello, err := s.signer.Sign(&protocol.Envelope{Action: protocol.ActHello, Body: body})
	if err != nil {
		ws.Close()
		return nil, err
	}
	_ = ws.SetReadDeadline(time.Now().Add(30 * time.Second))
	if err := ws.WriteMessage(websocket.TextMessage, hello); err != nil {
		ws.Close()
		return nil, err
	}
	if act, err := s.readAct(); err != nil || act != protocol.ActWelcome {
		ws.Close()
		return nil, fmt.Errorf("hello: %q %v", act, err)
	}
	_ = ws.SetReadDeadline(time.Time{})
	return s, nil
}

// readAct reads one frame and returns its act (the frame is the server's;
// the bench does not verify it).
func (s *benchSession) readAct() (string, error) {
	_, data, err := s.ws.ReadMessage()
	if err != nil {
		return "", err
	}
	p, err := protocol.UnsafeClaims(data)
	if err != nil {
		return "", err
	}
	var env struct {
		Act string `json:"act"`
	}
	err = json.Unmarshal(p, &env)
	return env.Act, err
}

// publishers opens --conns sessions and counts the replies they read.
func (b *bench) publishers(ctx context.Context) ([]*benchSession, *atomic.Int64, error) {
	pubs, err := b.sessions(ctx, b.f.conns, "publishers")
	if err != nil {
		return nil, nil, err
	}
	var replies atomic.Int64
	for _, p := range pubs {
		go func() {
			for {
				act, err := p.readAct()
				if err != nil {
					return
				}
				if act == protocol.ActReply {
					replies.Add(1)
				}
			}
		}()
	}
	return pubs, &replies, nil
}

// sessions opens n sessions, 8 at a time.
func (b *bench) sessions(ctx context.Context, n int, what string) ([]*benchSession, error) {
	return b.openAll(ctx, n, what, b.session)
}

// openAll opens n connections with open, 8 at a time.
func (b *bench) openAll(ctx context.Context, n int, what string, open func(context.Context) (*benchSession, error)) ([]*benchSession, error) {
	out := make([]*benchSession, n)
	errs := make([]error, n)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	stop := b.ticker(func() string { return fmt.Sprintf("%s: %d/%d sessions", what, done.Load(), n) })
	defer stop()
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				out[i], errs[i] = open(ctx)
				done.Add(1)
			}
		}()
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		for _, s := range out {
			if s != nil {
				s.ws.Close()
			}
		}
		return nil, err
	}
	return out, nil
}

// ticker prints line() every second until stopped: the progress display.
func (b *bench) ticker(line func() string) func() {
	done := make(chan struct{})
	go func() {
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
				b.say("%s", line())
			}
		}
	}()
	return func() { close(done) }
}

// subscriber is a session subscribed to ch that counts and timestamps
// what it receives from then on.
type benchSub struct {
	*benchSession
	got   atomic.Int64
	mu    sync.Mutex
	times []time.Time
}

func (b *bench) subscriber(ctx context.Context, ch string) (*benchSub, error) {
	s, err := b.session(ctx)
	if err != nil {
		return nil, err
	}
	fr, err := s.signer.Sign(&protocol.Envelope{Action: protocol.ActSub, Channel: ch, Corr: "sub"})
	if err != nil {
		return nil, err
	}
	if err := s.ws.WriteMessage(websocket.TextMessage, fr); err != nil {
		return nil, err
	}
	for {
		act, err := s.readAct()
		if err != nil {
			return nil, err
		}
		if act == protocol.ActReply {
			break
		}
	}
	sub := &benchSub{benchSession: s}
	go func() {
		for {
			if _, _, err := s.ws.NextReader(); err != nil {
				return
			}
			t := time.Now()
			sub.mu.Lock()
			if sub.times != nil {
				sub.times = append(sub.times, t)
			}
			sub.mu.Unlock()
			sub.got.Add(1)
		}
	}()
	return sub, nil
}

// waitCount waits until c reaches want, or no progress for 30 s.
func waitCount(c *atomic.Int64, want int64, what string) error {
	last, since := c.Load(), time.Now()
	for c.Load() < want {
		time.Sleep(200 * time.Microsecond)
		if n := c.Load(); n != last {
			last, since = n, time.Now()
		} else if time.Since(since) > 30*time.Second {
			return fmt.Errorf("%s: %d of %d after 30 s without progress", what, n, want)
		}
	}
	return nil
}

// procCPU returns the CPU time of process pid: the sum of its threads'
// run time in /proc/PID/task/*/schedstat (nanoseconds; a Go process keeps
// its threads), or, without schedstat, user+system from /proc/PID/stat
// (10 ms ticks).
func procCPU(pid int) (time.Duration, error) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue // the thread exited
		}
		f := strings.Fields(string(data))
		if len(f) == 0 {
			continue
		}
		ns, err := strconv.ParseInt(f[0], 10, 64)
		if err != nil {
			return 0, err
		}
		sum += time.Duration(ns)
	}
	if sum > 0 {
		return sum, nil
	}
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The fields after the command name, which is in parentheses.
	i := bytes.LastIndexByte(data, ')')
	fields := strings.Fields(string(data[i+1:]))
	if len(fields) < 13 {
		return 0, errors.New("short /proc stat")
	}
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / clockTicks, nil
}

// procWait returns how long process pid's threads have been runnable but
// waiting for a CPU (the second field of /proc/PID/task/*/schedstat),
// summed over its threads: the time other processes on its core (and its
// own threads, one another) took from it. Zero without schedstat.
func procWait(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum time.Duration
	for _, t := range tasks {
		data, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		if f := strings.Fields(string(data)); len(f) > 1 {
			ns, _ := strconv.ParseInt(f[1], 10, 64)
			sum += time.Duration(ns)
		}
	}
	return sum
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on Linux.
const clockTicks = 100

// procRSS returns the resident set size of process pid in bytes.
func procRSS(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 64)
			return kb * 1024, err
		}
	}
	return 0, errors.New("no VmRSS")
}

// flatResult is a flat-out row: the server's CPU per publish over all
// its rounds, and each round's, with the probe's raw timings during that
// round (none for the audit rows, whose baseline is another server).
type flatResult struct {
	ns     float64
	rounds []flatRound
}

type flatRound struct {
	ns    float64
	probe probeSample
}

// ratios are the rounds' CPU per publish ÷ base(the probe's timings in
// the same round).
func (f *flatResult) ratios(base func(probeSample) float64) []float64 {
	var out []float64
	for _, r := range f.rounds {
		out = append(out, r.ns/base(r.probe))
	}
	return out
}

// probeMean is the mean of base over the rounds' probes.
func (f *flatResult) probeMean(base func(probeSample) float64) float64 {
	sum := 0.0
	for _, r := range f.rounds {
		sum += base(r.probe)
	}
	return sum / float64(len(f.rounds))
}

func rawVerify(p probeSample) float64     { return p.VerifyNs }
func rawVerifySign(p probeSample) float64 { return p.VerifyNs + p.SignNs }

// flatOut publishes --frames pre-signed frames per round, spread over the
// publishers, as fast as they go, --rounds times, with the probe timing
// raw verify and sign on the server's core during each round, and returns
// the server's CPU per publish. The last frame of each publisher carries a
// cid, so its reply says the server has handled them all; with sub, every
// delivery must also have arrived.
func (b *bench) flatOut(ctx context.Context, pubs []*benchSession, replies *atomic.Int64, ch string, sub *benchSub) (*flatResult, error) {
	return b.flatOutOn(ctx, b.srvPID, nil, pubs, replies, ch, sub)
}

// flatOutOn is flatOut on the server process pid. With together, each
// round's publishing starts once every caller sharing it has signed its
// frames (together.Done, then together.Wait: one round only), and the
// probe is not run: the callers' servers are one another's baseline.
func (b *bench) flatOutOn(ctx context.Context, pid int, together *sync.WaitGroup, pubs []*benchSession, replies *atomic.Int64, ch string, sub *benchSub) (*flatResult, error) {
	per := b.f.frames / len(pubs)
	arrived := false
	defer func() {
		if together != nil && !arrived {
			together.Done() // failed before the start: the others go on
		}
	}()
	probing := together == nil && b.probeURL != ""
	var cpu time.Duration
	total := 0
	res := &flatResult{}
	for r := range b.f.rounds {
		b.say("flat out on %s (%d subscriber(s)): round %d of %d, %d publishes", ch, map[bool]int{false: 0, true: 1}[sub != nil], r+1, b.f.rounds, per*len(pubs))
		frames := make([][][]byte, len(pubs))
		for i, p := range pubs {
			for j := range per {
				env := &protocol.Envelope{Action: protocol.ActPub, Channel: ch, Body: benchBody}
				if j == per-1 {
					env.Corr = "last"
				}
				fr, err := p.signer.Sign(env)
				if err != nil {
					return nil, err
				}
				frames[i] = append(frames[i], fr)
			}
		}
		wantReplies := replies.Load() + int64(len(pubs))
		var wantDeliveries int64
		if sub != nil {
			wantDeliveries = sub.got.Load() + int64(per*len(pubs))
		}
		if together != nil && !arrived {
			arrived = true
			together.Done()
			together.Wait()
		}
		if probing {
			if err := b.probeStart(); err != nil {
				return nil, err
			}
		}
		c0, err := procCPU(pid)
		if err != nil {
			return nil, err
		}
		// With a subscriber, at most window deliveries are in flight,
		// well within the server's send queue (256): the row measures
		// the cost of a delivery, not of a slow consumer.
		const window = 128
		var sent atomic.Int64
		sent.Store(wantDeliveries - int64(per*len(pubs)))
		var wg sync.WaitGroup
		for i, p := range pubs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for _, fr := range frames[i] {
					for sub != nil && sent.Load()-sub.got.Load() >= window {
						time.Sleep(20 * time.Microsecond)
					}
					sent.Add(1)
					if p.ws.WriteMessage(websocket.TextMessage, fr) != nil {
						return
					}
				}
			}()
		}
		wg.Wait()
		if err := waitCount(replies, wantReplies, "replies"); err != nil {
			return nil, err
		}
		if sub != nil {
			if err := waitCount(&sub.got, wantDeliveries, "deliveries"); err != nil {
				return nil, err
			}
		}
		c1, err := procCPU(pid)
		if err != nil {
			return nil, err
		}
		round := flatRound{ns: float64((c1 - c0).Nanoseconds()) / float64(per*len(pubs))}
		if probing {
			if round.probe, err = b.probeStop(); err != nil {
				return nil, err
			}
		}
		res.rounds = append(res.rounds, round)
		cpu += c1 - c0
		total += per * len(pubs)
	}
	res.ns = float64(cpu.Nanoseconds()) / float64(total)
	return res, nil
}

type fixedResult struct {
	cpuNs      float64   // the server's CPU per publish, over all rounds
	relayNs    float64   // the plain relay's, the same frames at the same pace
	signNs     float64   // the signing relay's (relayWork), the same
	p99Ns      float64   // the median of the rounds' p99s
	relayP99Ns float64   // the relay's, the same
	signP99Ns  float64   // the signing relay's, the same
	p99Ratios  []float64 // each round's p99 ÷ (the relay's p99 + raw verify)
	signRatios []float64 // the same of the signing relay's p99
	waitMsPerS float64   // the server's run-queue wait during the row
}

// fixedRate publishes at --rate for --rate-duration from pub to sub's
// channel, one frame per tick, and measures the server's CPU per publish
// and the p99 from the write of a frame to the arrival of its delivery;
// and the same frames at the same pace through the plain relay, and then
// through the signing relay (relayWork: verify each frame, sign a
// deliver's worth of bytes, relay), whose CPU per message is the floor of
// a server that does per message what Sigil must, with one wake-up per
// message. The time is cut into 2 × --rounds rounds, each Sigil's then
// the relays', alternated: the p99 of a few milliseconds is the machine's
// hiccups as much as the server's work, and the relay's, measured once
// after Sigil's, moved from 0.2 to 2.1 ms between runs. A round's ratio
// is Sigil's p99 over the plain relay's in the same round plus verify
// (the raw figure timed just before the row).
func (b *bench) fixedRate(ctx context.Context, pub *benchSession, sub *benchSub, verifyNs float64) (*fixedResult, error) {
	n := int(float64(b.f.rate) * b.f.rateFor.Seconds())
	rounds := max(1, min(2*b.f.rounds, n/100))
	b.say("fixed rate: %d publishes at %d/s, in %d rounds alternated with the plain and the signing relay", n, b.f.rate, rounds)
	frames := make([][]byte, n)
	for i := range frames {
		fr, err := pub.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: benchLiveOut, Body: benchBody})
		if err != nil {
			return nil, err
		}
		frames[i] = fr
	}

	// The relays: a subscriber, and a publisher to each.
	relayWS := "ws" + strings.TrimPrefix(b.relayURL, "http")
	rsub, _, err := websocket.DefaultDialer.DialContext(ctx, relayWS+"/sub", nil)
	if err != nil {
		return nil, err
	}
	defer rsub.Close()
	rpub, _, err := websocket.DefaultDialer.DialContext(ctx, relayWS+"/pub", nil)
	if err != nil {
		return nil, err
	}
	defer rpub.Close()
	q := url.Values{"verify": {base64.RawURLEncoding.EncodeToString(pub.pub)}, "sign": {strconv.Itoa(deliverSignSize(frames[0]))}}
	spub, _, err := websocket.DefaultDialer.DialContext(ctx, relayWS+"/pub?"+q.Encode(), nil)
	if err != nil {
		return nil, err
	}
	defer spub.Close()
	time.Sleep(100 * time.Millisecond) // the relay registers /sub on its own goroutine
	var rgot atomic.Int64
	var rmu sync.Mutex
	var rtimes []time.Time
	go func() {
		for {
			if _, _, err := rsub.NextReader(); err != nil {
				return
			}
			t := time.Now()
			rmu.Lock()
			rtimes = append(rtimes, t)
			rmu.Unlock()
			rgot.Add(1)
		}
	}()
	// relayRound paces part through the relay on ws, and returns the
	// relay's CPU and the p99.
	relayRound := func(ws *websocket.Conn, part [][]byte, what string) (time.Duration, float64, error) {
		rmu.Lock()
		rtimes = make([]time.Time, 0, len(part))
		rmu.Unlock()
		rwant := rgot.Load() + int64(len(part))
		c0, err := procCPU(b.relayPID)
		if err != nil {
			return 0, 0, err
		}
		rsent := pace(ws, part, b.f.rate)
		if err := waitCount(&rgot, rwant, what); err != nil {
			return 0, 0, err
		}
		c1, err := procCPU(b.relayPID)
		if err != nil {
			return 0, 0, err
		}
		rmu.Lock()
		defer rmu.Unlock()
		return c1 - c0, p99(rsent, rtimes), nil
	}

	res := &fixedResult{}
	var cpu, wait, rcpu, scpu time.Duration
	var busy time.Duration
	var p99s, rp99s, sp99s []float64
	for r := range rounds {
		part := frames[r*n/rounds : (r+1)*n/rounds]
		sub.mu.Lock()
		sub.times = make([]time.Time, 0, len(part))
		sub.mu.Unlock()
		want := sub.got.Load() + int64(len(part))
		c0, err := procCPU(b.srvPID)
		if err != nil {
			return nil, err
		}
		w0, t0 := procWait(b.srvPID), time.Now()
		sent := pace(pub.ws, part, b.f.rate)
		if err := waitCount(&sub.got, want, "fixed-rate deliveries"); err != nil {
			return nil, err
		}
		c1, err := procCPU(b.srvPID)
		if err != nil {
			return nil, err
		}
		cpu += c1 - c0
		wait += procWait(b.srvPID) - w0
		busy += time.Since(t0)
		sub.mu.Lock()
		p99s = append(p99s, p99(sent, sub.times))
		sub.times = nil
		sub.mu.Unlock()

		// The relays: the same frames, the same pace.
		c, p, err := relayRound(rpub, part, "relay deliveries")
		if err != nil {
			return nil, err
		}
		rcpu += c
		rp99s = append(rp99s, p)
		res.p99Ratios = append(res.p99Ratios, p99s[r]/(p+verifyNs))
		if c, p, err = relayRound(spub, part, "signing relay deliveries"); err != nil {
			return nil, err
		}
		scpu += c
		sp99s = append(sp99s, p)
		res.signRatios = append(res.signRatios, p/(rp99s[r]+verifyNs))
	}
	res.cpuNs = float64(cpu.Nanoseconds()) / float64(n)
	res.relayNs = float64(rcpu.Nanoseconds()) / float64(n)
	res.signNs = float64(scpu.Nanoseconds()) / float64(n)
	res.waitMsPerS = float64(wait.Milliseconds()) / busy.Seconds()
	res.p99Ns, res.relayP99Ns, res.signP99Ns = median(p99s), median(rp99s), median(sp99s)
	b.say("fixed rate: CPU per message: sigil %.1f µs, plain relay %.1f µs, signing relay %.1f µs", res.cpuNs/1e3, res.relayNs/1e3, res.signNs/1e3)
	return res, nil
}

// pace writes frames at rate per second and returns when each was written.
func pace(ws *websocket.Conn, frames [][]byte, rate int) []time.Time {
	sent := make([]time.Time, len(frames))
	start := time.Now()
	step := time.Second / time.Duration(rate)
	for i, fr := range frames {
		if d := time.Until(start.Add(time.Duration(i) * step)); d > 0 {
			time.Sleep(d)
		}
		sent[i] = time.Now()
		_ = ws.WriteMessage(websocket.TextMessage, fr)
	}
	return sent
}

// p99 of recv[i] - sent[i] (deliveries arrive in publish order).
func p99(sent, recv []time.Time) float64 {
	n := min(len(sent), len(recv))
	if n == 0 {
		return math.NaN()
	}
	d := make([]float64, n)
	for i := range n {
		d[i] = float64(recv[i].Sub(sent[i]).Nanoseconds())
	}
	slices.Sort(d)
	return d[min(n-1, n*99/100)]
}

// fanResult is the fan-out row: CPU per delivery of sigil and of the
// relay, and each round's ratio of the two.
type fanResult struct {
	sigilNs, relayNs float64
	ratios           []float64
}

// fanOut subscribes --fanout sessions to one channel, and as many
// connections to the relay; then, in 2 × --rounds rounds, publishes a
// share of --fanout-publishes frames to each, sigil then the relay, each
// publish once every delivery of the one before arrived. Both are CPU per
// delivery; a round's ratio is sigil's ÷ the relay's, each first divided
// by the probe's raw verify during it (the machine's speed then).
func (b *bench) fanOut(ctx context.Context) (*fanResult, error) {
	n, k := b.f.fanout, b.f.fanPubs
	var got atomic.Int64
	subs, err := b.sessions(ctx, n, "fan-out subscribers")
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, s := range subs {
			s.ws.Close()
		}
	}()
	for _, s := range subs {
		fr, err := s.signer.Sign(&protocol.Envelope{Action: protocol.ActSub, Channel: benchLiveFan})
		if err != nil {
			return nil, err
		}
		if err := s.ws.WriteMessage(websocket.TextMessage, fr); err != nil {
			return nil, err
		}
		go func() {
			for {
				if _, _, err := s.ws.NextReader(); err != nil {
					return
				}
				got.Add(1)
			}
		}()
	}
	pub, err := b.session(ctx)
	if err != nil {
		return nil, err
	}
	defer pub.ws.Close()
	frames := make([][]byte, k)
	for i := range frames {
		if frames[i], err = pub.signer.Sign(&protocol.Envelope{Action: protocol.ActPub, Channel: benchLiveFan, Body: benchBody}); err != nil {
			return nil, err
		}
	}

	// The relay's side, with a deliver frame of the same size: a
	// deliver is the publish, its jwk and sub, in a signed envelope.
	var rgot atomic.Int64
	wsBase := "ws" + strings.TrimPrefix(b.relayURL, "http")
	var rsubs []*websocket.Conn
	defer func() {
		for _, c := range rsubs {
			c.Close()
		}
	}()
	for range n {
		c, _, err := websocket.DefaultDialer.DialContext(ctx, wsBase+"/sub", nil)
		if err != nil {
			return nil, err
		}
		rsubs = append(rsubs, c)
		go func() {
			for {
				if _, _, err := c.NextReader(); err != nil {
					return
				}
				rgot.Add(1)
			}
		}()
	}
	rpub, _, err := websocket.DefaultDialer.DialContext(ctx, wsBase+"/pub", nil)
	if err != nil {
		return nil, err
	}
	defer rpub.Close()
	deliver := bytes.Repeat([]byte("A"), len(frames[0])*4/3+330)
	// Let the join frames of the subscriptions pass, and the relay
	// register its /sub connections (on their own goroutines), then count.
	for last := int64(-1); last != got.Load(); {
		last = got.Load()
		time.Sleep(500 * time.Millisecond)
	}

	// side publishes frames to its server (pid), waiting for every
	// delivery of each before the next, and returns the server's CPU per
	// delivery and the probe's timings meanwhile.
	side := func(pid int, ws *websocket.Conn, frames [][]byte, got *atomic.Int64, what string) (float64, probeSample, error) {
		if err := b.probeStart(); err != nil {
			return 0, probeSample{}, err
		}
		c0, err := procCPU(pid)
		if err != nil {
			return 0, probeSample{}, err
		}
		base := got.Load()
		for i, fr := range frames {
			if err := ws.WriteMessage(websocket.TextMessage, fr); err != nil {
				return 0, probeSample{}, err
			}
			if err := waitCount(got, base+int64((i+1)*n), what); err != nil {
				return 0, probeSample{}, err
			}
		}
		c1, err := procCPU(pid)
		if err != nil {
			return 0, probeSample{}, err
		}
		p, err := b.probeStop()
		return float64((c1 - c0).Nanoseconds()) / float64(len(frames)*n), p, err
	}
	rounds := min(2*b.f.rounds, k)
	res := &fanResult{}
	for r := range rounds {
		part := frames[r*k/rounds : (r+1)*k/rounds]
		b.say("fan-out: round %d of %d, %d publishes to %d subscribers, then through the plain relay", r+1, rounds, len(part), n)
		sNs, sp, err := side(b.srvPID, pub.ws, part, &got, "fan-out deliveries")
		if err != nil {
			return nil, err
		}
		relayPart := make([][]byte, len(part))
		for i := range relayPart {
			relayPart[i] = deliver
		}
		rNs, rp, err := side(b.relayPID, rpub, relayPart, &rgot, "relay fan-out deliveries")
		if err != nil {
			return nil, err
		}
		res.sigilNs += sNs / float64(rounds)
		res.relayNs += rNs / float64(rounds)
		res.ratios = append(res.ratios, (sNs/sp.VerifyNs)/(rNs/rp.VerifyNs))
	}
	return res, nil
}

// calibrationOf is the request that times raw verify of frame, signed by
// s, and raw sign of a deliver of it.
func (b *bench) calibrationOf(s *benchSession, frame []byte) ([]byte, error) {
	i := bytes.LastIndexByte(frame, '.')
	sig, err := base64.RawURLEncoding.DecodeString(string(frame[i+1:]))
	if err != nil {
		return nil, err
	}
	return json.Marshal(calibration{Input: frame[:i], Sig: sig, Pub: s.pub, SignSize: deliverSignSize(frame), For: b.f.calibrate})
}

// deliverSignSize is the size of the signing input of a deliver of
// frame: the frame, the sender's jwk and the envelope, base64url-encoded.
func deliverSignSize(frame []byte) int { return (len(frame) + 330) * 4 / 3 }

// calibrate asks the baseline process to time raw verify and sign.
func (b *bench) calibrate(s *benchSession, frame []byte) (*calibration, error) {
	req, err := b.calibrationOf(s, frame)
	if err != nil {
		return nil, err
	}
	resp, err := http.Post(b.relayURL+"/calibrate", "application/json", bytes.NewReader(req))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var c calibration
	if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
		return nil, err
	}
	if c.VerifyNs <= 0 {
		return nil, errors.New("calibration: the sample frame does not verify")
	}
	return &c, nil
}
